"""Two dataset cards side by side: what changed in the funnel and in each distribution.

The question this answers is the one after changing one threshold: which stage now
drops more or fewer rows and for which reason, and how each label's distribution of
the kept rows moved (mean and quantile shifts, overlaid histograms).
"""
from __future__ import annotations

import html
from pathlib import Path

from schemas.card import CARD_DIR, CARD_FILE, Card, read_card
from schemas.card_plots import overlay_png, plot_columns, safe_name
from schemas.card_render import CSS, _fmt, _html_table, _md_table

SHIFT_STATS = ("count", "mean", "q05", "q50", "q95")


def _delta(a, b) -> str:
    if a is None or b is None:
        return "–"
    d = b - a
    if isinstance(d, float) and not d.is_integer():
        return f"{d:+.4g}"
    return f"{int(d):+,}"


def funnel_delta_rows(a: Card, b: Card) -> list[list[str]]:
    fa = {s["stage"]: s for s in a.table("funnel").to_pylist()}
    fb = {s["stage"]: s for s in b.table("funnel").to_pylist()}
    stages = list(dict.fromkeys(list(fa) + list(fb)))
    rows = []
    for st in stages:
        sa, sb = fa.get(st, {}), fb.get(st, {})
        row = [st]
        for key in ("rows_in", "kept", "dropped"):
            row += [_fmt(sa.get(key)), _fmt(sb.get(key)), _delta(sa.get(key), sb.get(key))]
        rows.append(row)
    return rows


def reason_delta_rows(a: Card, b: Card) -> list[list[str]]:
    da = {(d["stage"], d["reason"]): d["rows"] for d in a.table("drops").to_pylist()}
    db = {(d["stage"], d["reason"]): d["rows"] for d in b.table("drops").to_pylist()}
    keys = list(dict.fromkeys(list(da) + list(db)))
    keys.sort(key=lambda k: -abs(db.get(k, 0) - da.get(k, 0)))
    return [[stage, reason, _fmt(da.get((stage, reason), 0)), _fmt(db.get((stage, reason), 0)),
             _delta(da.get((stage, reason), 0), db.get((stage, reason), 0))] for stage, reason in keys]


def column_shift_rows(a: Card, b: Card, split: str = "kept") -> list[list[str]]:
    sa = {r["column"]: r for r in a.table("stats").to_pylist() if r["split"] == split and r["stat_kind"] == "numeric"}
    sb = {r["column"]: r for r in b.table("stats").to_pylist() if r["split"] == split and r["stat_kind"] == "numeric"}
    rows = []
    for col in sorted(set(sa) | set(sb)):
        ra, rb = sa.get(col, {}), sb.get(col, {})
        row = [col]
        for stat in SHIFT_STATS:
            row += [f"{_fmt(ra.get(stat))} → {_fmt(rb.get(stat))}", _delta(ra.get(stat), rb.get(stat))]
        rows.append(row)
    return rows


def share_shift_rows(a: Card, b: Card, column: str, split: str = "kept") -> list[list[str]]:
    """Share of rows per top value of a categorical column, before and after."""
    def shares(card: Card) -> dict[str, float]:
        rows = [r for r in card.table("top_values").to_pylist() if r["split"] == split and r["column"] == column]
        count = next((r["count"] for r in card.table("stats").to_pylist()
                      if r["split"] == split and r["column"] == column), 0) or 1
        return {r["value"]: r["count"] / count for r in rows}

    pa_, pb = shares(a), shares(b)
    values = sorted(set(pa_) | set(pb), key=lambda v: -max(pa_.get(v, 0), pb.get(v, 0)))
    return [[v, f"{100 * pa_.get(v, 0):.1f}%", f"{100 * pb.get(v, 0):.1f}%",
             f"{100 * (pb.get(v, 0) - pa_.get(v, 0)):+.1f} pp"] for v in values]


FUNNEL_HEADER = ["stage"] + [f"{k} {w}" for k in ("rows in", "kept", "dropped") for w in ("A", "B", "Δ")]
REASON_HEADER = ["stage", "reason", "rows A", "rows B", "Δ"]
SHIFT_HEADER = ["column"] + [h for s in SHIFT_STATS for h in (f"{s} A → B", f"Δ {s}")]
SHARE_HEADER = ["value", "share A", "share B", "Δ"]


