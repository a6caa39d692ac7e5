"""Task functions and deterministic input data for the benchmark harness.

Everything a worker calls is a module-level function taking one ``int``, so the same
workloads will run unchanged on a process backend later (module-level functions pickle;
the data is rebuilt lazily, and identically, in each process).  Nothing here times anything.

``run.py`` limits BLAS to one thread through the environment before this module is
imported; the assignments below repeat that for anyone importing this module directly.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
import zlib
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

try:
    import numpy
except ImportError:  # numpy rows are skipped
    numpy = None  # type: ignore[assignment]

# Sizes of the GIL-releasing workloads' inputs (the numbers named in the tables).
SHA_BYTES = 8 << 20  # sha256 input per task: hashlib releases the GIL above 2 KiB
ZLIB_BYTES = 4 << 20  # zlib.compress input per task
ZLIB_LEVEL = 6
MATMUL_N = 400  # float64 square matrices
_LIMITS: Any = None  # threadpoolctl limits object, held so they stay in force
_DISTINCT = 4  # distinct buffers/matrices cycled through (task i uses i % _DISTINCT)


# --- tiny tasks -------------------------------------------------------------------------

def inc(x: int) -> int:
    """The "many tiny tasks" function: as cheap as a Python call gets."""
    return x + 1


def noop(x: Any = None) -> Any:
    """The per-task overhead function: returns its argument."""
    return x


def sleep_task(_: Any = None) -> None:
    """A task that sleeps 10 ms (the Ctrl-C latency probe keeps workers busy with it)."""
    time.sleep(0.01)


def serial_inc(n: int) -> list[int]:
    """The serial baseline of workload (1): a plain list comprehension."""
    return [inc(x) for x in range(n)]


# --- deterministic data -------------------------------------------------------------------

@functools.cache
def sha_buffer(k: int) -> bytes:
    """``SHA_BYTES`` pseudo-random bytes, fixed by ``k``."""
    return random.Random(1000 + k).randbytes(SHA_BYTES)


@functools.cache
def text_buffer(k: int) -> bytes:
    """``ZLIB_BYTES`` of text made of random words: compresses to roughly 30 %.

    A 4,000-word vocabulary of 2-10 letter words drawn with a skewed (Zipf-like) weight,
    so deflate finds real matches and real Huffman work: neither trivial (repeated
    block) nor incompressible (random bytes).
    """
    rng = random.Random(2000 + k)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=ZLIB_BYTES // 4)
    text = " ".join(words).encode("ascii")
    while len(text) < ZLIB_BYTES:  # never taken with these sizes; keeps the length exact
        text += text
    return text[:ZLIB_BYTES]


@functools.cache
def matrix(k: int) -> Any:
    """A ``MATMUL_N`` x ``MATMUL_N`` float64 matrix, fixed by ``k``."""
    if numpy is None:
        raise RuntimeError("numpy is not installed")
    return numpy.random.default_rng(3000 + k).standard_normal((MATMUL_N, MATMUL_N))


def prepare(kind: str) -> None:
    """Build the inputs of workload ``kind`` before anything is timed."""
    for k in range(_DISTINCT):
        if kind == "sha256":
            sha_buffer(k)
        elif kind == "zlib":
            text_buffer(k % 2)  # two 4 MB texts are enough variety
        elif kind == "matmul":
            matrix(k)


# --- GIL-releasing tasks --------------------------------------------------------------------

def sha_task(i: int) -> bytes:
    """sha256 of an 8 MB buffer (the GIL is released while hashing)."""
    return hashlib.sha256(sha_buffer(i % _DISTINCT)).digest()


def zlib_task(i: int) -> int:
    """zlib.compress of a 4 MB text at level 6 (the GIL is released while deflating)."""
    return len(zlib.compress(text_buffer(i % 2), ZLIB_LEVEL))


def matmul_task(i: int) -> float:
    """One 400x400 float64 matrix product (BLAS releases the GIL)."""
    product = matrix(i % _DISTINCT) @ matrix((i + 1) % _DISTINCT)
    return float(product[0, 0])


def blas_info() -> str:
    """A short description of numpy's BLAS threading, for the report header."""
    if numpy is None:
        return "numpy not installed"
    text = f"numpy {numpy.__version__}, BLAS threads limited to 1 via env"
    try:
        import threadpoolctl
    except ImportError:
        return text + " (threadpoolctl not installed)"
    global _LIMITS
    _LIMITS = threadpoolctl.threadpool_limits(limits=1)  # kept in force for the whole run
    infos = threadpoolctl.threadpool_info()
    libs = ", ".join(f"{i.get('internal_api')}={i.get('num_threads')}" for i in infos)
    return text + f" and threadpoolctl ({libs or 'no BLAS found'})"
