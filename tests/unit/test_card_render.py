"""Rendered cards: HF front matter, escaped offline HTML, re-render from card.arrow, compare, bad input."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from jobs.card import main as card_job
from schemas.card import CardVersionError, read_card, write_card
from schemas.card_compare import compare_cards
from schemas.card import rerender
from schemas.card_render import size_category
from schemas.dataset_io import atomic_output_dir, read_parquet_dir, write_parquet
from schemas.funnel import StageCount
from schemas.validate import table_from_rows
from tests.unit.card_data import write_document_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same input filtered with two gopher thresholds, as after changing one setting."""
    base = tmp_path_factory.mktemp("runs")
    a, _ = write_document_dataset(base / "min50", n=200, min_words=50)
    b, _ = write_document_dataset(base / "min120", n=200, min_words=120)
    write_card(a, "document")
    write_card(b, "document")
    return a, b


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def test_markdown_front_matter_is_a_valid_dataset_card(two_runs):
    from huggingface_hub import DatasetCard

    a, _ = two_runs
    text = (a / "card" / "card.md").read_text(encoding="utf-8")
    meta = front_matter(text)
    for key in ("license", "language", "size_categories", "task_categories"):
        assert key in meta, key
    langs = pc.value_counts(read_parquet_dir(a / "data").column("lang")).to_pylist()
    assert set(meta["language"]) == {r["values"] for r in langs}
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    card = DatasetCard(text)  # the Hub's own parser accepts it
    assert card.data.license == meta["license"]
    assert "## Funnel" in card.text and "![funnel](funnel.png)" in card.text


@pytest.mark.parametrize("n,bucket", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (123_456, "100K<n<1M"),
                                      (5 * 10**12, "n>1T")])
def test_size_categories_are_hub_buckets(n, bucket):
    assert size_category(n) == bucket


def test_html_is_offline_and_references_existing_pngs(two_runs):
    a, _ = two_runs
    html = (a / "card" / "card.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "card.html must not load from the network"
    images = re.findall(r'<img src="([^"]+)"', html)
    assert "funnel.png" in images and len(images) >= 5
    for name in images:
        assert (a / "card" / name).stat().st_size > 1000, name
    assert 'id="funnel-table"' in html and "gopher_min_words" in html


def test_html_escapes_data(tmp_path):
    rows = [{"id": f"x{i}", "text": f"<script>alert({i})</script> & <b>bold</b>", "lang": "<i>en</i>"} for i in range(3)]
    table = table_from_rows(rows, "document")
    with atomic_output_dir(tmp_path / "ds") as tmp:
        write_parquet(table, tmp / "data", "document")
    card_dir = write_card(tmp_path / "ds", "document", funnel=[StageCount("read<x>", 3, 3)])
    html = (card_dir / "card.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<b>bold" not in html and "<i>en" not in html and "read<x>" not in html
    assert "&lt;script&gt;alert(0)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_rerender_from_card_arrow_alone(two_runs, tmp_path):
    a, _ = two_runs
    only = tmp_path / "copy" / "card"
    only.mkdir(parents=True)
    shutil.copy(a / "card" / "card.arrow", only / "card.arrow")
    rerender(tmp_path / "copy")
    assert (only / "card.html").read_text(encoding="utf-8") == (a / "card" / "card.html").read_text(encoding="utf-8")
    assert (only / "card.md").read_text(encoding="utf-8") == (a / "card" / "card.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in only.glob("*.png")) == sorted(p.name for p in (a / "card").glob("*.png"))


def test_compare_shows_funnel_and_distribution_deltas(two_runs, tmp_path):
    a, b = two_runs
    card_a, card_b = read_card(a / "card" / "card.arrow"), read_card(b / "card" / "card.arrow")
    html_path, md_path = compare_cards(a, b)
    assert html_path == a / "card" / "compare-min120.html" and md_path.exists()
    md = md_path.read_text(encoding="utf-8")
    gopher = lambda c: next(s for s in c.table("funnel").to_pylist() if s["stage"] == "gopher")  # noqa: E731
    delta = gopher(card_b)["kept"] - gopher(card_a)["kept"]
    assert delta < 0
    assert re.search(rf"\| gopher \| 200 \| 200 \| \+0 \| {gopher(card_a)['kept']} \| {gopher(card_b)['kept']} \| {delta:+d} \|", md), md
    assert "| gopher | gopher_min_words |" in md
    mean = lambda c: next(r["mean"] for r in c.table("stats").to_pylist()  # noqa: E731
                          if r["split"] == "kept" and r["column"] == "gopher_word_count")
    assert mean(card_b) > mean(card_a)
    assert f"{mean(card_b) - mean(card_a):+.4g}" in md
    html = html_path.read_text(encoding="utf-8")
    for name in re.findall(r'<img src="([^"]+)"', html):
        assert (html_path.parent / name).exists()
    # An explicit output path, through the job's command line; re-rendering keeps earlier comparisons.
    card_job([str(a), "--compare", str(b), "--output", str(tmp_path / "cmp.html")])
    assert (tmp_path / "cmp.html").exists() and (tmp_path / "cmp.md").exists()
    card_job([str(a)])
    assert html_path.exists()


def test_empty_dataset_renders_zero_rows(tmp_path):
    empty = table_from_rows([], "document")
    with atomic_output_dir(tmp_path / "empty") as tmp:
        write_parquet(empty, tmp / "data", "document")
    card_dir = write_card(tmp_path / "empty", "document", funnel=[StageCount("read", 0, 0)])
    card = read_card(card_dir)
    assert card.rows_kept == 0 and card.table("samples").num_rows == 0
    assert "<b>0 rows</b>" in (card_dir / "card.html").read_text(encoding="utf-8")
    md = (card_dir / "card.md").read_text(encoding="utf-8")
    assert "**0 rows**" in md and front_matter(md)["size_categories"] == ["n<1K"]
    compare_cards(tmp_path / "empty", tmp_path / "empty", tmp_path / "self.html")


def test_newer_card_version_and_missing_file_give_clear_errors(two_runs, tmp_path):
    a, _ = two_runs
    target = tmp_path / "ds" / "card"
    target.mkdir(parents=True)
    table = pa.ipc.open_file(str(a / "card" / "card.arrow")).read_all()
    newer = table.replace_schema_metadata({**table.schema.metadata, b"raymill.card_version": b"99"})
    with pa.OSFile(str(target / "card.arrow"), "wb") as sink, pa.ipc.new_file(sink, newer.schema) as w:
        w.write_table(newer)
    with pytest.raises(CardVersionError, match=r"card\.arrow has card version 99, newer than .*\(1\)"):
        rerender(tmp_path / "ds")
    (target / "card.arrow").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(target / "card.arrow"))):
        rerender(tmp_path / "ds")
    # The command line turns it into one line on stderr and exit status 2.
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "card.py"), str(tmp_path / "ds")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and "card.arrow not found" in out.stderr


def test_newer_dataset_schema_version_is_refused(tmp_path):
    table = table_from_rows([{"id": "a", "text": "hello"}], "document")
    table = table.replace_schema_metadata({b"raymill.kind": b"document", b"raymill.version": b"7"})
    (tmp_path / "ds" / "data").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "ds" / "data" / "part-0.parquet")
    with pytest.raises(ValueError, match=r"part-0\.parquet has document schema version 7"):
        write_card(tmp_path / "ds", "document", funnel=[])
