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
