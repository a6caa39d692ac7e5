"""Progress bars (progress= on map, starmap, imap, imap_unordered).

Output is checked where users see it: a child program writes its bar to a
pseudo-terminal (in-place redraws with items/s and the time left) or to a
pipe (whole lines only: no carriage returns, no escape codes, a bounded
number of lines).  In-process tests check that the bar follows the results
and is closed however the call ends (results, an exception, Ctrl-C,
an abandoned iterator).
"""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import _thread

import pytest

import gilfree
import gfsupport

pytestmark = pytest.mark.timeout(60)

tqdm = pytest.importorskip("tqdm")

CHILD = textwrap.dedent(
    """
    import sys, time
    import gilfree

    def slow(x):
        time.sleep(0.004)
        return x

    if __name__ == "__main__":
        backend, method = sys.argv[1], sys.argv[2]
        with gilfree.Pool(2, backend) as pool:
            if method == "map":
                out = pool.map(slow, range(200), progress=True)
            else:
                out = list(getattr(pool, method)(slow, range(200), progress=True))
        assert sorted(out) == list(range(200)), out
        print("OK", flush=True)
    """
)


def _run_child(tmp_path, args, stderr):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONWARNINGS="error")
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=stderr, env=env)


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered"])
def test_bar_in_a_pipe_is_whole_lines(backend, method, tmp_path):
    proc = _run_child(tmp_path, [backend, method], subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "OK"
    text = err.decode()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # A short job: the first and the final line (at most one more per
    # LOG_INTERVAL seconds).
    assert 1 <= len(lines) <= 4, lines
    final = lines[-1]
    assert "100%" in final and "200/200" in final and "items/s" in final, final
    assert final.startswith("slow:")


def _read_pty(fd, proc, timeout=60.0):
    chunks = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            # Drain what is left.
            try:
                while select.select([fd], [], [], 0.05)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    chunks.append(data)
            except OSError:
                pass
            break
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("method", ["map", "imap_unordered"])
def test_bar_in_a_terminal_redraws_in_place(backend, method, tmp_path):
    master, slave = pty.openpty()
    try:
        proc = _run_child(tmp_path, [backend, method], slave)
        os.close(slave)
        slave = -1
        text = _read_pty(master, proc)
        proc.wait(timeout=30)
        out = proc.stdout.read().decode()
        proc.stdout.close()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0, text
    assert out.strip() == "OK"
    # tqdm redraws the line with carriage returns; the last state is 100%
    # with a rate and the elapsed<remaining times, and the bar ends its line.
    assert "\r" in text
    states = [s for s in text.replace("\n", "\r").split("\r") if s.strip()]
    assert len(states) >= 2, states
    final = states[-1]
    assert "100%" in final and "200/200" in final and "items/s" in final, final
    assert "00:0" in final and "<" in final, final
    assert text.rstrip(" ").endswith("\n"), repr(text[-80:])


def _open_bars():
    return len(tqdm.tqdm._instances)


def _file_option():
    return {"file": io.StringIO()}


def test_bar_follows_results_in_process(backend):
    seen = []

    class Spy(io.StringIO):
        def write(self, text):
            seen.append(text)
            return super().write(text)

    with gilfree.Pool(2, backend) as pool:
        out = pool.map(gfsupport.sleep_return, [0.002] * 100, progress={"file": Spy(), "mininterval": 0})
    assert out == [None] * 100
    text = "".join(seen)
    assert "100/100" in text
    # Intermediate states were reported while the map ran, not only at the end.
    counts = [line for line in text.splitlines() if "/100" in line]
    assert len(counts) >= 2
    assert _open_bars() == 0


def test_bar_closed_on_error(backend):
    opts = _file_option()
    with gilfree.Pool(2, backend) as pool:
        with pytest.raises(ValueError):
            pool.map(gfsupport.fail_on_five, range(20), progress=opts)
        it = pool.imap(gfsupport.fail_on_five, range(20), progress=_file_option())
        got = []
        with pytest.raises(ValueError):
            for x in it:
                got.append(x)
        assert got == [0, 1, 2, 3, 4]
        # imap may go on after a failed item; closing ends the bar.
        it.close()
    assert _open_bars() == 0


def test_bar_closed_when_iterator_is_abandoned(backend):
    with gilfree.Pool(2, backend) as pool:
        it = pool.imap(gfsupport.square, range(1000), progress=_file_option())
        assert next(it) == 0
        assert _open_bars() == 1
        del it
    assert _open_bars() == 0


def test_bar_closed_on_ctrl_c(backend, sigint_default):
    with gilfree.Pool(2, backend) as pool:
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.map(gfsupport.sleep_return, [0.05] * 200, chunksize=1, progress=_file_option())
        finally:
            timer.cancel()
        assert _open_bars() == 0
        pool.terminate()


def test_progress_options_and_gilfree_map():
    buf = io.StringIO()
    out = gilfree.map(gfsupport.square, range(10), workers=2, backend="threads",
                      progress={"file": buf, "desc": "squares"})
    assert out == [x * x for x in range(10)]
    assert buf.getvalue().splitlines()[-1].startswith("squares: 100%")
    with gilfree.Pool(2, "threads") as pool:
        with pytest.raises(TypeError, match="progress must be"):
            pool.map(abs, [1], progress="yes")
        assert pool.map(abs, [-1], progress=False) == [1]
        assert pool.map(abs, [-1], progress=None) == [1]


def test_progress_with_auto_backend_counts_probed_items():
    buf = io.StringIO()
    with gilfree.Pool(2) as pool:   # auto: the first items run under the probe
        out = pool.map(gfsupport.square, range(500), progress={"file": buf})
        lazy = list(pool.imap(gfsupport.square, range(50), progress={"file": io.StringIO()}))
    assert out == [x * x for x in range(500)]
    assert lazy == [x * x for x in range(50)]
    assert "500/500" in buf.getvalue().splitlines()[-1]


def test_progress_with_generator_input_has_no_total(backend):
    buf = io.StringIO()
    with gilfree.Pool(2, backend) as pool:
        out = pool.map(gfsupport.square, (x for x in range(30)), progress={"file": buf})
    assert out == [x * x for x in range(30)]
    assert "30items" in buf.getvalue().replace(" ", "")
