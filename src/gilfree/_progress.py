"""Progress bars for ``map``, ``starmap``, ``imap`` and ``imap_unordered``.

``progress=True`` (or a dict of tqdm options) shows a tqdm bar that advances
as results arrive, with the rate and the time left.  A blocking map is
reported from the waiting caller itself: the C core calls back with the
number of items done at most every 50 ms while it waits, so a bar costs no
extra thread and nothing per item.  A lazy map advances as its results are
handed out.

Where the bar goes:

* a terminal: tqdm's usual bar, redrawn in place;
* a notebook: tqdm's widget (``tqdm.auto``);
* anything else (a pipe, a log file, CI): whole lines only -- no carriage
  returns, no escape codes -- at most one every ``mininterval`` seconds (10
  by default) plus the final line, so logs stay readable.

The bar is closed however the call ends: results, an exception, Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Union

__all__ = ["Progress", "ProgressOption", "make_bar", "ProgressIterator"]

ProgressOption = Union[bool, Dict[str, Any], None]

#: Seconds between lines when the output is not a terminal.
LOG_INTERVAL = 10.0


class _LineFile:
    """Turns tqdm's in-place redraws into whole lines for a pipe or a log."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip("\n")
        if line.strip():
            self._file.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()


def _is_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed or detached
        return False


def _columns(file: Any) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _tqdm_class() -> Any:
    try:
        from tqdm import auto
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ImportError("gilfree: progress bars need tqdm (pip install tqdm)") from exc
    return auto.tqdm


def _in_notebook(cls: Any) -> bool:
    return any(c.__module__ == "tqdm.notebook" for c in cls.__mro__)


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


class Progress:
    """One bar: ``update_to(done)`` from the core's callbacks, ``close()``."""

    __slots__ = ("bar", "offset")

    def __init__(self, bar: Any, offset: int = 0) -> None:
        self.bar = bar
        self.offset = offset

    def update_to(self, done: int) -> None:
        delta = self.offset + done - self.bar.n
        if delta > 0:
            self.bar.update(delta)

    def close(self) -> None:
        self.bar.close()


def make_bar(option: ProgressOption, total: Optional[int], fn: Any) -> Optional[Progress]:
    """A :class:`Progress` for ``progress=option`` (None when off)."""
    if option is None or option is False:
        return None
    if option is True:
        user: Dict[str, Any] = {}
    elif isinstance(option, dict):
        user = dict(option)
    else:
        raise TypeError(f"progress must be True, False or a dict of tqdm options, got {option!r}")
    cls = _tqdm_class()
    options: Dict[str, Any] = {"total": total, "desc": _describe(fn), "unit": "items", "leave": True}
    file = user.get("file", sys.stderr)
    if not _in_notebook(cls) and not _is_terminal(file):
        from tqdm import std

        cls = std.tqdm
        options.update(file=_LineFile(file), ascii=True, mininterval=LOG_INTERVAL, ncols=80)
        user.pop("file", None)
    elif not _in_notebook(cls) and _columns(file) == 0:
        # A terminal that does not know its size (a bare pseudo-terminal):
        # tqdm would draw a zero-size bar, that is nothing at all.
        options.update(ncols=80, nrows=24)
    options.update(user)
    return Progress(_quiet(cls)(**options))


_quiet_classes: Dict[Any, Any] = {}


def _quiet(cls: Any) -> Any:
    """cls without tqdm's monitor thread: it exists to adjust tqdm's own
    iteration counting, which a pool's bar does not use, and it would
    outlive the call."""
    sub = _quiet_classes.get(cls)
    if sub is None:
        sub = type(cls.__name__, (cls,), {"monitor_interval": 0, "__module__": cls.__module__})
        _quiet_classes[cls] = sub
    return sub


def total_of(iterable: Any) -> Optional[int]:
    """len(iterable) when it has one, else None (the bar shows a count)."""
    try:
        return len(iterable)
    except TypeError:
        return None


def run_blocking(call: Callable[[Callable[[int], None]], Any], progress: Progress) -> Any:
    """Run a blocking map with the core reporting to ``progress``."""
    try:
        return call(progress.update_to)
    finally:
        progress.close()


class ProgressIterator(Iterator[Any]):
    """A lazy map's iterator that advances its bar as results are handed out."""

    def __init__(self, it: Any, progress: Progress) -> None:
        self._it = it
        self._progress: Optional[Progress] = progress
        self._done = 0

    def __iter__(self) -> "ProgressIterator":
        return self

    def __next__(self) -> Any:
        try:
            value = next(self._it)
        except StopIteration:
            self._finish()
            raise
        except Exception:
            # A failed item: it is done too (iteration may go on).
            self._step()
            raise
        except BaseException:
            # Ctrl-C, or the pool terminated: the iterator is over.
            self._finish()
            raise
        self._step()
        return value

    def _step(self) -> None:
        self._done += 1
        if self._progress is not None:
            self._progress.update_to(self._done)

    def _finish(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()

    def close(self) -> None:
        """Cancel the rest of the work and close the bar."""
        try:
            self._it.close()
        finally:
            self._finish()

    def __del__(self) -> None:
        self._finish()

    def __repr__(self) -> str:
        return f"<gilfree progress over {self._it!r}>"
