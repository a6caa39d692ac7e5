"""Insights: where the workers' time went (``Pool(insights=True)``).

The C core records, per worker life, the calls made, the time spent
running them, waiting for work, waiting for the GIL (threads),
(de)serialising and moving data (processes), in the initializer and the
exit function, and a timeline of the most recent segments.  This module
turns those raw numbers into :class:`Insights`: a dict (``as_dict()``), a
table (``str()``) and a timeline picture (``plot(path)``, needs
matplotlib: ``pip install gilfree[plot]``).

>>> import gilfree
>>> with gilfree.Pool(2, "threads", insights=True) as pool:
...     _ = pool.map(abs, range(1000))
>>> pool.insights().as_dict()["totals"]["tasks"]
1000
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["Insights"]

NS = 1e-9

#: Timeline segment kinds, as the core numbers them, and how they are drawn.
KINDS = {1: "init", 2: "work", 3: "gil", 4: "data", 5: "exit"}
COLORS = {
    "work": "#2e9d5b",
    "stalled": "#f0a030",
    "data": "#3b7dd8",
    "gil": "#d8453b",
    "init": "#8e5bd8",
    "exit": "#8a8a8a",
    "start": "#c8c8c8",
}
LABELS = {
    "work": "running the function",
    "stalled": "running it, mostly off CPU (waiting for the GIL, or blocked)",
    "data": "(de)serialising, moving data",
    "gil": "waiting for the GIL",
    "init": "initializer",
    "exit": "exit function",
    "start": "process starting",
}

# (key in the raw counters, key in as_dict, column title)
_PARTS = (
    ("work_ns", "working_time", "working"),
    ("idle_ns", "waiting_time", "waiting"),
    ("gil_ns", "gil_wait_time", "GIL wait"),
    ("data_ns", "data_time", "data"),
    ("init_ns", "init_time", "init"),
    ("exit_ns", "exit_time", "exit"),
)


class Insights:
    """What a pool's workers did, from ``pool.insights()``.

    Times are in seconds.  Per worker id (a process worker recycled by
    ``max_tasks_per_worker`` or replaced after a crash has several lives):
    ``tasks`` (calls), ``working_time``, ``waiting_time`` (for work),
    ``gil_wait_time`` (threads), ``data_time`` (processes: decoding
    arguments, encoding and sending results), ``init_time``, ``exit_time``,
    ``start_up_time`` (processes: from asking for the worker to its first
    message), ``cpu_time`` (on a CPU while running the calls: much less
    than ``working_time`` on threads means they waited for the GIL),
    ``other_time`` (the rest of its lifetime: our own bookkeeping) and
    ``lifetime``.  ``timeline``: ``(worker, kind, start, end, calls,
    cpu_share, backend)`` per segment, times from the pool's start.

    >>> import gilfree
    >>> with gilfree.Pool(2, "threads", insights=True) as pool:
    ...     _ = pool.map(abs, range(1000))
    >>> insights = pool.insights()
    >>> insights   # doctest: +ELLIPSIS
    <gilfree.Insights threads workers=2 tasks=1000 wall=...s>
    >>> print(insights)   # doctest: +ELLIPSIS
    gilfree insights: threads pool, 2 workers, 1000 tasks in ... s
    ...
    """

    def __init__(self, raws: Sequence[Dict[str, Any]]) -> None:
        if not raws:
            raise ValueError("no insights recorded")
        self._raws = list(raws)
        self.backend = "+".join(r["backend"] for r in self._raws)
        self.workers = max(r["workers"] for r in self._raws)
        self.start_ns = min(r["start_ns"] for r in self._raws)
        lives = [(r["backend"], life) for r in self._raws for life in r["lives"]]
        ends = [life["end_ns"] for _, life in lives if life.get("end_ns")]
        live_now = any(not life.get("end_ns") for _, life in lives)
        self.end_ns = max(r["now_ns"] for r in self._raws) if live_now or not ends else max(ends)
        self.wall_time = max(0.0, (self.end_ns - self.start_ns) * NS)
        self._lives = lives
        self._caller = {
            "encode_time": sum(r.get("caller", {}).get("encode_ns", 0) for r in self._raws) * NS,
            "decode_time": sum(r.get("caller", {}).get("decode_ns", 0) for r in self._raws) * NS,
        }

    # -- numbers ----------------------------------------------------------------

    def _life_numbers(self, backend: str, life: Dict[str, Any]) -> Dict[str, Any]:
        start = life.get("start_ns") or self.start_ns
        end = life.get("end_ns") or self.end_ns
        out: Dict[str, Any] = {"tasks": life.get("tasks", 0), "chunks": life.get("chunks", 0)}
        total = 0.0
        for raw_key, key, _ in _PARTS:
            out[key] = life.get(raw_key, 0) * NS
            total += out[key]
        out["lifetime"] = max(0.0, (end - start) * NS) if life.get("start_ns") else 0.0
        out["other_time"] = max(0.0, out["lifetime"] - total)
        out["start_up_time"] = life.get("startup_ns", 0) * NS
        out["cpu_time"] = life.get("cpu_ns", 0) * NS
        return out

    def as_dict(self) -> Dict[str, Any]:
        """Every number, as plain data (``json.dumps`` works on it).

        >>> import json, gilfree
        >>> with gilfree.Pool(2, "threads", insights=True) as pool:
        ...     _ = pool.map(abs, range(100))
        >>> d = pool.insights().as_dict()
        >>> sorted(d)
        ['backend', 'per_worker', 'timeline', 'totals', 'wall_time', 'workers']
        >>> d["backend"], d["workers"], d["totals"]["tasks"], len(d["per_worker"])
        ('threads', 2, 100, 2)
        >>> _ = json.dumps(d)
        """
        per: Dict[Tuple[str, int], Dict[str, Any]] = {}
        timeline: List[Tuple[int, str, float, float, int, Optional[float], str]] = []
        for backend, life in self._lives:
            wid = life["worker"]
            nums = self._life_numbers(backend, life)
            row = per.get((backend, wid))
            if row is None:
                row = {"worker": wid, "backend": backend, "lives": 0, "pids": []}
                for key, value in nums.items():
                    row[key] = value
                per[(backend, wid)] = row
            else:
                for key, value in nums.items():
                    if value is not None:
                        row[key] = (row[key] or 0) + value
            row["lives"] += 1
            if "pid" in life:
                row["pids"].append(life["pid"])
            if life.get("startup_ns") and life.get("start_ns"):
                # From asking for the process to its first message.
                began = (life["start_ns"] - self.start_ns) * NS
                timeline.append((wid, "start", max(0.0, began - life["startup_ns"] * NS), began, 0, None, backend))
            for kind, start, end, items, cpu in life.get("segments", ()):
                timeline.append(
                    (wid, KINDS.get(kind, str(kind)), (start - self.start_ns) * NS, (end - self.start_ns) * NS,
                     items, cpu, backend)
                )
        rows = [per[k] for k in sorted(per)]
        totals: Dict[str, Any] = {"tasks": sum(r["tasks"] for r in rows)}
        for key in [p[1] for p in _PARTS] + ["start_up_time", "other_time", "lifetime"]:
            totals[key] = sum(r[key] for r in rows)
        totals["cpu_time"] = sum(r["cpu_time"] for r in rows)
        totals.update({"caller_" + k: v for k, v in self._caller.items()})
        timeline.sort(key=lambda s: (s[6], s[0], s[2]))
        return {
            "backend": self.backend,
            "workers": self.workers,
            "wall_time": self.wall_time,
            "totals": totals,
            "per_worker": rows,
            "timeline": timeline,
        }

    # -- text ---------------------------------------------------------------------

    def __str__(self) -> str:
        d = self.as_dict()
        head = (
            f"gilfree insights: {d['backend'].replace('+', ' and ')} pool, {d['workers']} workers, "
            f"{d['totals']['tasks']} tasks in {d['wall_time']:.3f} s"
        )
        cols = ["worker", "tasks"] + [title for _, _, title in _PARTS] + ["start-up", "other"]
        has_cpu = True
        cols.insert(3, "on CPU")
        table = [cols]

        def cells(name: str, r: Dict[str, Any]) -> List[str]:
            life = r["lifetime"] or 1e-12
            out = [name, str(r["tasks"])]
            for _, key, _title in _PARTS:
                out.append(_fmt(r[key], life))
                if key == "working_time" and has_cpu:
                    out.append(_fmt(r["cpu_time"] or 0.0, life))
            out.append(f"{r['start_up_time']:.3f}s")
            out.append(_fmt(r["other_time"], life))
            return out

        mixed = len({r["backend"] for r in d["per_worker"]}) > 1
        for r in d["per_worker"]:
            name = (("thread " if r["backend"] == "threads" else "process ") if mixed else "") + str(r["worker"])
            name += f" ({r['lives']} lives)" if r["lives"] > 1 else ""
            table.append(cells(name, r))
        table.append(cells("total", d["totals"]))
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = [head, ""]
        for k, row in enumerate(table):
            lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
            if k == 0 or k == len(table) - 2:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
        lines.append("(% of each worker's lifetime; waiting = for work; on CPU = the part of working spent")
        lines.append(" on a CPU -- much less means the calls waited for the GIL or were blocked; data =")
        lines.append(" (de)serialising and moving arguments and results; other = the pool's bookkeeping)")
        if d["totals"].get("caller_encode_time") or d["totals"].get("caller_decode_time"):
            lines.append(
                f"in the calling thread: encoding tasks {d['totals']['caller_encode_time']:.3f} s, "
                f"decoding results {d['totals']['caller_decode_time']:.3f} s"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        d = self.as_dict()
        return (f"<gilfree.Insights {d['backend']} workers={d['workers']} tasks={d['totals']['tasks']} "
                f"wall={d['wall_time']:.3f}s>")

    # -- picture --------------------------------------------------------------------

    def plot(self, path: "os.PathLike[str] | str", *, title: Optional[str] = None) -> str:
        """Write a PNG timeline: one row per worker, a bar for each stretch of
        work, data movement, GIL waiting, initializer and exit function; the
        gaps are time spent waiting for work.  Returns the path.

        Needs matplotlib (``pip install gilfree[plot]``).  Uses no global
        matplotlib state (no pyplot), so it is safe in any program.

        >>> import os, tempfile, gilfree
        >>> with gilfree.Pool(2, "threads", insights=True) as pool:
        ...     _ = pool.map(abs, range(100))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pool.insights().plot(os.path.join(tmp, "timeline.png"))
        ...     os.path.basename(path), os.path.getsize(path) > 0
        ('timeline.png', True)
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.patches import Patch
        except ImportError as exc:
            raise ImportError("Insights.plot() needs matplotlib: pip install gilfree[plot]") from exc
        d = self.as_dict()
        # Threads first (an auto pool starts there), then processes.
        rows = sorted({(r["backend"], r["worker"]) for r in d["per_worker"]}, key=lambda k: (k[0] != "threads", k))
        row_of = {key: i for i, key in enumerate(rows)}
        height = max(2.5, 0.45 * len(rows) + 1.6)
        fig = Figure(figsize=(11, height), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        by_row_kind: Dict[Tuple[int, str], List[Tuple[float, float]]] = {}
        for wid, kind, start, end, _items, cpu, backend in d["timeline"]:
            y = row_of.get((backend, wid), 0)
            if kind == "work" and cpu is not None and cpu < 0.6:
                kind = "stalled"
            by_row_kind.setdefault((y, kind), []).append((start, max(end - start, 1e-6)))
        for (y, kind), spans in by_row_kind.items():
            ax.broken_barh(spans, (y - 0.38, 0.76), facecolors=COLORS.get(kind, "#444444"), linewidth=0)
        ax.set_yticks(range(len(rows)))
        labels = []
        for backend, wid in rows:
            r = next(x for x in d["per_worker"] if x["worker"] == wid and x["backend"] == backend)
            life = r["lifetime"] or 1e-12
            labels.append(f"{'thread' if backend == 'threads' else 'process'} {wid}\n"
                          f"{r['tasks']} tasks, busy {100 * r['working_time'] / life:.0f}%")
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(d["wall_time"], 1e-6))
        ax.set_xlabel("seconds since the pool started")
        ax.grid(axis="x", alpha=0.3)
        used = sorted({kind for (_, kind) in by_row_kind}, key=list(COLORS).index)
        handles = [Patch(color=COLORS[k], label=LABELS[k]) for k in used if k in COLORS]
        handles.append(Patch(facecolor="white", edgecolor="#999999", label="waiting for work"))
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
        ax.set_title(title or (f"gilfree {d['backend']} pool: {d['totals']['tasks']} tasks on "
                               f"{d['workers']} workers in {d['wall_time']:.3f} s"), fontsize=10)
        legend_rows = (len(handles) + 3) // 4
        fig.tight_layout(rect=(0, min(0.45, 0.3 * legend_rows / height + 0.02), 1, 1))
        path = os.fspath(path)
        fig.savefig(path, format="png")
        return path


def _fmt(seconds: float, lifetime: float) -> str:
    return f"{seconds:.3f}s {100 * seconds / lifetime:3.0f}%"
