"""The token cache read straight from its Parquet files (the launcher's local fast path, issue 17):
the same rows, in the same order, as the cached read through Ray Data, split equally between workers."""
from __future__ import annotations

import pyarrow.parquet as pq

from train.ingest import TRAIN_ROW_SCHEMA, _rows_table, cached_rows


def _packed(i: int) -> dict:
    n = 3 + i % 5
    ids = [100 * i + k for k in range(n)]
    return {"input_ids": ids, "labels": [-100] + ids[1:], "position_ids": list(range(n)), "num_examples": 1,
            "num_truncated": i % 2}


def _cache(tmp_path, sizes: list[int]) -> tuple[list[str], list[dict]]:
    """Parquet files of `sizes` rows each, as token_cache writes them; returns (files, all rows in order)."""
    files, rows, start = [], [], 0
    for index, size in enumerate(sizes):
        part = [_packed(start + k) for k in range(size)]
        path = tmp_path / f"part-{index:05d}.parquet"
        pq.write_table(_rows_table(part), path, row_group_size=4)  # several row groups per file
        files.append(str(path))
        rows.extend(part)
        start += size
    return files, rows


def _as_lists(rows) -> list[tuple]:
    return [(list(r["input_ids"]), list(r["labels"]), list(r["position_ids"]), r["num_examples"], r["num_tokens"],
             r["num_truncated"]) for r in rows]


def _expected(rows) -> list[tuple]:
    return [(r["input_ids"], r["labels"], r["position_ids"], 1, len(r["input_ids"]), r["num_truncated"]) for r in rows]


def test_one_worker_reads_every_row_in_order_each_pass(tmp_path):
    files, rows = _cache(tmp_path, [70, 70, 13])
    one_pass = cached_rows(files)
    assert _as_lists(one_pass()) == _expected(rows)
    assert _as_lists(one_pass()) == _expected(rows)  # a new epoch opens the files again
    first = next(iter(one_pass()))
    assert first["input_ids"].dtype.name == "int32" and set(first) == set(TRAIN_ROW_SCHEMA.names)


def test_workers_get_equal_contiguous_shares_and_the_remainder_is_dropped(tmp_path):
    files, rows = _cache(tmp_path, [70, 70, 13])  # 153 rows
    for world in (2, 3, 4):
        share = len(rows) // world
        shares = [_as_lists(cached_rows(files, rank, world)()) for rank in range(world)]
        assert [len(s) for s in shares] == [share] * world
        assert [row for s in shares for row in s] == _expected(rows[: share * world])


def test_an_empty_cache_yields_nothing(tmp_path):
    path = tmp_path / "part-00000.parquet"
    pq.write_table(TRAIN_ROW_SCHEMA.empty_table(), path)
    assert list(cached_rows([str(path)])()) == []
