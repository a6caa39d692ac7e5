"""Drop-in replacements for other libraries' pool APIs, built on :class:`gilfree.Pool`.

* :mod:`gilfree.compat.mpire` -- ``WorkerPool``, MPIRE's pool: change
  ``from mpire import WorkerPool`` to
  ``from gilfree.compat.mpire import WorkerPool`` and the program runs on
  gilfree.
* :mod:`gilfree.compat.multiprocessing` -- ``Pool``, the standard library's
  :class:`multiprocessing.pool.Pool`: change ``from multiprocessing import
  Pool`` to ``from gilfree.compat.multiprocessing import Pool``.

Each module is a thin layer: the work is dispatched by gilfree's own pool,
the layer only translates arguments, lifecycles and errors.
"""
