"""Task functions for the joblib backend tests (importable by workers)."""

from __future__ import annotations

import os
import time


def square(x):
    return x * x


def pid(_x):
    return os.getpid()


def fail_on_seven(x):
    if x == 7:
        raise ValueError("seven is not welcome")
    return x


def sleep_then(x, delay):
    time.sleep(delay)
    return x


def blas_threads(_x):
    """The thread limit the BLAS libraries loaded here run with."""
    import numpy  # noqa: F401 - loads the BLAS library
    from threadpoolctl import threadpool_info

    return sorted({info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"})


def nested_sum(n):
    from joblib import Parallel, delayed

    return sum(Parallel(n_jobs=2)(delayed(square)(i) for i in range(n)))
