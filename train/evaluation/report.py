"""Eval results on disk: `results.json` (machine-readable), `results.md` (Markdown tables),
`index.html` (the same for a browser, offline: inline CSS, every value escaped) and
`items.parquet` (one row per scored document / question / pair / prompt).

Tables come from the shape of the metrics, not from the task: scalar metrics form the
summary table, and each mapping of mappings (`per_subject`, `per_category`, ...) a table
of its own, so every task (including synth's judge) is written up by the same code.
"""
from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

RESULTS_JSON, RESULTS_MD, RESULTS_HTML, ITEMS = "results.json", "results.md", "index.html", "items.parquet"
Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def tables_of(metrics: dict[str, Any]) -> list[Table]:
    scalars = [[k, fmt(v)] for k, v in metrics.items() if not isinstance(v, (dict, list))]
    out: list[Table] = [("Summary", ["metric", "value"], scalars)]
    for key, value in metrics.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(c for v in value.values() for c in v))
            out.append((key.replace("_", " "), [key.split("_")[-1]] + columns,
                        [[str(name)] + [fmt(row.get(c)) for c in columns] for name, row in value.items()]))
    return out


def markdown(title: str, about: list[tuple[str, str]], tables: Sequence[Table]) -> str:
    def cell(value: str) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""] + [f"- **{k}**: {cell(v)}" for k, v in about] + [""]
    for name, header, rows in tables:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em}"
        "th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "dt{font-weight:600}dd{margin:0 0 .4em 1em}")


def html_page(title: str, about: list[tuple[str, str]], tables: Sequence[Table]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{e(title)}</h1><dl>"]
    parts += [f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in about]
    parts.append("</dl>")
    for name, header, rows in tables:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td{' class=num' if i else ''}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                       for row in rows)
        parts.append(f"<h2>{e(name)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(output_dir: str | Path, task: str, metrics: dict[str, Any], items: list[dict[str, Any]] | Any,
                 models: dict[str, Any], options: dict[str, Any]) -> Path:
    """Write the four files into `output_dir` (replaced as a whole, only once all are written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.card import code_version
    from schemas.dataset_io import atomic_output_dir

    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = {"task": task, "metrics": metrics, "models": models, "options": options, "created": created,
              "code_version": code_version()}
    about = [("task", task), ("created", created)] + [(f"model {k}" if k != "model" else "model",
                                                       v.get("source") if isinstance(v, dict) else str(v))
                                                      for k, v in models.items()]
    tables = tables_of(metrics)
    title = f"{task} evaluation"
    with atomic_output_dir(output_dir) as tmp:
        (tmp / RESULTS_JSON).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        (tmp / RESULTS_MD).write_text(markdown(title, about, tables), encoding="utf-8")
        (tmp / RESULTS_HTML).write_text(html_page(title, about, tables), encoding="utf-8")
        table = items if isinstance(items, pa.Table) else pa.Table.from_pylist(list(items or []))
        pq.write_table(table, tmp / ITEMS)
    return Path(output_dir)