def _load(path: str | Path) -> tuple[Card, Path]:
    path = Path(path)
    card_file = path if path.suffix == ".arrow" else (path / CARD_FILE if path.name == CARD_DIR else path / CARD_DIR / CARD_FILE)
    return read_card(card_file), card_file.parent


def _outputs(card_dir: Path, other: Path, output: str | Path | None) -> tuple[Path, Path]:
    if output is None:
        base = card_dir / f"compare-{safe_name(other.resolve().name)}"
    else:
        output = Path(output)
        base = output.with_suffix("") if output.suffix in (".html", ".md") else output
    base.parent.mkdir(parents=True, exist_ok=True)
    return base.with_name(base.name + ".html"), base.with_name(base.name + ".md")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def compare_cards(dataset_dir: str | Path, other_dir: str | Path, output: str | Path | None = None) -> tuple[Path, Path]:
    """Write the comparison of `dataset_dir` (A) with `other_dir` (B); return (html path, md path)."""
    a, card_dir = _load(dataset_dir)
    b, _ = _load(other_dir)
    html_path, md_path = _outputs(card_dir, Path(other_dir), output)
    name_a, name_b = Path(dataset_dir).resolve().name, Path(other_dir).resolve().name
    if name_a == name_b:
        name_a, name_b = f"A: {Path(dataset_dir)}", f"B: {Path(other_dir)}"

    numeric_a, categorical_a = plot_columns(a.table("stats"))
    numeric_b, categorical_b = plot_columns(b.table("stats"))
    numeric = [c for c in dict.fromkeys(numeric_a + numeric_b)]
    figures = []
    for col in numeric:
        hist_a = [r for r in a.table("histograms").to_pylist() if r["split"] == "kept" and r["column"] == col]
        hist_b = [r for r in b.table("histograms").to_pylist() if r["split"] == "kept" and r["column"] == col]
        if not hist_a and not hist_b:
            continue
        png = html_path.with_name(f"{html_path.stem}-hist-{safe_name(col)}.png")
        overlay_png(hist_a, hist_b, col, (name_a, name_b), png)
        figures.append((col, png.name))
    categorical = [c for c in dict.fromkeys(categorical_a + categorical_b) if c not in ("drop_reason", "drop_stage")]

    funnel, reasons, shifts = funnel_delta_rows(a, b), reason_delta_rows(a, b), column_shift_rows(a, b)
    summary = (f"A = {name_a}: {a.rows_kept:,} kept / {a.rows_dropped:,} dropped; "
               f"B = {name_b}: {b.rows_kept:,} kept / {b.rows_dropped:,} dropped "
               f"(kept {_delta(a.rows_kept, b.rows_kept)})")

    md = [f"# Card comparison: {name_a} vs {name_b}", "", summary, "", "## Funnel", "", _md_table(FUNNEL_HEADER, funnel), "",
          "## Drops by reason", "", _md_table(REASON_HEADER, reasons) if reasons else "No drops in either run.", "",
          "## Distribution shifts (kept rows)", "", _md_table(SHIFT_HEADER, shifts) if shifts else "No numeric columns.", ""]
    md += [f"![{col}]({name})" for col, name in figures] + [""]
    for col in categorical:
        md += [f"### `{col}` shares (kept)", "", _md_table(SHARE_HEADER, share_shift_rows(a, b, col)), ""]
    _write(md_path, "\n".join(md))

    e = html.escape
    parts = [f"<h1>Card comparison</h1><p class=summary>{e(summary)}</p>",
             "<h2 id=funnel>Funnel</h2>", _html_table(FUNNEL_HEADER, funnel, table_id="funnel-table"),
             "<h2>Drops by reason</h2>",
             _html_table(REASON_HEADER, reasons, numeric_from=2) if reasons else "<p>No drops in either run.</p>",
             "<h2>Distribution shifts (kept rows)</h2>",
             _html_table(SHIFT_HEADER, shifts) if shifts else "<p>No numeric columns.</p>",
             '<div class="grid">' + "".join(f'<figure><img src="{e(n)}" alt="{e(c)}"><figcaption>{e(c)}</figcaption></figure>'
                                             for c, n in figures) + "</div>"]
    for col in categorical:
        parts += [f"<h3>{e(col)} shares (kept)</h3>", _html_table(SHARE_HEADER, share_shift_rows(a, b, col))]
    _write(html_path, f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Card comparison</title>'
                      f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")
    return html_path, md_path
