from concurrent.futures import ProcessPoolExecutor as PoolExecutor

# A program written for concurrent.futures that runs on gilfree: the line
# above is the only change (gilfree's is `from gilfree import Executor as
# PoolExecutor`; tests/python/test_executor.py runs both and compares).
#
# It checks a batch of numbers for primality and factorises them:
#
# * submit + as_completed: one job per number, handled as they finish
#   (printed sorted, so the output does not depend on the order);
# * map with chunksize: factorisations in input order;
# * map with a timeout: a deliberately slow job, and the TimeoutError the
#   iterator raises when its result is late;
# * an exception raised by a job comes back from future.result().
#
# Run it with `python examples/futures_example.py`.

import concurrent.futures
import math
import time

NUMBERS = [112272535095293, 112582705942171, 115280095190773, 115797848077099,
           1099726899285419, 999_999_000_001, 2**31 - 1, 600851475143]


def is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for i in range(3, math.isqrt(n) + 1, 2):
        if n % i == 0:
            return False
    return True


def factorise(n):
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        factors.append(n)
    return factors


def slow_square(x, delay):
    time.sleep(delay)
    return x * x


def checked_sqrt(x):
    if x < 0:
        raise ValueError(f"cannot take the square root of {x}")
    return math.sqrt(x)


def main():
    with PoolExecutor(max_workers=2) as executor:
        # submit + as_completed
        futures = {executor.submit(is_prime, n): n for n in NUMBERS}
        verdicts = {}
        for future in concurrent.futures.as_completed(futures, timeout=60):
            verdicts[futures[future]] = future.result()
        for n in sorted(verdicts):
            print(f"{n} is {'prime' if verdicts[n] else 'composite'}")

        # map, several items per task, results in input order
        small = [n for n in NUMBERS if n < 10**13]
        for n, factors in zip(small, executor.map(factorise, small, chunksize=2)):
            print(f"{n} = {' * '.join(map(str, factors))}")

        # map with a timeout: the iterator raises TimeoutError when a
        # result is not there in time (counted from the map call)
        results = []
        try:
            for value in executor.map(slow_square, [1, 2, 3], [0.0, 0.0, 1.0], timeout=0.5):
                results.append(value)
        except concurrent.futures.TimeoutError:
            print(f"timed out after {len(results)} results: {results}")

        # an exception travels back through the future
        future = executor.submit(checked_sqrt, -4)
        try:
            future.result()
        except ValueError as exc:
            print(f"error: {exc}")
        print("sqrt(16) =", executor.submit(checked_sqrt, 16).result())


if __name__ == "__main__":
    main()
