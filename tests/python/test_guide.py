"""docs/guide.md and docs/api.md stay true.

* Every ```python block of the guide runs, as a script in a fresh
  interpreter with warnings as errors, and exits with status 0.  A block
  whose first line starts with ``# not run`` is only shown; a block whose
  first line is ``# needs: pkg1 pkg2`` is skipped where one of those
  modules cannot be imported.
* Every public name of ``gilfree``, ``gilfree.compat.multiprocessing``,
  ``gilfree.compat.mpire`` and ``gilfree.joblib`` appears in the API
  reference, in the section of its module, as a heading or in backticks,
  and every signature shown there is the one the code has now.
* The guide has its four migration sections, each with a side-by-side
  table, and every ``gilfree....`` name either document mentions exists.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

import pytest

import gilfree

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
API = ROOT / "docs" / "api.md"

NOT_RUN = "# not run"
NEEDS = "# needs:"

# Each block runs in its own interpreter; a few seconds each on a 2-CPU machine.
BLOCK_TIMEOUT_S = 60


class Block(NamedTuple):
    line: int      # where the block starts in guide.md (1-based, the ``` line)
    code: str


def _python_blocks(path: Path) -> List[Block]:
    """The ```python blocks of a Markdown file, with their line numbers."""
    blocks: List[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            i += 1
            body: List[str] = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: unterminated code block"
            blocks.append(Block(start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


def _needs(code: str) -> List[str]:
    first = code.lstrip("\n").split("\n", 1)[0].strip()
    if not first.startswith(NEEDS):
        return []
    return first[len(NEEDS):].replace(",", " ").split()


def _runnable(block: Block) -> bool:
    return not block.code.lstrip("\n").startswith(NOT_RUN)


BLOCKS = _python_blocks(GUIDE)
RUNNABLE = [b for b in BLOCKS if _runnable(b)]


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    # The package exactly as this test session imports it (an in-place
    # build's directory of symlinks included), then the session's path.
    here = str(Path(gilfree.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [here, *sys.path] if p)
    env.pop("PYTHONSTARTUP", None)
    return env


# --------------------------------------------------------------------------
# (a) the guide's examples run


@pytest.mark.timeout(30)
def test_the_guide_has_runnable_examples():
    assert len(RUNNABLE) >= 15, [b.line for b in RUNNABLE]
    # The skip marker is used on purpose only: an example that cannot run
    # in a test is the exception.
    assert len(BLOCKS) - len(RUNNABLE) <= 3


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 30)
@pytest.mark.parametrize("block", RUNNABLE, ids=[f"guide.md:{b.line}" for b in RUNNABLE])
def test_guide_example_runs(block, tmp_path):
    for module in _needs(block.code):
        pytest.importorskip(module)
    script = tmp_path / f"guide_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    where = f"docs/guide.md:{block.line}"
    assert proc.returncode == 0, f"{where} exited with {proc.returncode}:\n{proc.stderr}"
    # Nothing reported behind the program's back (unraisable exceptions,
    # warnings printed from a __del__, a worker's traceback).
    for marker in ("Traceback (most recent call last)", "Exception ignored", "Warning:"):
        assert marker not in proc.stderr, f"{where} wrote {marker!r} to stderr:\n{proc.stderr}"


@pytest.mark.timeout(30)
def test_skip_markers_are_recognised():
    assert not _runnable(Block(1, "# not run: needs a keyboard\nprint(1)\n"))
    assert _runnable(Block(1, "print(1)  # not run\n"))
    assert _needs("# needs: joblib, sklearn\nimport joblib\n") == ["joblib", "sklearn"]
    assert _needs("import joblib  # needs: joblib\n") == []


# --------------------------------------------------------------------------
# (b) the API reference names and signatures


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


MODULES = ["gilfree", "gilfree.compat.multiprocessing", "gilfree.compat.mpire", "gilfree.joblib"]


def _public_names(module: Any) -> List[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    )


def _outside_code(text: str) -> str:
    """``text`` with the lines of fenced code blocks blanked (a ``#`` comment
    in a code block is not a heading)."""
    out = []
    fenced = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def _sections(text: str) -> Dict[str, str]:
    """The API reference's level-2 sections, by the module name in their heading."""
    out: Dict[str, str] = {}
    parts = re.split(r"^## ", text, flags=re.M)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        match = re.search(r"`(gilfree[\w.]*)`", heading)
        if match:
            out[match.group(1)] = heading + "\n" + body
    return out


def _mentioned(text: str) -> set:
    """Dotted names that appear in backticks or in a heading."""
    spans = re.findall(r"`([^`\n]+)`", text)
    spans += [line for line in _outside_code(text).splitlines() if line.startswith("#")]
    found = set()
    for span in spans:
        found.update(re.findall(r"[A-Za-z_][\w.]*", span))
    return found


@pytest.mark.timeout(30)
def test_api_reference_has_a_section_per_module():
    sections = _sections(API.read_text(encoding="utf-8"))
    assert set(MODULES) <= set(sections), sorted(sections)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_in_the_api_reference(module_name):
    module = _optional_module(module_name)
    if module is None:
        pytest.skip(f"{module_name} cannot be imported here")
    section = _sections(API.read_text(encoding="utf-8"))[module_name]
    mentioned = _mentioned(section)
    missing = [name for name in _public_names(module) if f"{module_name}.{name}" not in mentioned]
    assert not missing, f"docs/api.md, section {module_name}: not documented: {missing}"


def _render(obj: Callable[..., Any]) -> str:
    """A signature as the API reference shows it: no annotations, no self."""
    sig = inspect.signature(obj)
    params = list(sig.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    params = [p.replace(annotation=inspect.Parameter.empty) for p in params]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _methods(prefix: str, cls: type, names: str) -> List[Tuple[str, Any]]:
    return [(f"{prefix}.{name}", getattr(cls, name)) for name in names.split()]


def _documented_signatures() -> Dict[str, List[Tuple[str, Any]]]:
    """(text before the parentheses, callable) per API reference section."""
    import gilfree.compat.mpire as mpire
    import gilfree.compat.multiprocessing as mp

    out: Dict[str, List[Tuple[str, Any]]] = {
        "gilfree": [("Pool", gilfree.Pool.__init__)]
        + _methods("Pool", gilfree.Pool, "map starmap imap imap_unordered apply apply_async submit close join "
                                         "terminate exit_results insights amap aimap aapply")
        + [("gilfree.map", gilfree.map), ("gilfree.probe", gilfree.probe),
           ("gilfree.usable_cpus", gilfree.usable_cpus), ("Executor", gilfree.Executor.__init__)]
        + _methods("Executor", gilfree.Executor, "submit map shutdown")
        + _methods("AsyncResult", gilfree.AsyncResult, "get wait ready successful")
        + _methods("MapIterator", gilfree.MapIterator, "close")
        + _methods("Insights", gilfree.Insights, "as_dict plot"),
        "gilfree.compat.multiprocessing": [("Pool", mp.Pool.__init__)]
        + _methods("Pool", mp.Pool, "apply apply_async map map_async starmap starmap_async imap imap_unordered "
                                    "close join terminate")
        + _methods("AsyncResult", mp.AsyncResult, "get wait ready successful")
        + _methods("IMapIterator", mp.IMapIterator, "next"),
        "gilfree.compat.mpire": [("WorkerPool", mpire.WorkerPool.__init__)]
        + _methods("WorkerPool", mpire.WorkerPool, "map map_unordered imap imap_unordered apply apply_async "
                                                   "get_exit_results get_insights print_insights stop_and_join "
                                                   "join terminate pass_on_worker_id set_shared_objects "
                                                   "set_use_worker_state set_keep_alive set_order_tasks")
        + _methods("AsyncResult", mpire.AsyncResult, "get wait ready successful"),
    }
    gj = _optional_module("gilfree.joblib")
    if gj is not None:
        out["gilfree.joblib"] = [("GilfreeBackend", gj.GilfreeBackend.__init__), ("register", gj.register)]
    return out


@pytest.mark.timeout(30)
def test_api_reference_signatures_are_the_real_ones():
    sections = _sections(API.read_text(encoding="utf-8"))
    wrong = []
    for module_name, entries in _documented_signatures().items():
        section = sections[module_name]
        for label, obj in entries:
            expected = f"{label}{_render(obj)}"
            if expected not in section:
                wrong.append(f"{module_name}: expected `{expected}`")
    assert not wrong, "docs/api.md shows signatures that differ from the code:\n  " + "\n  ".join(wrong)


# --------------------------------------------------------------------------
# (c) the guide's structure, and names that exist


MIGRATIONS = {
    "multiprocessing": "| multiprocessing | gilfree |",
    "concurrent.futures": "| concurrent.futures | gilfree |",
    "joblib": "| joblib | gilfree |",
    "MPIRE": "| MPIRE | gilfree |",
}


def _migration_sections(text: str) -> Dict[str, str]:
    out = {}
    parts = re.split(r"^### ", text, flags=re.M)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        body = re.split(r"^#{1,3} ", body, flags=re.M)[0]
        for library in MIGRATIONS:
            if re.match(rf"[\d.]*\s*From {re.escape(library)}\b", heading):
                out[library] = body
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("library", list(MIGRATIONS))
def test_migration_section_with_a_side_by_side_table(library):
    sections = _migration_sections(_outside_code(GUIDE.read_text(encoding="utf-8")))
    assert library in sections, f"docs/guide.md has no '### ... From {library}' section"
    body = sections[library]
    header = MIGRATIONS[library]
    assert header in body, f"the {library} section has no table starting {header!r}"
    table = body[body.index(header):].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]  # past header and rule
    assert len(rows) >= 8, f"the {library} table has only {len(rows)} rows"
    assert all(line.count("|") >= 4 for line in rows), "each row: their call | gilfree call | notes"
    assert "one-line change" in body.lower()


@pytest.mark.timeout(30)
def test_guide_covers_the_issue_topics():
    text = GUIDE.read_text(encoding="utf-8")
    headings = [line.lstrip("#").strip().lower() for line in _outside_code(text).splitlines()
                if line.startswith("#")]
    for topic in ("quick start", "choosing a backend", "migrating", "failure semantics", "asyncio",
                  "progress bars and insights", "api reference"):
        assert any(topic in h for h in headings), f"docs/guide.md has no section on {topic!r}"
    assert "](api.md)" in text


def _resolve(dotted: str) -> bool:
    """Whether gilfree.x.y names a module or an attribute that exists."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _optional_module(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", [GUIDE, API], ids=lambda p: p.name)
def test_every_gilfree_name_mentioned_exists(path):
    text = path.read_text(encoding="utf-8")
    names = {n.rstrip(".") for n in re.findall(r"\bgilfree(?:\.[A-Za-z_]\w*)+", text)}
    if _optional_module("joblib") is None:
        names = {n for n in names if not n.startswith("gilfree.joblib")}
    unknown = sorted(n for n in names if not _resolve(n))
    assert not unknown, f"{path.name} mentions names that do not exist: {unknown}"
