"""Hand-made datasets for the card tests: kept and dropped document tables written like a job would."""
from __future__ import annotations

import random
from pathlib import Path

from curate.stage import mark_drops
from schemas.dataset_io import atomic_output_dir, write_parquet
from schemas.funnel import StageCount, write_accounting
from schemas.validate import table_from_rows

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()


def document_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 400))]
        text = " ".join(words)
        if i % 17 == 0:
            text += " <script>alert('x')</script> & \"quotes\""  # must come out escaped in HTML
        rows.append({
            "id": f"doc-{i:05d}", "text": text, "url": f"https://example.org/{i}",
            "lang": rng.choice(["en", "en", "en", "de", "fr"]), "lang_score": rng.random(),
            "gopher_word_count": len(words), "perplexity": rng.lognormvariate(5, 0.6),
            "quality_score": None if i % 11 == 0 else rng.random(),
            "dup_cluster_size": rng.choice([1, 1, 1, 2, 3, 8]), "domain": rng.choice(["example.org", "a.com", "b.net"]),
        })
    return rows


def write_document_dataset(directory: Path, n: int = 300, seed: int = 0, min_words: int = 50,
                           accounting: bool = True, files: int = 2) -> tuple[Path, list[StageCount]]:
    """Two drop stages (gopher word count, perplexity) over `n` rows; kept/dropped split over files."""
    table = table_from_rows(document_rows(n, seed), "document")
    import pyarrow.compute as pc

    table = mark_drops(table, pc.less(table.column("gopher_word_count"), min_words), "gopher_min_words", "gopher")
    table = mark_drops(table, pc.greater(table.column("perplexity"), 400.0), "perplexity_too_high", "perplexity")
    dropped_mask = pc.is_valid(table.column("drop_reason"))
    kept = table.filter(pc.invert(dropped_mask)).drop_columns(["drop_reason", "drop_stage"])
    dropped = table.filter(dropped_mask)
    stages, rows_in = [], n
    for stage, reason in (("gopher", "gopher_min_words"), ("perplexity", "perplexity_too_high")):
        d = pc.sum(pc.equal(dropped.column("drop_reason"), reason)).as_py() or 0
        stages.append(StageCount(stage, rows_in, rows_in - d, {reason: d} if d else {}, seconds=0.5))
        rows_in -= d
    with atomic_output_dir(directory) as tmp:
        step = max(1, -(-kept.num_rows // files))
        for i in range(files):
            write_parquet(kept.slice(i * step, step), tmp / "data", "document", f"part-{i:05d}.parquet")
        write_parquet(dropped, tmp / "dropped", "document")
        if accounting:
            write_accounting(tmp, stages, {"job": "curate", "config": {"gopher": {"min_words": min_words}},
                                           "inputs": [str(Path(__file__))], "models": ["lid.176.ftz"]})
    return directory, stages
