"""The examples in gilfree's docstrings (Python and C) run and are right."""

from __future__ import annotations

import doctest
import inspect

import pytest

import gilfree
from gilfree import _core, _pool


def _docstrings():
    """(name, docstring) for every public object that has examples."""
    seen = []
    objects = [("gilfree", gilfree), ("gilfree._pool", _pool)]
    for name in gilfree.__all__:
        objects.append((f"gilfree.{name}", getattr(gilfree, name)))
    for cls_name in ("Pool", "AsyncResult", "MapIterator"):
        cls = getattr(_core, cls_name)
        for attr, value in vars(cls).items():
            if not attr.startswith("_"):
                objects.append((f"gilfree._core.{cls_name}.{attr}", value))
    objects.append(("gilfree.Pool", gilfree.Pool))
    for name, obj in objects:
        doc = inspect.getdoc(obj) if not isinstance(obj, str) else None
        if doc and ">>>" in doc:
            seen.append((name, doc))
    return seen


DOCS = _docstrings()


def test_there_are_examples():
    # map, starmap, imap, imap_unordered, apply, apply_async, submit, Pool,
    # AsyncResult, gilfree.map at least.
    assert len(DOCS) >= 10, [name for name, _ in DOCS]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,doc", DOCS, ids=[name for name, _ in DOCS])
def test_docstring_examples(name, doc):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(doc, {"gilfree": gilfree}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"


def _readme_block(marker: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = text.split("```python\n")[1:]
    for block in blocks:
        code = block.split("```", 1)[0]
        if marker in code:
            return code
    raise AssertionError(f"no README example with {marker!r}")


@pytest.mark.timeout(120)
def test_readme_worker_lifecycle_example(tmp_path):
    """The README's lifecycle/progress/insights example runs as written."""
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    script = tmp_path / "example.py"
    script.write_text(_readme_block("load_model"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    assert "gilfree insights: processes pool" in proc.stdout
    assert "'done'" in proc.stdout
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert "100/100" in proc.stderr   # the progress bar's last line
