"""A small data-analysis program written for joblib.

It runs on gilfree by changing only its configuration block::

    BACKEND = "loky"                 # joblib's default process backend

    import gilfree.joblib            # registers joblib backend "gilfree"
    BACKEND = "gilfree"              # threads or processes, chosen by measurement

(tests/python/test_joblib.py runs it both ways and checks that the output is
the same.)  Everything else is plain joblib: ``Parallel``/``delayed``,
auto-batching of many small calls, generator output, keyword arguments,
exceptions raised in workers, and numpy arrays going to and from workers.
"""

import hashlib
import math
import zlib

import numpy as np
from joblib import Parallel, delayed, parallel_config

# --- configuration: the only part that changes ------------------------------
BACKEND = "loky"
# -----------------------------------------------------------------------------


def is_prime(n):
    """Trial division: many tiny calls, which joblib batches automatically."""
    if n < 2:
        return False
    for d in range(2, math.isqrt(n) + 1):
        if n % d == 0:
            return False
    return True


def column_stats(matrix, column):
    """Mean and standard deviation of one column (an array goes to a worker)."""
    values = matrix[:, column]
    return round(float(values.mean()), 6), round(float(values.std()), 6)


def smooth(signal, width=5):
    """A moving average (an array comes back from a worker)."""
    kernel = np.ones(width) / width
    return np.convolve(signal, kernel, mode="valid")


def digest(block_id, size):
    """Hash and compress a deterministic block of bytes (releases the GIL)."""
    data = bytes((block_id * 31 + i) % 251 for i in range(size))
    return block_id, hashlib.sha256(data).hexdigest()[:12], len(zlib.compress(data, 6))


def checked_sqrt(x):
    if x < 0:
        raise ValueError(f"cannot take the square root of {x}")
    return math.sqrt(x)


def main():
    rng = np.random.default_rng(2024)
    matrix = rng.normal(size=(2000, 6))
    signals = [rng.normal(size=5000) for _ in range(4)]

    with parallel_config(backend=BACKEND, n_jobs=2):
        primes = Parallel()(delayed(is_prime)(n) for n in range(20000))
        print("primes below 20000:", sum(primes))

        stats = Parallel()(delayed(column_stats)(matrix, c) for c in range(matrix.shape[1]))
        for column, (mean, std) in enumerate(stats):
            print(f"  column {column}: mean {mean:+.4f}  std {std:.4f}")

        smoothed = Parallel()(delayed(smooth)(s, width=25) for s in signals)
        print("smoothed lengths:", [len(s) for s in smoothed])
        print("smoothed checksums:", [round(float(s.sum()), 6) for s in smoothed])

        # Results as they are produced, in input order.
        blocks = Parallel(return_as="generator")(delayed(digest)(b, 100_000) for b in range(6))
        for block_id, hex_digest, compressed in blocks:
            print(f"  block {block_id}: {hex_digest}  {compressed} bytes compressed")

        # An exception in a worker reaches the caller with its type.
        try:
            Parallel()(delayed(checked_sqrt)(x) for x in [4, 9, -1, 16])
        except ValueError as exc:
            print("caught:", exc)


if __name__ == "__main__":
    main()
