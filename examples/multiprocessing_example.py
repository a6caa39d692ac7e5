"""A small word-statistics program written for ``multiprocessing.Pool``.

It runs on gilfree by changing only its import line::

    from multiprocessing import Pool            # the standard library
    from gilfree.compat.multiprocessing import Pool   # gilfree's worker processes

(tests/python/test_compat_multiprocessing.py runs it both ways and checks
that the output is the same.)
"""

import hashlib
import zlib
from multiprocessing import Pool

STOPWORDS = frozenset()  # set in each worker by the initializer

DOCUMENTS = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "to be or not to be that is the question",
    "all that glitters is not gold",
    "the early bird catches the worm but the second mouse gets the cheese",
    "an apple a day keeps the doctor away",
]


def init_worker(stopwords):
    global STOPWORDS
    STOPWORDS = frozenset(stopwords)


def count_words(text):
    """How many words of *text* are not stop words."""
    return sum(1 for word in text.split() if word not in STOPWORDS)


def fingerprint(text):
    """(short hash, compressed size) of a document."""
    data = text.encode()
    return hashlib.sha256(data).hexdigest()[:10], len(zlib.compress(data, 9))


def longest_word(text):
    return max(text.split(), key=lambda w: (len(w), w))


def repeat_score(word, times):
    return f"{word}x{times}={len(word) * times}"


def main():
    totals = []
    with Pool(processes=2, initializer=init_worker, initargs=(["the", "a", "an", "to", "of"],)) as pool:
        counts = pool.map(count_words, DOCUMENTS)
        print("words per document:", counts)

        # Completion order varies from run to run: sort for a stable output.
        prints = sorted(pool.imap_unordered(fingerprint, DOCUMENTS))
        for digest, size in prints:
            print(f"  {digest}  {size:3d} bytes compressed")

        pending = [pool.apply_async(longest_word, (doc,), callback=totals.append) for doc in DOCUMENTS]
        for result in pending:
            result.wait()
        print("longest words:", sorted(totals))

        scores = pool.starmap(repeat_score, [("fox", 2), ("journey", 3), ("question", 1)])
        print("scores:", scores)

        print("ordered lengths:", list(pool.imap(len, DOCUMENTS, chunksize=2)))
        print("total words:", sum(counts))


if __name__ == "__main__":
    main()
