"""Seed tasks in the Self-Instruct JSONL format.

One object per line: {"id", "name", "instruction", "instances": [{"input", "output"}],
"is_classification"}. A malformed line is an error naming the file, the line and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class SeedError(ValueError):
    pass


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool
    name: str = ""


def _field(obj: dict, name: str, type_, where: str):
    if name not in obj:
        raise SeedError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, type_):
        raise SeedError(f"{where}: field {name!r} must be {type_.__name__}, got {type(value).__name__}")
    return value


def parse_seed_line(line: str, where: str) -> SeedTask:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SeedError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise SeedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    instruction = _field(obj, "instruction", str, where).strip()
    if not instruction:
        raise SeedError(f"{where}: field 'instruction' is empty")
    raw_instances = _field(obj, "instances", list, where)
    if not raw_instances:
        raise SeedError(f"{where}: field 'instances' is empty")
    instances = []
    for j, inst in enumerate(raw_instances):
        if not isinstance(inst, dict):
            raise SeedError(f"{where}: instances[{j}] must be an object")
        instances.append(Instance(_field(inst, "input", str, f"{where}: instances[{j}]"),
                                  _field(inst, "output", str, f"{where}: instances[{j}]")))
    is_cls = obj.get("is_classification", False)
    if not isinstance(is_cls, bool):
        raise SeedError(f"{where}: field 'is_classification' must be true or false")
    seed_id = obj.get("id", "")
    return SeedTask(id=str(seed_id) if seed_id else "", instruction=instruction, instances=tuple(instances),
                    is_classification=is_cls, name=str(obj.get("name", "")))


def load_seeds(path: str | Path) -> list[SeedTask]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"seed file {path} does not exist")
    tasks = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            task = parse_seed_line(line, f"{path}:{lineno}")
            tasks.append(task if task.id else SeedTask(f"seed_line_{lineno}", task.instruction, task.instances,
                                                       task.is_classification, task.name))
    if not tasks:
        raise SeedError(f"{path}: no seed tasks")
    ids = [t.id for t in tasks]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise SeedError(f"{path}: seed id {dup!r} appears more than once")
    return tasks
