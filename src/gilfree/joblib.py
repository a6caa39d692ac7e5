"""A joblib parallel backend on gilfree: ``joblib.Parallel`` -- and so
scikit-learn's ``n_jobs`` -- running on :class:`gilfree.Pool`.

Importing this module registers the backend under the name ``"gilfree"``:

>>> import joblib
>>> import gilfree.joblib  # registers "gilfree"
>>> with joblib.parallel_config(backend="gilfree", n_jobs=2):
...     joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(10))
[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]

``parallel_config(backend="gilfree")`` uses ``gilfree.Pool``'s default,
``backend="auto"`` (threads for functions that release the GIL, processes for
those that hold it, by measurement); pass an instance to choose:
``parallel_config(backend=gilfree.joblib.GilfreeBackend(backend="processes"))``.
Any other keyword of ``GilfreeBackend`` goes to ``gilfree.Pool``
(``start_method``, ``task_timeout``, ``retries``, ...).

joblib's protocol is honoured: tasks are joblib's batches, sized by joblib's
auto-batching (``batch_size="auto"``: the batch grows until one takes
``MIN_IDEAL_BATCH_DURATION``, kept lower than joblib's default because a
gilfree task costs microseconds to send); ``inner_max_num_threads`` becomes
gilfree's ``inner_threads`` (BLAS/OpenMP threads per worker);
``prefer="threads"`` or ``require="sharedmem"`` run on threads; results come
back through futures (``return_as="generator"`` and ``timeout`` work);
an error cancels the batches not started.  Nested ``Parallel`` calls inside a
task run sequentially (the pool's workers already fill the CPUs).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Tuple

try:
    from joblib.parallel import (
        AutoBatchingMixin,
        ParallelBackendBase,
        SequentialBackend,
        register_parallel_backend,
    )
except ImportError as exc:  # pragma: no cover - joblib is optional
    raise ImportError("gilfree.joblib needs joblib: pip install joblib") from exc

import gilfree
from gilfree._pool import AutoPool

__all__ = ["GilfreeBackend", "register"]

_POOL_OPTIONS = frozenset(inspect.signature(gilfree.Pool.__init__).parameters) - {"self", "workers", "backend"}


class GilfreeBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend running batches on a :class:`gilfree.Pool`.

    >>> import joblib, gilfree.joblib
    >>> with joblib.parallel_config(backend="gilfree", n_jobs=2):
    ...     joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4))
    [0, 1, 2, 3]

    An instance chooses gilfree's backend (and takes ``gilfree.Pool``'s
    other options):

    >>> threads = gilfree.joblib.GilfreeBackend(backend="threads")
    >>> with joblib.parallel_config(backend=threads, n_jobs=2):
    ...     joblib.Parallel()(joblib.delayed(len)(s) for s in ["a", "bb", "ccc"])
    [1, 2, 3]
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    # Sending a task costs microseconds (threads) to tens of microseconds
    # (processes): batches of ~20 ms already hide it.
    MIN_IDEAL_BATCH_DURATION = 0.02
    MAX_IDEAL_BATCH_DURATION = 1.0

    def __init__(self, backend: str = "auto", nesting_level: Optional[int] = None,
                 inner_max_num_threads: Optional[int] = None, **pool_options: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        unknown = sorted(set(pool_options) - _POOL_OPTIONS)
        if unknown:
            raise TypeError(f"GilfreeBackend(): unknown gilfree.Pool option(s): {', '.join(unknown)}")
        self.backend = backend
        self.pool_options = pool_options
        self._pool: Any = None

    @property
    def supports_sharedmem(self) -> bool:
        """Threads share memory; joblib asks before require="sharedmem".
        An auto backend then runs on threads (see configure), so it can."""
        return self.backend in ("threads", "auto")

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(gilfree.usable_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None, prefer: Optional[str] = None,
                  require: Optional[str] = None, **backend_kwargs: Any) -> int:
        n = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        backend = self.backend
        if backend == "auto" and (prefer == "threads" or require == "sharedmem"):
            backend = "threads"
        # joblib passes its memmapping options (max_nbytes, mmap_mode,
        # temp_folder) to every backend: gilfree sends large arrays through
        # shared memory itself, so only gilfree.Pool's own options are kept.
        options = {**{k: v for k, v in backend_kwargs.items() if k in _POOL_OPTIONS}, **self.pool_options}
        if self.inner_max_num_threads is not None:
            options["inner_threads"] = self.inner_max_num_threads
        if self._pool is not None:
            self.terminate()
        self._pool = gilfree.Pool(n, backend, **options)
        return n

    def submit(self, func: Any, callback: Any = None) -> Any:
        key = _batch_function(func)
        if key is not None and isinstance(self._pool, AutoPool):
            # Every batch is a new BatchedCalls object: measure and route by
            # the function it calls, so that one measurement decides for all
            # the batches (each batch would otherwise be probed on a thread).
            future = self._pool._submit_as(key, func, (), {})
        else:
            future = self._pool.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def terminate(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """An error happened: cancel what has not started; with ensure_ready,
        start afresh for the next batches of the same call."""
        self.terminate()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel,
                           **self.parallel._backend_kwargs)

    def stop_call(self) -> None:
        """A Parallel call ended.  The pool is kept for the next call of the
        same Parallel object (joblib calls terminate() when it is done)."""

    def get_nested_backend(self) -> Tuple[Any, Optional[int]]:
        nesting_level = (self.nesting_level or 0) + 1
        return SequentialBackend(nesting_level=nesting_level), None


def _batch_function(batch: Any) -> Any:
    """The function a joblib batch calls, if all its calls call one."""
    items = getattr(batch, "items", None)
    if not isinstance(items, list) or not items:
        return None
    try:
        fns = {id(item[0]): item[0] for item in items}
    except (TypeError, IndexError):
        return None
    return next(iter(fns.values())) if len(fns) == 1 else None


def register() -> None:
    """Register the backend as ``"gilfree"`` (done on import).

    >>> import joblib, gilfree.joblib
    >>> gilfree.joblib.register()   # again: harmless
    >>> "gilfree" in joblib.parallel.BACKENDS
    True
    """
    register_parallel_backend("gilfree", GilfreeBackend)


register()
