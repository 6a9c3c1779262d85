"""PNG plots of a dataset card, drawn with matplotlib's Agg renderer.

Figures are plain `matplotlib.figure.Figure` objects saved straight to PNG: no pyplot, so no
backend selection, no global figure manager and nothing to close, and matplotlib loads only
when the first plot is drawn (importing this module stays cheap). Headless by construction:
cards are rendered on servers and in CI with no display.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_NUMERIC_PLOTS = 16
MAX_CATEGORICAL_PLOTS = 6
KEPT_COLOR, DROPPED_COLOR = "#3a7d44", "#c8553d"
REASON_COLORS = ["#c8553d", "#f28f3b", "#ffc857", "#8e6c8a", "#588b8b", "#d1495b", "#edae49", "#66a182",
                 "#2e4057", "#a1a1a1"]
# Label columns people look at first; everything else follows alphabetically.
PRIORITY = ("text_chars", "text_tokens", "lang_score", "gopher", "fineweb", "c4", "perplexity", "quality",
            "dup_cluster_size", "turns", "prompt_chars", "response_chars", "prompt_tokens", "response_tokens",
            "chosen_chars", "rejected_chars", "margin", "score_margin", "rouge_to_nearest_seed")
CATEGORICAL_PRIORITY = ("lang", "domain", "instruction_leading_word", "drop_reason", "drop_stage")


def safe_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", column)


def _rank(name: str, priority: tuple[str, ...]) -> tuple[int, str]:
    for i, p in enumerate(priority):
        if name == p or name.startswith(p):
            return i, name
    return len(priority), name


def plot_columns(stats: pa.Table) -> tuple[list[str], list[str]]:
    """(numeric columns, categorical columns) worth a plot, most interesting first, capped."""
    numeric, categorical = set(), set()
    for row in stats.to_pylist():
        if not row["count"]:
            continue
        if row["stat_kind"] == "numeric":
            numeric.add(row["column"])
        elif row["split"] == "kept" or row["column"] in ("drop_reason", "drop_stage"):
            categorical.add(row["column"])
    numeric_sorted = sorted(numeric, key=lambda n: _rank(n, PRIORITY))[:MAX_NUMERIC_PLOTS]
    categorical_sorted = sorted(categorical, key=lambda n: _rank(n, CATEGORICAL_PRIORITY))[:MAX_CATEGORICAL_PLOTS]
    return numeric_sorted, categorical_sorted


def _rows(table: pa.Table, **equal) -> list[dict]:
    mask = None
    for col, value in equal.items():
        m = pc.equal(table.column(col), value)
        mask = m if mask is None else pc.and_(mask, m)
    return (table.filter(mask) if mask is not None else table).to_pylist()


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A detached figure with one axes (freed with its last reference: nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig: Figure, path: Path, tight: bool = True) -> Path:
    # bbox_inches="tight" crops to everything drawn, a legend outside the axes included, so
    # titles and tick labels never fall off the image; it costs a layout pass (a draw
    # without rasterising) on top of the real draw. A tight_layout() before it would cost
    # one more. Plots with a fixed layout (histograms: HISTOGRAM_MARGINS) pass tight=False.
    fig.savefig(path, dpi=100, bbox_inches="tight" if tight else None, format="png")
    return path


# Histograms have one layout whatever the data: a title, "rows" with compact tick labels
# (at most five characters: 950, 12.5k, 1.2M) on the left, numbers below, the legend inside.
# Fixed margins that hold that replace the measuring pass of bbox "tight".
HISTOGRAM_MARGINS = {"left": 0.14, "right": 0.96, "bottom": 0.1, "top": 0.9}


def _compact_number(value: float, _position=None) -> str:
    """Tick label of a log axis without mathtext (10, 100, 1k, 10k, 1M): the 10^n labels are
    parsed as TeX once per label, a large share of a histogram's drawing time."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _compact_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(_compact_number)


