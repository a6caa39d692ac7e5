"""Source lint for the C code (the idea of msgspec's tests/unit/test_cpylint.py).

* The extension (src/gilfree/_ext/*.c, *.h) uses strong-reference APIs: the
  borrowed-reference calls in BANNED are refused (their *Ref replacements,
  e.g. PyList_GetItemRef, are fine; pythoncapi_compat.h backports them).  A
  line of our own backport shim that has to call the old API (for Python <
  3.13) carries the comment `/* cpylint: backport */` and is exempt.
* The core (src/core/) and the public headers (include/) never include or use
  Python.h: the core is pure C11.
* Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS pair up in every function
  (and in every file, counting macro definitions).

Comments and string literals are blanked before scanning (line numbers kept),
so documentation may name the banned calls.  Runs from a source checkout
only; from an sdist without src/ it is skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
EXT_DIR = ROOT / "src" / "gilfree" / "_ext"
CORE_DIR = ROOT / "src" / "core"
INCLUDE_DIR = ROOT / "include"

# Vendored third-party headers implement the backports themselves.
VENDORED = {"pythoncapi_compat.h"}

BANNED = (
    "PyList_GetItem",
    "PyDict_GetItem",
    "PyDict_GetItemString",
    "PyDict_GetItemWithError",
    "PyWeakref_GetObject",
    "PyWeakref_GET_OBJECT",
    "PyImport_AddModule",
)
# Word boundary before, "(" after: PyList_GetItemRef( and PyImport_AddModuleRef(
# do not match.  Longest names first so the alternation reports them exactly.
BANNED_RE = re.compile(
    r"(?<![A-Za-z0-9_])("
    + "|".join(sorted(map(re.escape, BANNED), key=len, reverse=True))
    + r")\s*\("
)

# A version shim that must call the borrowed API on old Pythons (to build the
# strong-reference backport) marks that line with a comment: /* cpylint: backport */
ALLOW_MARKER_RE = re.compile(r"/[*/]\s*cpylint:\s*backport\b")

PYTHON_IN_CORE_RE = re.compile(
    r"Python\.h|structmember\.h|pythoncapi_compat\.h|pyconfig\.h"
    r"|(?<![A-Za-z0-9_])(PyObject|PyThreadState|PyGILState_\w+|Py_INCREF|Py_DECREF"
    r"|Py_BEGIN_ALLOW_THREADS|Py_END_ALLOW_THREADS)(?![A-Za-z0-9_])"
)

ALLOW_RE = re.compile(r"(?<![A-Za-z0-9_])Py_(BEGIN|END)_ALLOW_THREADS(?![A-Za-z0-9_])")


def strip_c(text: str, *, keep_strings: bool = False) -> str:
    """Blank out comments (and string/char literals unless keep_strings),
    keeping every newline so that line numbers stay right."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j == -1 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            j = n if j == -1 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j, n)
            closed = j < n and text[j] == c
            end = j + 1 if closed else j  # an unterminated literal stops before the newline
            if keep_strings:
                out.append(text[i:end])
            else:
                out.append(c + re.sub(r"[^\n]", " ", text[i + 1 : j]) + (c if closed else ""))
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def find_banned(text: str) -> list[tuple[int, str]]:
    code = strip_c(text)
    raw_lines = text.split("\n")
    hits = []
    for m in BANNED_RE.finditer(code):
        lineno = line_of(code, m.start())
        if ALLOW_MARKER_RE.search(raw_lines[lineno - 1]):
            continue  # a reviewed backport (e.g. PyDict_GetItemRef for < 3.13)
        hits.append((lineno, m.group(1)))
    return hits


def find_python_in_core(text: str) -> list[tuple[int, str]]:
    code = strip_c(text, keep_strings=True)  # keep "Python.h" in #include "..."
    return [(line_of(code, m.start()), m.group(0)) for m in PYTHON_IN_CORE_RE.finditer(code)]


def allow_threads_problems(text: str) -> list[tuple[int, str]]:
    """Unbalanced Py_BEGIN/END_ALLOW_THREADS: per top-level brace block
    (function body) and per file.  Preprocessor lines count for the file only."""
    code = strip_c(text)
    problems = []
    file_balance = 0
    depth = 0
    block_start = 0
    block_name = "?"
    balance = 0
    went_negative = False
    last_ident = "?"
    in_directive = False
    for lineno, line in enumerate(code.split("\n"), 1):
        directive = in_directive or line.lstrip().startswith("#")
        in_directive = directive and line.rstrip().endswith("\\")
        for m in ALLOW_RE.finditer(line):
            file_balance += 1 if m.group(1) == "BEGIN" else -1
        if directive:
            continue
        for tok in re.finditer(r"[A-Za-z_]\w*(?=\s*\()|[{}]|Py_(?:BEGIN|END)_ALLOW_THREADS", line):
            t = tok.group(0)
            if t == "{":
                if depth == 0:
                    block_start, block_name, balance, went_negative = lineno, last_ident, 0, False
                depth += 1
            elif t == "}":
                depth -= 1
                if depth == 0:
                    if balance != 0 or went_negative:
                        problems.append(
                            (block_start, f"{block_name}(): Py_BEGIN_ALLOW_THREADS/Py_END_ALLOW_THREADS "
                             f"unbalanced (BEGIN - END = {balance})")
                        )
                elif depth < 0:
                    problems.append((lineno, "unmatched '}'"))
                    depth = 0
            elif t == "Py_BEGIN_ALLOW_THREADS":
                balance += 1
            elif t == "Py_END_ALLOW_THREADS":
                balance -= 1
                went_negative = went_negative or balance < 0
            elif depth == 0:
                last_ident = t
    if file_balance != 0:
        problems.append((0, f"file: BEGIN - END = {file_balance}"))
    return problems


