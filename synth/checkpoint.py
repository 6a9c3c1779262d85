"""Append-only round checkpoints, so an interrupted synthesis run continues where it stopped.

Each finished round writes its shards (Parquet, renamed into place) and then the
manifest; the manifest is the commit point. A round whose shards exist but that is
not in the manifest was interrupted and is simply redone (its shard names are
deterministic, so the redo overwrites them and nothing is counted twice).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset_io import write_json

MANIFEST = "manifest.json"


class CheckpointMismatch(ValueError):
    pass


def table_from_dicts(rows: list[dict]) -> pa.Table:
    """Rows with different keys as one table: pyarrow would infer the columns from the first row only."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table({n: [row.get(n) for row in rows] for n in names})


class RoundCheckpoint:
    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]):
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.rounds: list[dict[str, Any]] = []
        path = self.directory / MANIFEST
        if path.exists():
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("fingerprint") != self.fingerprint:
                raise CheckpointMismatch(
                    f"checkpoint {self.directory} was written by a run with other settings; "
                    "delete it or pass the same settings to resume")
            self.rounds = manifest["rounds"]
        else:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def next_round(self) -> int:
        return len(self.rounds)

    def commit(self, round_index: int, shards: dict[str, list[dict]], info: dict[str, Any]) -> None:
        if round_index != self.next_round:
            raise RuntimeError(f"round {round_index} committed out of order (next is {self.next_round})")
        names = {}
        for name, rows in shards.items():
            file = f"{name}-{round_index:05d}.parquet"
            tmp = self.directory / f".{file}.tmp-{os.getpid()}"
            pq.write_table(table_from_dicts(rows), tmp)
            tmp.replace(self.directory / file)
            names[name] = file
        self.rounds.append({"round": round_index, "shards": names, **info})
        write_json({"fingerprint": self.fingerprint, "rounds": self.rounds}, self.directory / MANIFEST)

    def load(self, name: str) -> list[dict]:
        """All committed rows of shard `name`, in round order."""
        rows: list[dict] = []
        for r in self.rounds:
            file = r["shards"].get(name)
            if file:
                rows.extend(pq.read_table(self.directory / file).to_pylist())
        return rows
