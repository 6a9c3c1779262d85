"""Row accounting: per stage, rows in = rows kept + rows dropped (by reason).

Every job that writes a dataset writes `DIR/accounting.json` with this content; the
dataset card renders it as the funnel.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACCOUNTING_FILE = "accounting.json"
ACCOUNTING_VERSION = 1


@dataclass
class StageCount:
    stage: str
    rows_in: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def check(self) -> None:
        lost = self.rows_in - self.kept - sum(self.dropped.values())
        if lost:
            raise ValueError(f"stage {self.stage!r}: rows_in={self.rows_in} != kept={self.kept} + "
                             f"dropped={sum(self.dropped.values())} ({lost:+d} rows unaccounted)")


def write_accounting(directory: str | Path, stages: list[StageCount], run: dict) -> Path:
    """Check that every stage adds up, then write `directory/accounting.json` atomically."""
    for s in stages:
        s.check()
    path = Path(directory) / ACCOUNTING_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    payload = {"version": ACCOUNTING_VERSION, "run": run, "stages": [asdict(s) for s in stages]}
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def read_accounting(directory: str | Path) -> tuple[list[StageCount], dict]:
    path = Path(directory) / ACCOUNTING_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {directory} a raymill dataset directory?")
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("version", 0) > ACCOUNTING_VERSION:
        raise ValueError(f"{path} has version {payload.get('version')}, newer than this raymill "
                         f"understands ({ACCOUNTING_VERSION}); upgrade raymill")
    return [StageCount(**s) for s in payload["stages"]], payload.get("run", {})
