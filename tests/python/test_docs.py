"""The examples in gilfree's docstrings (Python and C) run and are right, and
every public name has at least one."""

from __future__ import annotations

import doctest
import inspect
import types
from typing import Any, Dict, List, NamedTuple

import pytest

import gilfree
import gilfree.compat.mpire
import gilfree.compat.multiprocessing
from gilfree import _pool

try:
    import gilfree.joblib as gilfree_joblib
except ImportError:  # joblib is optional
    gilfree_joblib = None  # type: ignore[assignment]


class Doc(NamedTuple):
    name: str
    obj: Any
    globs: Dict[str, Any]   # what the examples run with
    required: bool          # must have an example (or be in NO_EXAMPLE)


def _has_example(obj: Any) -> bool:
    doc = inspect.getdoc(obj)
    return bool(doc) and ">>>" in doc


def _is_method(value: Any) -> bool:
    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
                              staticmethod, classmethod))


_PROPERTIES = (property, types.GetSetDescriptorType, types.MemberDescriptorType)


def _members(cls: type) -> List[tuple]:
    """(name, value, is_method) for the public attributes of ``cls``: its own
    and those it inherits from gilfree classes (not from the standard
    library's or joblib's, whose documentation is theirs)."""
    found: Dict[str, Any] = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith("gilfree"):
            continue
        for attr, value in vars(klass).items():
            if not attr.startswith("_") and attr not in found:
                found[attr] = value
    # Class-level data (a dataclass field's default, a constant) would give
    # its type's docstring: only methods and properties have their own.
    return [(attr, getattr(cls, attr), _is_method(value)) for attr, value in found.items()
            if _is_method(value) or isinstance(value, _PROPERTIES)]


def _walk(prefix: str, names: List[str], globs: Dict[str, Any], namespace: Any, required: bool) -> List[Doc]:
    """The docstrings of ``names`` in ``namespace``, and of their classes' members."""
    out = []
    for name in names:
        obj = getattr(namespace, name)
        if inspect.isclass(obj):
            out.append(Doc(f"{prefix}.{name}", obj, globs, required))
            for attr, value, is_method in _members(obj):
                out.append(Doc(f"{prefix}.{name}.{attr}", value, globs, required and is_method))
        elif callable(obj):
            out.append(Doc(f"{prefix}.{name}", obj, globs, required))
        # Data (gilfree.__version__, START_METHODS, ...) has no docstring of its own.
    return out


def _module(module: Any, required: bool) -> List[Doc]:
    """A module's own docstring and its public names (``__all__``), run with
    the module's globals as ``doctest.testmod`` does."""
    globs = dict(vars(module))
    docs = [Doc(module.__name__, module, globs, required)]
    return docs + _walk(module.__name__, list(module.__all__), globs, module, required)


def _all_docs() -> List[Doc]:
    # gilfree's own names run with just ``gilfree`` defined (their examples
    # import what they use; the module globals of gilfree and gilfree._pool
    # would shadow the builtin ``map``).
    plain = {"gilfree": gilfree}
    names = [n for n in gilfree.__all__ if n != "__version__"]
    docs = [Doc("gilfree", gilfree, plain, False), Doc("gilfree._pool", _pool, plain, False)]
    docs += _walk("gilfree", names, plain, gilfree, True)
    # What ``gilfree.Pool()`` returns with backend="auto" (not a public name).
    docs += _walk("gilfree._pool", ["AutoPool"], plain, _pool, False)
    docs += _module(gilfree.compat.multiprocessing, True)
    docs += _module(gilfree.compat.mpire, True)
    if gilfree_joblib is not None:
        docs += _module(gilfree_joblib, True)
    return docs


ALL_DOCS = _all_docs()

# Public names that have no example, and why.  test_every_public_name_has_an_example
# fails for any other name without one, and for an entry here that is stale.
NO_EXAMPLE: Dict[str, str] = {
    # -- Not sensible.
    "gilfree.PoolTerminated": "callers never see it (a C exception, module.c): a cancelled call "
                              "raises concurrent.futures.CancelledError chained to it",
    "gilfree.compat.multiprocessing.TimeoutError": "the standard library's multiprocessing.TimeoutError, "
                                                   "re-exported; its docstring is not gilfree's",
}
# joblib calls these (its ParallelBackendBase protocol), never user code; the
# examples of GilfreeBackend and of the module run them through joblib.Parallel.
for _method in ("abort_everything", "configure", "effective_n_jobs", "get_nested_backend",
                "retrieve_result_callback", "stop_call", "submit", "terminate"):
    NO_EXAMPLE[f"gilfree.joblib.GilfreeBackend.{_method}"] = "called by joblib.Parallel, not by user code"


def _docstrings():
    """(name, docstring) for every docstring with examples, each text once."""
    seen = set()
    out = []
    for doc in ALL_DOCS:
        text = inspect.getdoc(doc.obj)
        if text and ">>>" in text and text not in seen:
            seen.add(text)
            out.append((doc.name, text, doc.globs))
    return out


DOCS = _docstrings()


def test_there_are_examples():
    # map, starmap, imap, imap_unordered, apply, apply_async, submit, Pool,
    # AsyncResult, gilfree.map at least.
    assert len(DOCS) >= 10, [name for name, _, _ in DOCS]


def test_every_public_name_has_an_example():
    """Every public class and function, and every public method of those
    classes, shows at least one ``>>>`` example (or is in NO_EXAMPLE, with
    the reason)."""
    required = {doc.name: doc.obj for doc in ALL_DOCS if doc.required}
    missing = sorted(name for name, obj in required.items() if name not in NO_EXAMPLE and not _has_example(obj))
    assert not missing, f"public names without a >>> example: {missing}"
    # Keep the allow-list honest: no entry for a name that is gone or has an example now.
    stale = sorted(
        name for name in NO_EXAMPLE
        if (name not in required and not (gilfree_joblib is None and name.startswith("gilfree.joblib.")))
        or (name in required and _has_example(required[name]))
    )
    assert not stale, f"NO_EXAMPLE entries to remove: {stale}"


def _run_examples(name: str, doc: str, globs: Dict[str, Any]) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(doc, dict(globs), name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"


# Examples that draw with matplotlib (Insights.plot) run apart: they need it
# installed, and warmed up before the leak check looks.
PLOTTING = [d for d in DOCS if ".plot(" in d[1]]
OTHERS = [d for d in DOCS if ".plot(" not in d[1]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,doc,globs", OTHERS, ids=[name for name, _, _ in OTHERS])
def test_docstring_examples(name, doc, globs):
    _run_examples(name, doc, globs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,doc,globs", PLOTTING, ids=[name for name, _, _ in PLOTTING])
def test_docstring_examples_that_plot(name, doc, globs, warm_matplotlib):
    _run_examples(name, doc, globs)


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
