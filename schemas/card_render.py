"""Render a card for people: `card.md` (a Hugging Face dataset card), `card.html` and PNG plots.

The HTML opens offline: CSS is inline, plots are PNG files beside it referenced by
relative paths, and it loads nothing from the network. Every value taken from the
data (samples, labels, reasons, stage names) is HTML-escaped.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from typing import TYPE_CHECKING

from schemas.card_plots import (funnel_png, histogram_png, plot_columns, safe_name, top_values_png)

if TYPE_CHECKING:  # schemas.card imports this module to render; the dependency runs one way
    from schemas.card import Card

CARD_FILE = "card.arrow"  # the machine-readable card the Markdown points to (schemas.card writes it)

CARD_MD, CARD_HTML = "card.md", "card.html"
TASK_CATEGORIES = {"document": ["text-generation"], "raw_page": ["text-generation"], "sft": ["text-generation"],
                   "preference": ["text-generation"], "prompt": ["text-generation"],
                   "scored_sample": ["text-generation"]}
_LANG_CODE = re.compile(r"^[a-z]{2,3}$")
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"))


def size_category(n: int) -> str:
    """The Hugging Face size bucket of `n` rows."""
    for limit, name in SIZE_BUCKETS:
        if n < limit:
            return name
    return "n>1T"


def languages(card: Card, max_languages: int = 10, min_share: float = 0.01) -> list[str]:
    """Top kept values of the `lang` column that look like ISO 639 codes and hold >= 1% of rows."""
    top = card.table("top_values").to_pylist()
    rows = [r for r in top if r["split"] == "kept" and r["column"] == "lang"]
    total = sum(r["count"] for r in rows) or 1
    return [r["value"] for r in rows if _LANG_CODE.match(r["value"] or "") and r["count"] / total >= min_share][:max_languages]


# ---------------------------------------------------------------------------- plots


def render_plots(card: Card, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the PNGs; return {"funnel"|"numeric"|"categorical": [(title, file name)]}."""
    out: dict[str, list[tuple[str, str]]] = {"funnel": [], "numeric": [], "categorical": []}
    funnel_png(card.table("funnel"), card.table("drops"), out_dir / "funnel.png")
    out["funnel"].append(("funnel", "funnel.png"))
    numeric, categorical = plot_columns(card.table("stats"))
    for col in numeric:
        name = f"hist-{safe_name(col)}.png"
        histogram_png(card.table("histograms"), card.table("stats"), col, out_dir / name)
        out["numeric"].append((col, name))
    for col in categorical:
        split = "dropped" if col in ("drop_reason", "drop_stage") else "kept"
        name = f"top-{split}-{safe_name(col)}.png"
        top_values_png(card.table("top_values"), col, out_dir / name, split=split)
        out["categorical"].append((col, name))
    return out


# ---------------------------------------------------------------------------- shared pieces


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:,.1f}" if 1e3 <= abs(value) < 1e15 else f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def funnel_rows(card: Card) -> list[list[str]]:
    drops = card.table("drops").to_pylist()
    out = []
    for st in card.table("funnel").to_pylist():
        pct = 100.0 * st["kept"] / st["rows_in"] if st["rows_in"] else 0.0
        reasons = ", ".join(f"{d['reason']}: {d['rows']:,}" for d in drops if d["stage"] == st["stage"]) or "–"
        out.append([st["stage"], _fmt(st["rows_in"]), _fmt(st["kept"]), _fmt(st["dropped"]), f"{pct:.1f}%",
                    f"{st['seconds']:.2f}", reasons])
    return out


FUNNEL_HEADER = ["stage", "rows in", "kept", "dropped", "kept %", "seconds", "dropped by reason"]
STATS_HEADER = ["column", "count", "nulls", "min", "p05", "median", "mean", "p95", "max"]


def drop_reason_rows(card: Card) -> list[list[str]]:
    rows_in = {s["stage"]: s["rows_in"] for s in card.table("funnel").to_pylist()}
    out = []
    for d in sorted(card.table("drops").to_pylist(), key=lambda d: -d["rows"]):
        share = 100.0 * d["rows"] / rows_in[d["stage"]] if rows_in.get(d["stage"]) else 0.0
        out.append([d["reason"], d["stage"], _fmt(d["rows"]), f"{share:.1f}%"])
    return out


