"""The joblib backend: joblib.Parallel (and scikit-learn's n_jobs) on
gilfree, through joblib's public API only."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

joblib = pytest.importorskip("joblib")

import gilfree  # noqa: E402
import gilfree.joblib  # noqa: E402,F401 - registers "gilfree"
import joblibsupport as js  # noqa: E402

pytestmark = pytest.mark.timeout(60)

from joblib import Parallel, delayed, parallel_config  # noqa: E402


@pytest.fixture(params=["auto", "threads", "processes"])
def gf_backend(request):
    return gilfree.joblib.GilfreeBackend(backend=request.param)


def test_results_in_order(gf_backend):
    with parallel_config(backend=gf_backend, n_jobs=2):
        assert Parallel()(delayed(js.square)(i) for i in range(200)) == [i * i for i in range(200)]


def test_registered_by_name_and_n_jobs_minus_one():
    with parallel_config(backend="gilfree", n_jobs=-1):
        p = Parallel()
        assert p(delayed(js.square)(i) for i in range(10)) == [i * i for i in range(10)]
    assert GilfreeBackendSingleton().effective_n_jobs(-1) == gilfree.usable_cpus()
    with pytest.raises(ValueError):
        GilfreeBackendSingleton().effective_n_jobs(0)


def GilfreeBackendSingleton():
    return gilfree.joblib.GilfreeBackend()


def test_errors_propagate_with_their_type(gf_backend):
    with parallel_config(backend=gf_backend, n_jobs=2):
        with pytest.raises(ValueError, match="seven is not welcome"):
            Parallel()(delayed(js.fail_on_seven)(i) for i in range(50))
        # The backend is ready again for the next call.
        assert Parallel()(delayed(js.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_generators_and_timeout():
    with parallel_config(backend="gilfree", n_jobs=2):
        gen = Parallel(return_as="generator")(delayed(js.square)(i) for i in range(20))
        assert list(gen) == [i * i for i in range(20)]
        unordered = Parallel(return_as="generator_unordered")(delayed(js.square)(i) for i in range(20))
        assert sorted(unordered) == [i * i for i in range(20)]
        start = time.monotonic()
        # joblib raises multiprocessing's TimeoutError whatever the backend.
        with pytest.raises((TimeoutError, multiprocessing.TimeoutError)):
            Parallel(timeout=0.2)(delayed(js.sleep_then)(i, 1.0) for i in range(4))
        assert time.monotonic() - start < 5


def test_auto_batching_grows_batches():
    with parallel_config(backend=gilfree.joblib.GilfreeBackend(backend="threads"), n_jobs=2):
        p = Parallel(batch_size="auto")
        assert p(delayed(js.square)(i) for i in range(20000)) == [i * i for i in range(20000)]
        # joblib's own hooks sized the batches from their measured durations.
        assert p._backend._effective_batch_size > 1


def test_processes_and_threads_really_are():
    with parallel_config(backend=gilfree.joblib.GilfreeBackend(backend="processes"), n_jobs=2):
        pids = set(Parallel()(delayed(js.pid)(i) for i in range(20)))
    assert os.getpid() not in pids and pids
    with parallel_config(backend="gilfree", n_jobs=2, prefer="threads"):
        assert set(Parallel()(delayed(js.pid)(i) for i in range(20))) == {os.getpid()}


def test_require_sharedmem_runs_on_threads():
    import threading

    seen = []

    def note(i):
        # The OS thread's name (gilfree's threads are native: Python
        # calls them Dummy-N).
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            seen.append((i, f.read().strip()))

    with parallel_config(backend="gilfree", n_jobs=2, require="sharedmem"):
        p = Parallel()
        p(delayed(note)(i) for i in range(10))
        # gilfree's own worker threads, not joblib's threading fallback.
        assert isinstance(p._backend, gilfree.joblib.GilfreeBackend)
    assert sorted(i for i, _ in seen) == list(range(10))
    assert all(name.startswith("gilfree") for _, name in seen), seen


def test_inner_max_num_threads_limits_blas():
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    with parallel_config(backend=gilfree.joblib.GilfreeBackend(backend="processes"), n_jobs=2,
                         inner_max_num_threads=1):
        limits = Parallel()(delayed(js.blas_threads)(i) for i in range(2))
    assert all(lim in ([], [1]) for lim in limits), limits


def test_nested_parallel_runs_sequentially_inside():
    with parallel_config(backend=gilfree.joblib.GilfreeBackend(backend="processes"), n_jobs=2):
        assert Parallel()(delayed(js.nested_sum)(n) for n in (3, 4)) == [5, 14]


def test_unknown_pool_option_is_refused():
    with pytest.raises(TypeError, match="unknown gilfree.Pool option"):
        gilfree.joblib.GilfreeBackend(bogus=1)


def test_scikit_learn_cross_val_score():
    """Optional: a real estimator with n_jobs=2 on gilfree (skipped without scikit-learn)."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = load_iris(return_X_y=True)
    with parallel_config(backend="gilfree"):
        scores = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4, n_jobs=2)
    reference = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4, n_jobs=1)
    assert list(scores) == pytest.approx(list(reference))


# --------------------------------------------------------------------------
# A real joblib program, unchanged but for its configuration block

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "joblib_example.py"


def _run_example(source: str, tmp_path: Path) -> str:
    script = tmp_path / "joblib_example.py"
    script.write_text(source)
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(root / "build" / "devpkg"), *sys.path] if p)
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(240)
def test_example_program_prints_the_same_as_with_loky(tmp_path):
    pytest.importorskip("numpy")
    source = EXAMPLE.read_text()
    loky_config = 'BACKEND = "loky"\n'
    assert source.count(loky_config) == 1
    gilfree_source = source.replace(loky_config, 'import gilfree.joblib  # noqa: E402,F401\nBACKEND = "gilfree"\n')
    expected = _run_example(source, tmp_path)
    assert "primes below 20000: 2262" in expected
    assert "caught: cannot take the square root of -1" in expected
    assert _run_example(gilfree_source, tmp_path) == expected
