"""Model labels, rules-before-dedup, shaping and lineage through the real pipeline on local Ray."""
from __future__ import annotations

import json
import random

import pyarrow.dataset as pads
import pytest

from curate.config import merge_config, parse_config
from curate.pipeline import run_curate
from curate.sample_crawl import paragraphs
from schemas.funnel import read_accounting

pytestmark = pytest.mark.slow  # one curate run with the model stages: ~40-60 s on 2 busy cores

SPAM = "Best online casino bonus, jackpot every hour, sports betting tips and a payday loan. Visit our casino!"


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("labels")
    rng = random.Random(5)
    article = "\n\n".join(paragraphs(rng, "en", 6))
    docs = [
        # One cluster: the longest copy carries casino spam, which the sensitive_content rule drops.
        {"id": "copy-spam", "text": article + "\n\n" + SPAM + " " + SPAM},
        {"id": "copy-a", "text": article},
        {"id": "copy-b", "text": article.replace(" the ", " this ", 1)},
    ]
    docs += [{"id": f"en-{i}", "text": "\n\n".join(paragraphs(rng, "en", 5))} for i in range(6)]
    docs += [{"id": f"de-{i}", "text": "\n\n".join(paragraphs(rng, "de", 5))} for i in range(4)]
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    config = parse_config(merge_config({
        "dedup": {"threshold": 0.7},
        "ppl_bucket": {"enabled": True},
        "shaping": {"enabled": True, "caps": {"lang": {"de": 2}}, "prefer": "quality_score",
                    "max_chars": 600, "order_by": "ppl", "descending": False},
    }))
    run_curate(config, [str(source)], root / "out")
    return root / "out", source, docs


def _rows(directory):
    return {r["id"]: r for r in pads.dataset(str(directory), format="parquet").to_table().to_pylist()}


def test_labels_buckets_and_model_identity(labelled_run):
    out, _, _ = labelled_run
    kept = _rows(out / "data")
    assert all(r["ppl"] > 1 and r["ppl_bucket"] in ("head", "middle", "tail") and 0 <= r["quality_score"] <= 1
               for r in kept.values())
    _, run = read_accounting(out)
    models = {m.split(":")[0]: m for m in run["models"]}
    assert {"langid", "perplexity", "quality"} <= set(models)
    assert "reference-lm" in models["perplexity"] and "sha256 " in models["perplexity"]
    assert "perplexity" in (out / "card" / "card.md").read_text()


def test_cluster_survives_when_its_longest_copy_fails_a_rule(labelled_run):
    out, _, _ = labelled_run
    kept, dropped = _rows(out / "data"), _rows(out / "dropped")
    assert dropped["copy-spam"]["drop_reason"] == "sensitive_content"
    copies = [i for i in ("copy-a", "copy-b") if i in kept]
    assert len(copies) == 1
    other = ({"copy-a", "copy-b"} - set(copies)).pop()
    assert dropped[other]["drop_stage"] == "dedup" and dropped[other]["duplicate_of"] == copies[0]


def test_shaping_caps_truncates_and_counts(labelled_run):
    out, _, _ = labelled_run
    kept, dropped = _rows(out / "data"), _rows(out / "dropped")
    assert sum(1 for r in kept.values() if r["lang"] == "de") == 2
    capped = [r for r in dropped.values() if r["drop_reason"] == "shaping_cap:lang=de"]
    assert len(capped) == 2
    # The highest quality_score rows of the capped value are the ones kept.
    assert min(r["quality_score"] for r in kept.values() if r["lang"] == "de") >= max(r["quality_score"] for r in capped)
    assert all(len(r["text"]) <= 600 for r in kept.values())
    assert all(r["truncated_from_chars"] > 600 for r in kept.values() if r["truncated_from_chars"] is not None)
    stages, _ = read_accounting(out)
    assert {s.stage: s.dropped for s in stages}["shaping"] == {"shaping_cap:lang=de": 2}


def test_trace_of_a_dropped_and_a_deduplicated_document(labelled_run, capsys):
    from jobs.card import main

    out, source, _ = labelled_run
    kept = _rows(out / "data")
    survivor = "copy-a" if "copy-a" in kept else "copy-b"
    duplicate = "copy-b" if survivor == "copy-a" else "copy-a"
    offsets = {}
    position = 0
    for line in source.read_bytes().splitlines(keepends=True):
        offsets[json.loads(line)["id"]] = position
        position += len(line)

    main([str(out), "--trace", "copy-spam"])
    text = capsys.readouterr().out
    assert f"input    {source} @ byte {offsets['copy-spam']}" in text
    assert "outcome  dropped by filter: sensitive_content" in text
    assert "sensitive_ratio=" in text and "ppl=" in text and "quality_score=" in text
    assert "dedup        (not reached: dropped earlier)" in text

    main([str(out), "--trace", duplicate])
    text = capsys.readouterr().out
    assert f"@ byte {offsets[duplicate]}" in text
    assert "outcome  dropped by dedup: near_duplicate" in text
    assert f"this one: duplicate of {survivor}" in text
    assert f"{survivor}  kept (survivor)" in text and f"{duplicate}  dropped: near_duplicate" in text
    with pytest.raises(ValueError, match="neither"):
        main([str(out), "--trace", "no-such-doc"])