def stats_rows(card: Card, split: str = "kept") -> list[list[str]]:
    out = []
    for r in card.table("stats").to_pylist():
        if r["split"] != split or r["stat_kind"] != "numeric":
            continue
        approx = "" if r["quantiles_exact"] else " ≈"
        out.append([r["column"] + ("" if r["source"] == "label" else " (derived)"), _fmt(r["count"]), _fmt(r["nulls"]),
                    _fmt(r["min"]), _fmt(r["q05"]) + approx, _fmt(r["q50"]) + approx, _fmt(r["mean"]),
                    _fmt(r["q95"]) + approx, _fmt(r["max"])])
    return out


def top_value_groups(card: Card) -> list[tuple[str, str, list[dict]]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in card.table("top_values").to_pylist():
        groups.setdefault((r["split"], r["column"]), []).append(r)
    return [(split, col, rows) for (split, col), rows in sorted(groups.items())]


# ---------------------------------------------------------------------------- Markdown


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(card: Card, plots: dict, path: Path) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    run = card.run
    langs = languages(card)
    data = DatasetCardData(
        license=run.get("license") or "unknown",
        language=langs or None,
        size_categories=[size_category(card.rows_kept)],
        task_categories=TASK_CATEGORIES.get(card.kind, ["text-generation"]),
        multilinguality=("multilingual" if len(langs) > 1 else "monolingual") if langs else None,
        pretty_name=run.get("job") and f"raymill {card.kind} dataset ({run['job']})",
        tags=["raymill", card.kind],
    )
    body = [f"# raymill {card.kind} dataset", "",
            f"**{card.rows_kept:,} rows** kept, {card.rows_dropped:,} rows dropped. "
            f"Schema `{card.kind}` version {card.schema_version}; machine-readable card: `{CARD_FILE}`.", "",
            "## Run", "",
            _md_table(["field", "value"], [[k, _fmt(run.get(k))] for k in
                                           ("job", "code_version", "started", "finished", "created", "text_column")]
                      + [["models", ", ".join(run.get("models") or []) or "–"]]
                      + [[f"input {i['path']}", i["fingerprint"] or "–"] for i in run.get("inputs") or []]),
            ""]
    for w in run.get("warnings") or []:
        body += [f"> **Warning:** {w}", ""]
    body += ["## Funnel", "", f"![funnel]({plots['funnel'][0][1]})", "", _md_table(FUNNEL_HEADER, funnel_rows(card)), ""]
    reasons = drop_reason_rows(card)
    body += ["## Drop reasons", "", _md_table(["reason", "stage", "rows", "share of stage input"], reasons)
             if reasons else "No rows were dropped.", ""]
    stats = stats_rows(card)
    body += ["## Label statistics (kept rows)", "",
             _md_table(STATS_HEADER, stats) if stats else "No numeric labels (0 rows or no label columns).", "",
             "Quantiles marked ≈ come from a uniform reservoir sample (exact up to 20,000 values per column).", ""]
    for title, name in plots["numeric"] + plots["categorical"]:
        body.append(f"![{title}]({name})")
    body.append("")
    for split, col, rows in top_value_groups(card):
        body += [f"### Top values of `{col}` ({split})", "",
                 _md_table(["value", "rows"], [[r["value"], _fmt(r["count"])] for r in rows]), ""]
    body += ["## Samples", ""]
    for s in card.table("samples").to_pylist():
        title = "kept" if s["split"] == "kept" else f"dropped ({s['reason']})"
        text = (s["text"] or "").replace("~~~", "~ ~ ~")
        more = f" (first {len(s['text'] or '')} of {s['text_chars']:,} chars)" if (s["text_chars"] or 0) > len(s["text"] or "") else ""
        body += [f"**{title}** `{s['id']}`{more}", "", "~~~text", text, "~~~", ""]
    card_md = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    path.write_text(str(card_md), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2327;background:#fafafa}
main{max-width:1150px;margin:0 auto;padding:1.5rem}
h1{margin:.2rem 0}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.summary{font-size:1.1rem}.muted{color:#666}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem;background:#fff}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}.grid figure{margin:0;background:#fff;border:1px solid #ddd;padding:.3rem}
img{max-width:100%}figcaption{font-size:.8rem;color:#555;text-align:center}
pre.sample{white-space:pre-wrap;word-break:break-word;max-height:14rem;overflow:auto;margin:0;font-size:.8rem}
.warning{background:#fff4d6;border-left:4px solid #f0b400;padding:.4rem .8rem}
details pre{background:#fff;border:1px solid #ddd;padding:.5rem;overflow:auto}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1, table_id: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if 0 < i and i >= numeric_from else ''}>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    ident = f' id="{_e(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(title: str, name: str) -> str:
    return f'<figure><img src="{_e(name)}" alt="{_e(title)}"><figcaption>{_e(title)}</figcaption></figure>'


def render_html(card: Card, plots: dict, path: Path) -> Path:
    run = card.run
    parts = [f"<h1>raymill {_e(card.kind)} dataset</h1>",
             f'<p class="summary" id="summary"><b>{card.rows_kept:,} rows</b> kept, {card.rows_dropped:,} rows dropped '
             f'<span class="muted">· schema {_e(card.kind)} v{card.schema_version} · card created {_e(run.get("created"))}'
             f'</span></p>']
    parts += [f'<p class="warning">{_e(w)}</p>' for w in run.get("warnings") or []]
    run_rows = [[k, _fmt(run.get(k))] for k in ("job", "code_version", "started", "finished", "text_column", "tokenizer")]
    run_rows += [["models", ", ".join(run.get("models") or []) or "–"]]
    run_rows += [[f"input: {i['path']}", i["fingerprint"] or "–"] for i in run.get("inputs") or []]
    config = json.dumps(json.loads(run.get("config_json") or "{}"), indent=2)
    parts += ["<h2>Run</h2>", _html_table(["field", "value"], run_rows, numeric_from=99),
              f"<details><summary>config</summary><pre>{_e(config)}</pre></details>"]
    parts += ['<h2 id="funnel">Funnel</h2>', '<div class="grid">' + _figure("funnel", plots["funnel"][0][1]) + "</div>",
              _html_table(FUNNEL_HEADER, funnel_rows(card), numeric_from=1, table_id="funnel-table")]
    reasons = drop_reason_rows(card)
    parts += ['<h2 id="drop-reasons">Drop reasons</h2>',
              _html_table(["reason", "stage", "rows", "share of stage input"], reasons, numeric_from=2, table_id="drop-table")
              if reasons else "<p>No rows were dropped.</p>"]
    stats = stats_rows(card)
    parts += ["<h2>Label statistics (kept rows)</h2>",
              _html_table(STATS_HEADER, stats) if stats else "<p>No numeric labels (0 rows or no label columns).</p>",
              '<p class="muted">Quantiles marked ≈ come from a uniform reservoir sample (exact up to 20,000 values per '
              "column). Histograms stack kept (green) and dropped (red) rows on the same bins.</p>"]
    if plots["numeric"]:
        parts += ['<div class="grid">' + "".join(_figure(t, n) for t, n in plots["numeric"]) + "</div>"]
    if plots["categorical"]:
        parts += ["<h2>Top values</h2>", '<div class="grid">' + "".join(_figure(t, n) for t, n in plots["categorical"]) + "</div>"]
    for split, col, rows in top_value_groups(card):
        parts += [f"<details><summary>{_e(col)} ({_e(split)}): {len(rows)} top values</summary>",
                  _html_table(["value", "rows"], [[r["value"], _fmt(r["count"])] for r in rows]), "</details>"]
    samples = card.table("samples").to_pylist()
    parts.append('<h2 id="samples">Samples</h2>')
    if not samples:
        parts.append("<p>No rows to sample (0 rows).</p>")
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault("kept" if s["split"] == "kept" else f"dropped: {s['reason']}", []).append(s)
    for title, rows in groups.items():
        body = "".join(
            f"<tr><td>{_e(s['id'])}</td><td><pre class=sample>{_e(s['text'])}</pre>"
            f"<span class=muted>{_fmt(s['text_chars'])} chars</span></td><td><pre class=sample>{_e(s['labels'])}</pre></td></tr>"
            for s in rows)
        parts.append(f"<h3>{_e(title)}</h3><table class=samples><thead><tr><th>id</th><th>text (truncated)</th>"
                     f"<th>labels</th></tr></thead><tbody>{body}</tbody></table>")
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>raymill {_e(card.kind)} dataset card'
           f"</title><style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")
    path.write_text(doc, encoding="utf-8")
    return path


def render_card(card: Card, out_dir: str | Path) -> dict[str, Path]:
    """Write the PNG plots, card.md and card.html into `out_dir` (the card directory)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(card, out_dir)
    return {"md": render_markdown(card, plots, out_dir / CARD_MD), "html": render_html(card, plots, out_dir / CARD_HTML)}
