from gilfree.compat.mpire import WorkerPool

# An MPIRE program that runs on gilfree: the line above is the only change
# (MPIRE's is `from mpire import WorkerPool`).  It scores short texts with a
# per-worker "model":
#
# * shared_objects: the model's weights, sent to every worker once;
# * worker_init: each worker "loads" its model into its worker state once;
# * pass_worker_id: every function gets the worker id first;
# * worker_exit: each worker reports how many texts it scored
#   (get_exit_results);
# * map with a progress bar (tuples are unpacked into positional arguments),
#   imap_unordered over a generator of dicts (keyword arguments, with
#   iterable_len for the bar's total), and apply_async with a callback.
#
# Run it with `python examples/mpire_example.py`; the results it prints do
# not depend on which worker ran what (the progress bars go to stderr).

import time

N_JOBS = 2
WORDS = ["fast", "slow", "gil", "free", "pool", "worker", "python", "core"]


def load_model(worker_id, shared, state):
    """worker_init: build this worker's model (pretend it is expensive)."""
    time.sleep(0.05)
    state["model"] = {"weights": dict(shared["weights"]), "bias": shared["bias"]}
    state["scored"] = 0


def score(worker_id, shared, state, text, boost=1.0):
    """The task: score one text with this worker's model."""
    model = state["model"]
    state["scored"] += 1
    total = sum(model["weights"].get(word, 0.0) for word in text.split()) + model["bias"]
    return round(total * boost, 3)


def report(worker_id, shared, state):
    """worker_exit: (worker id, texts scored by this worker)."""
    return (worker_id, state["scored"])


def make_texts(n):
    """n deterministic three-word texts."""
    return [" ".join(WORDS[(i * k + k) % len(WORDS)] for k in (1, 3, 5)) for i in range(n)]


def summarize_exits(exit_results):
    ids_ok = all(0 <= worker_id < N_JOBS for worker_id, _ in exit_results)
    return f"{sum(count for _, count in exit_results)} texts scored, worker ids valid: {ids_ok}"


if __name__ == "__main__":
    shared = {"weights": {word: round(0.25 * (i + 1), 2) for i, word in enumerate(WORDS)}, "bias": 0.5}
    texts = make_texts(200)

    with WorkerPool(n_jobs=N_JOBS, shared_objects=shared, pass_worker_id=True, use_worker_state=True) as pool:
        # map: each tuple is unpacked into score(..., text, boost).
        scores = pool.map(score, [(text, 2.0) for text in texts], worker_init=load_model,
                          worker_exit=report, progress_bar=True)
        print(f"map: {len(scores)} scores, total {round(sum(scores), 3)}, first {scores[:3]}")
        print(f"map: {summarize_exits(pool.get_exit_results())}")

        # imap_unordered: each dict is passed as keyword arguments; a
        # generator has no len(), so iterable_len tells the progress bar.
        chosen = [text for text in texts if "gil" in text.split()]
        jobs = ({"text": text, "boost": 0.5} for text in chosen)
        best = sorted(pool.imap_unordered(score, jobs, iterable_len=len(chosen), worker_init=load_model,
                                          worker_exit=report, progress_bar=True), reverse=True)
        print(f"imap_unordered: {len(best)} texts mention 'gil', best {best[:3]}")
        print(f"imap_unordered: {summarize_exits(pool.get_exit_results())}")

        # apply_async: single tasks, with a callback run as each finishes.
        done = []
        pending = [pool.apply_async(score, (text,), callback=done.append, worker_init=load_model,
                                    worker_exit=report) for text in texts[:10]]
        values = [result.get() for result in pending]
        pool.stop_and_join()  # the workers end: their worker_exit results come in
        print(f"apply_async: {values}")
        print(f"apply_async: callbacks saw the same values: {sorted(done) == sorted(values)}")
        print(f"apply_async: {summarize_exits(pool.get_exit_results())}")
