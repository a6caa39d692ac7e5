"""The command line: ``python -m gilfree`` with ``demo``, ``version`` and ``--help``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gilfree
from gilfree.__main__ import main


def run_cli(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    """``python -W error -m gilfree ARGS`` in a child process, output captured."""
    return subprocess.run([sys.executable, "-W", "error", "-m", "gilfree", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(120)
def test_help_lists_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: gilfree" in proc.stdout
    assert "demo" in proc.stdout and "version" in proc.stdout


@pytest.mark.timeout(120)
def test_demo_help_lists_its_options() -> None:
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--workers" in proc.stdout and "--quick" in proc.stdout


@pytest.mark.timeout(120)
def test_version_prints_the_package_version() -> None:
    proc = run_cli("version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gilfree {gilfree.__version__}"


@pytest.mark.timeout(120)
def test_demo_quick_prints_the_table() -> None:
    proc = run_cli("demo", "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for header in ("workload", "items", "serial", "threads", "time", "speed-up", "items/s"):
        assert header in out, f"{header!r} missing from:\n{out}"
    for row in ("pure Python", "GIL-releasing: sha256", "GIL-releasing: zlib", "tiny tasks"):
        assert row in out, f"row {row!r} missing from:\n{out}"
    assert "speed-up = serial time / pool time" in out
    assert "WRONG RESULT" not in out


# main() itself, in this process: it returns exit codes instead of exiting.

@pytest.mark.timeout(120)
def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"gilfree {gilfree.__version__}"


@pytest.mark.timeout(120)
def test_main_dash_dash_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert gilfree.__version__ in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_main_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_main_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: gilfree" in capsys.readouterr().out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bad", [["demo", "--workers", "0"], ["demo", "--workers", "two"],
                                 ["no-such-command"]])
def test_main_rejects_bad_arguments(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(bad) == 2
    assert "error" in capsys.readouterr().err
