"""PNG plots of a dataset card: the funnel, histograms, top values, and two runs overlaid.

Drawn with schemas.raster_chart (Pillow), not matplotlib: a card draws ~20 of these at the
end of every job, and matplotlib took ~3 s of a one-core curate job for them (see that
module). Headless by construction: cards are rendered on servers and in CI with no display.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.raster_chart import Chart, Margins, row_span, text_width

MAX_NUMERIC_PLOTS = 16
MAX_CATEGORICAL_PLOTS = 6
KEPT_COLOR, DROPPED_COLOR = "#3a7d44", "#c8553d"
DROPPED_STACKED_COLOR = "#d67764"  # DROPPED_COLOR at 75% over white: stacked on kept bars
RUN_COLORS = ("#1f6f8b", "#e07a5f")
MAX_LABEL_CHARS = 32
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


def _log_edges(edges: np.ndarray) -> bool:
    if len(edges) < 3 or edges[0] <= 0:
        return False
    widths = np.diff(edges)
    return widths[-1] > 3 * widths[0]


def _short(label, limit: int = MAX_LABEL_CHARS) -> str:
    text = "(null)" if label is None else str(label)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def funnel_png(funnel: pa.Table, drops: pa.Table, path: Path) -> Path:
    """One horizontal bar per stage: rows kept, then rows dropped stacked by reason."""
    stages = funnel.to_pylist()
    reasons = list(dict.fromkeys(r["reason"] for r in sorted(drops.to_pylist(), key=lambda r: -r["rows"])))
    colors = {r: REASON_COLORS[i % len(REASON_COLORS)] for i, r in enumerate(reasons)}
    names = [_short(s["stage"]) for s in stages]
    legend = [("kept", KEPT_COLOR)] + [(_short(r), colors[r]) for r in reasons]
    left = 14 + int(max([text_width(n) for n in names] + [40]))
    right = 24 + int(max(text_width(label, 10) for label, _ in legend)) + 16
    height = 80 + 34 * max(len(stages), 1)
    chart = Chart(640 + left + right, max(height, 50 + 15 * len(legend)),
                  "Funnel: rows kept and dropped (by reason) per stage", Margins(left=left, right=right, bottom=36))
    top = max([s["rows_in"] for s in stages] + [1])
    chart.x_range(0, top * 1.45)
    chart.y_range(0, max(len(stages), 1))
    for i, st in enumerate(stages):
        low, high = row_span(i, len(stages))
        chart.rect(0, st["kept"], low, high, KEPT_COLOR)
        start = st["kept"]
        for d in _rows(drops, stage=st["stage"]):
            chart.rect(start, start + d["rows"], low, high, colors[d["reason"]])
            start += d["rows"]
        pct = 100.0 * st["kept"] / st["rows_in"] if st["rows_in"] else 0.0
        chart.text((chart.px(max(st["rows_in"], 1) * 1.01) + 4, chart.py((low + high) / 2)),
                   f"{st['kept']:,} / {st['rows_in']:,} kept ({pct:.1f}%)", size=11, anchor="lm")
    chart.frame()
    chart.category_axis(names, size=12)
    chart.x_axis("rows")
    if stages:
        chart.legend(legend, origin=(chart.box[2] + 12, chart.box[1]))
    else:
        chart.text(((chart.box[0] + chart.box[2]) / 2, (chart.box[1] + chart.box[3]) / 2), "no stages recorded",
                   anchor="mm")
    return chart.save(path)


def histogram_png(histograms: pa.Table, stats: pa.Table, column: str, path: Path) -> Path:
    """Kept (green) and dropped (red) stacked on shared bins, with the kept median and mean marked."""
    kept = _rows(histograms, split="kept", column=column)
    dropped = _rows(histograms, split="dropped", column=column)
    base = kept or dropped
    edges = np.array([b["lo"] for b in base] + [base[-1]["hi"]], dtype=float) if base else np.array([0.0, 1.0])
    k = np.array([b["count"] for b in kept], dtype=float) if kept else np.zeros(len(edges) - 1)
    d = np.array([b["count"] for b in dropped], dtype=float) if dropped else np.zeros(len(edges) - 1)
    chart = Chart(520, 320, column)
    chart.x_range(float(edges[0]), float(edges[-1]), log=_log_edges(edges))
    chart.y_range(0, float((k + d).max(initial=0)) * 1.08 or 1.0)
    # A white edge between bars where they are wide enough for one to show.
    edge = "#ffffff" if chart.px(edges[-1]) - chart.px(edges[0]) > 3 * len(k) else None
    legend = [("kept", KEPT_COLOR)]
    for i in range(len(k)):
        chart.rect(edges[i], edges[i + 1], 0, k[i], KEPT_COLOR, edge)
        if d[i]:
            chart.rect(edges[i], edges[i + 1], k[i], k[i] + d[i], DROPPED_STACKED_COLOR, edge)
    if d.sum():
        legend.append(("dropped", DROPPED_STACKED_COLOR))
    st = _rows(stats, split="kept", column=column)
    if st and st[0]["count"]:
        chart.vline(st[0]["q50"], dash=5)
        chart.vline(st[0]["mean"], dash=2)
        legend += [(f"median {st[0]['q50']:.4g}", "#000000", "dash"), (f"mean {st[0]['mean']:.4g}", "#000000", "dot")]
    chart.frame()
    chart.x_axis()
    chart.y_axis("rows")
    chart.legend(legend)
    return chart.save(path)


def top_values_png(top_values: pa.Table, column: str, path: Path, split: str = "kept", k: int = 15) -> Path:
    rows = _rows(top_values, split=split, column=column)[:k]
    labels = [_short(r["value"]) for r in rows]
    left = 14 + int(max([text_width(label, 10) for label in labels] + [30]))
    chart = Chart(max(520, left + 360), 70 + 22 * max(len(rows), 1), f"{column} ({split}, top {len(rows)})",
                  Margins(left=left, bottom=36))
    chart.x_range(0, max([r["count"] for r in rows] + [1]) * 1.05)
    chart.y_range(0, max(len(rows), 1))
    color = KEPT_COLOR if split == "kept" else DROPPED_COLOR
    for i, r in enumerate(rows):
        chart.rect(0, r["count"], *row_span(i, len(rows)), color)
    chart.frame()
    chart.category_axis(labels)
    chart.x_axis("rows")
    return chart.save(path)


def overlay_png(hist_a: list[dict], hist_b: list[dict], column: str, names: tuple[str, str], path: Path) -> Path:
    """Two runs' kept distributions of one column as step lines (fraction of rows per bin)."""
    runs = []
    for rows, name, color in ((hist_a, names[0], RUN_COLORS[0]), (hist_b, names[1], RUN_COLORS[1])):
        if rows:
            edges = np.array([b["lo"] for b in rows] + [rows[-1]["hi"]], dtype=float)
            counts = np.array([b["count"] for b in rows], dtype=float)
            runs.append((edges, counts / (counts.sum() or 1.0), f"{_short(name)} ({int(counts.sum()):,} rows)", color))
    chart = Chart(520, 320, column, Margins(left=62))
    if runs:
        lo = min(float(e[0]) for e, *_ in runs)
        hi = max(float(e[-1]) for e, *_ in runs)
        chart.x_range(lo, hi, log=any(_log_edges(e) for e, *_ in runs))
        chart.y_range(0, max(float(f.max(initial=0)) for _, f, *_ in runs) * 1.1 or 1.0)
    for edges, fractions, _, color in runs:
        chart.stairs(edges, fractions, color)
    chart.frame()
    chart.x_axis()
    chart.y_axis("fraction of rows per bin", formatter=lambda v: f"{v:.2g}")
    chart.legend([(label, color, "line") for *_, label, color in runs])
    return chart.save(path)
