"""Drop-in replacements for other libraries' pool APIs, built on :class:`gilfree.Pool`.

* :mod:`gilfree.compat.mpire` -- ``WorkerPool``, MPIRE's pool: change
  ``from mpire import WorkerPool`` to
  ``from gilfree.compat.mpire import WorkerPool`` and the program runs on
  gilfree.

Each module is a thin layer: the work is dispatched by gilfree's own pool,
the layer only translates arguments, lifecycles and errors.
"""
