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


class Funnel:
    """The one row counter every job uses: stages in order, each with rows in, kept, dropped
    by reason and seconds. Counts may arrive one row at a time (`keep`, `drop`), in bulk
    (`add`), or as the written outputs' drop columns (`from_drops`)."""

    def __init__(self, stages: list[str] | tuple[str, ...] = ()):
        self._stages: dict[str, StageCount] = {}
        for name in stages:
            self.stage(name)

    def stage(self, name: str) -> StageCount:
        if name not in self._stages:
            self._stages[name] = StageCount(name, 0, 0, {}, 0.0)
        return self._stages[name]

    def keep(self, stage: str, n: int = 1) -> None:
        self.add(stage, rows_in=n, kept=n)

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        self.add(stage, rows_in=n, dropped={reason: n})

    def timed(self, stage: str, seconds: float) -> None:
        self.stage(stage).seconds += seconds

    def add(self, stage: str, rows_in: int = 0, kept: int = 0, dropped: dict[str, int] | None = None,
            seconds: float = 0.0) -> None:
        count = self.stage(stage)
        count.rows_in += rows_in
        count.kept += kept
        for reason, n in (dropped or {}).items():
            count.dropped[reason] = count.dropped.get(reason, 0) + n
        count.seconds += seconds

    def as_list(self) -> list[StageCount]:
        return list(self._stages.values())

    @classmethod
    def from_drops(cls, kept: int, drops: dict[tuple[str, str], int], order: list[str],
                   seconds: dict[str, float] | None = None, unplaced_after: str | None = None) -> "Funnel":
        """A chained funnel from final counts: `kept` rows survived every stage, `drops` maps
        (stage, reason) to rows. Each stage's rows in are the previous stage's kept. A stage
        that `order` does not name goes right after `unplaced_after` (or at the end)."""
        by_stage: dict[str, dict[str, int]] = {}
        for (stage, reason), rows in drops.items():
            by_stage.setdefault(stage, {})
            by_stage[stage][reason] = by_stage[stage].get(reason, 0) + rows
        order = list(order)
        for name in by_stage:
            if name not in order:
                at = order.index(unplaced_after) + 1 if unplaced_after in order else len(order)
                order.insert(at, name)
        funnel, rows_in = cls(), kept + sum(drops.values())
        for name in order:
            reasons = dict(sorted(by_stage.get(name, {}).items()))
            lost = sum(reasons.values())
            funnel.add(name, rows_in=rows_in, kept=rows_in - lost, dropped=reasons,
                       seconds=round((seconds or {}).get(name, 0.0), 6))
            rows_in -= lost
        return funnel