def c_files(*dirs: Path) -> list[Path]:
    files = []
    for d in dirs:
        if d.is_dir():
            files.extend(p for p in sorted(d.rglob("*")) if p.suffix in (".c", ".h") and p.is_file())
    return files


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


needs_source = pytest.mark.skipif(
    not (ROOT / "src").is_dir(),
    reason=f"no source tree at {ROOT / 'src'} (running from an sdist or an installed copy)",
)


def _ext_files():
    files = [p for p in c_files(EXT_DIR) if p.name not in VENDORED]
    if not files:
        pytest.skip(f"no extension sources in {EXT_DIR}")
    return files


# --------------------------------------------------------------------------
# The lint on our sources


@needs_source
def test_no_borrowed_reference_calls_in_extension():
    hits = []
    for path in _ext_files():
        for lineno, name in find_banned(path.read_text(encoding="utf-8")):
            hits.append(f"{_rel(path)}:{lineno}: {name}() returns a borrowed reference; use the *Ref variant")
    assert not hits, "\n" + "\n".join(hits)


@needs_source
def test_core_and_public_headers_never_use_python():
    files = c_files(CORE_DIR, INCLUDE_DIR)
    if not files:
        pytest.skip("no core sources or headers")
    hits = []
    for path in files:
        for lineno, what in find_python_in_core(path.read_text(encoding="utf-8")):
            hits.append(f"{_rel(path)}:{lineno}: {what} (the core must not depend on Python)")
    assert not hits, "\n" + "\n".join(hits)


@needs_source
def test_allow_threads_balanced():
    hits = []
    for path in _ext_files():
        for lineno, what in allow_threads_problems(path.read_text(encoding="utf-8")):
            hits.append(f"{_rel(path)}:{lineno}: {what}")
    assert not hits, "\n" + "\n".join(hits)


# --------------------------------------------------------------------------
# The lint's own tests (need no source tree)


def test_lint_flags_banned_calls():
    src = "x = PyList_GetItem(l, 0);\ny = PyDict_GetItemString (d, \"k\");\nz = PyImport_AddModule(n);\n"
    assert find_banned(src) == [(1, "PyList_GetItem"), (2, "PyDict_GetItemString"), (3, "PyImport_AddModule")]


def test_lint_backport_marker():
    src = (
        "v = PyDict_GetItemWithError(d, k);  /* cpylint: backport */\n"
        "w = PyDict_GetItemWithError(d, k);  /* not a marker */\n"
    )
    assert find_banned(src) == [(2, "PyDict_GetItemWithError")]


def test_lint_allows_strong_reference_variants_and_comments():
    src = (
        "PyList_GetItemRef(l, 0); PyDict_GetItemRef(d, k, &v);\n"
        "PyDict_GetItemStringRef(d, \"k\", &v); PyImport_AddModuleRef(n);\n"
        "PyWeakref_GetRef(w, &o); MyPyList_GetItem(l);\n"
        "/* PyDict_GetItem(d, k) is banned */ // PyList_GetItem(l, 0)\n"
        "s = \"PyDict_GetItem(\";\n"
    )
    assert find_banned(src) == []


def test_lint_python_in_core():
    assert find_python_in_core("/* never includes Python.h */\nint x;\n") == []
    assert find_python_in_core('#include "Python.h"\n')[0][0] == 1
    assert find_python_in_core("int f(void);\n#include <Python.h>\n")[0][0] == 2
    assert find_python_in_core("void g(PyObject *o);\n")[0][1] == "PyObject"


def test_lint_allow_threads_balance():
    good = (
        "static int f(int x)\n{\n    Py_BEGIN_ALLOW_THREADS\n    if (x) { x++; }\n"
        "    Py_END_ALLOW_THREADS\n    return x;\n}\n"
        "#define RELEASE Py_BEGIN_ALLOW_THREADS\n#define ACQUIRE Py_END_ALLOW_THREADS\n"
        "static const char *s = \"{ Py_BEGIN_ALLOW_THREADS\";\n"
    )
    assert allow_threads_problems(good) == []
    bad = "static int g(void)\n{\n    Py_BEGIN_ALLOW_THREADS\n    return 0;\n}\n"
    problems = allow_threads_problems(bad)
    assert problems and problems[0][0] == 2 and problems[0][1].startswith("g()"), problems
    reversed_ = "int h(void)\n{\n    Py_END_ALLOW_THREADS\n    Py_BEGIN_ALLOW_THREADS\n}\n"
    assert allow_threads_problems(reversed_)