def _log_x_axis(ax: Axes) -> None:
    """Log x scale with plain decade labels and two unlabelled minor ticks per decade (2, 5):
    the scale still reads as logarithmic, with a fraction of the default eight tick objects."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_compact_formatter())
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def funnel_png(funnel: pa.Table, drops: pa.Table, path: Path) -> Path:
    """One horizontal bar per stage: rows kept, then rows dropped stacked by reason."""
    stages = funnel.to_pylist()
    reasons = [r["reason"] for r in sorted(drops.to_pylist(), key=lambda r: -r["rows"])]
    reasons = list(dict.fromkeys(reasons))
    colors = {r: REASON_COLORS[i % len(REASON_COLORS)] for i, r in enumerate(reasons)}
    fig, ax = _figure(8, 1.4 + 0.6 * max(len(stages), 1))
    labelled = set()
    for y, st in enumerate(stages):
        ax.barh(y, st["kept"], color=KEPT_COLOR, label="kept" if "kept" not in labelled else None)
        labelled.add("kept")
        left = st["kept"]
        for d in _rows(drops, stage=st["stage"]):
            ax.barh(y, d["rows"], left=left, color=colors[d["reason"]],
                    label=d["reason"] if d["reason"] not in labelled else None)
            labelled.add(d["reason"])
            left += d["rows"]
        pct = 100.0 * st["kept"] / st["rows_in"] if st["rows_in"] else 0.0
        ax.text(max(st["rows_in"], 1) * 1.01, y, f"{st['kept']:,} / {st['rows_in']:,} kept ({pct:.1f}%)",
                va="center", fontsize=9)
    ax.set_yticks(range(len(stages)), [s["stage"] for s in stages])
    ax.invert_yaxis()
    top = max([s["rows_in"] for s in stages] + [1])
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("rows")
    ax.set_title("Funnel: rows kept and dropped (by reason) per stage")
    if stages:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no stages recorded", transform=ax.transAxes, ha="center")
    return _save(fig, path)


def _log_edges(edges: np.ndarray) -> bool:
    if len(edges) < 3 or edges[0] <= 0:
        return False
    widths = np.diff(edges)
    return widths[-1] > 3 * widths[0]


def histogram_png(histograms: pa.Table, stats: pa.Table, column: str, path: Path) -> Path:
    """Kept (green) and dropped (red) stacked on shared bins, with the kept median and mean marked."""
    fig, ax = _figure(5.2, 3.2)
    kept = _rows(histograms, split="kept", column=column)
    dropped = _rows(histograms, split="dropped", column=column)
    base = kept or dropped
    edges = np.array([b["lo"] for b in base] + [base[-1]["hi"]]) if base else np.array([0.0, 1.0])
    k = np.array([b["count"] for b in kept]) if kept else np.zeros(len(edges) - 1)
    d = np.array([b["count"] for b in dropped]) if dropped else np.zeros(len(edges) - 1)
    widths = np.diff(edges)
    ax.bar(edges[:-1], k, width=widths, align="edge", color=KEPT_COLOR, label="kept", edgecolor="white", linewidth=0.3)
    if d.sum():
        ax.bar(edges[:-1], d, width=widths, bottom=k, align="edge", color=DROPPED_COLOR, alpha=0.75,
               label="dropped", edgecolor="white", linewidth=0.3)
    if _log_edges(edges):
        _log_x_axis(ax)
    st = _rows(stats, split="kept", column=column)
    if st and st[0]["count"]:
        ax.axvline(st[0]["q50"], color="black", linestyle="--", linewidth=1, label=f"median {st[0]['q50']:.4g}")
        ax.axvline(st[0]["mean"], color="black", linestyle=":", linewidth=1, label=f"mean {st[0]['mean']:.4g}")
    ax.set_title(column)
    ax.set_ylabel("rows")
    ax.yaxis.set_major_formatter(_compact_formatter())
    ax.legend(fontsize=7, frameon=False)
    fig.subplots_adjust(**HISTOGRAM_MARGINS)
    return _save(fig, path, tight=False)


def top_values_png(top_values: pa.Table, column: str, path: Path, split: str = "kept", k: int = 15) -> Path:
    rows = _rows(top_values, split=split, column=column)[:k]
    fig, ax = _figure(5.2, 0.8 + 0.25 * max(len(rows), 1))
    ax.barh(range(len(rows)), [r["count"] for r in rows], color=KEPT_COLOR if split == "kept" else DROPPED_COLOR)
    ax.set_yticks(range(len(rows)), [r["value"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.set_title(f"{column} ({split}, top {len(rows)})")
    return _save(fig, path)


def overlay_png(hist_a: list[dict], hist_b: list[dict], column: str, names: tuple[str, str], path: Path) -> Path:
    """Two runs' kept distributions of one column as step lines (fraction of rows per bin)."""
    fig, ax = _figure(5.2, 3.2)
    log_scale = False
    for rows, name, color in ((hist_a, names[0], "#1f6f8b"), (hist_b, names[1], "#e07a5f")):
        if not rows:
            continue
        edges = np.array([b["lo"] for b in rows] + [rows[-1]["hi"]])
        counts = np.array([b["count"] for b in rows], dtype=float)
        total = counts.sum() or 1.0
        ax.stairs(counts / total, edges, label=f"{name} ({int(counts.sum()):,} rows)", color=color, linewidth=1.6)
        log_scale = log_scale or _log_edges(edges)
    if log_scale:
        ax.set_xscale("log")
    ax.set_title(column)
    ax.set_ylabel("fraction of rows per bin")
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)
