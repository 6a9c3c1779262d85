"""Stage registry: stage name -> Workflow (how to build its dataset, what each Ray Train worker runs).

A new stage (rm, dpo, ...) adds itself with `register_stage(Workflow(...))` in its
module and one line in `_BUILTIN` below, so `jobs/train.py --stage NAME` finds it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

# Stage modules imported on first use, so the registry does not pull in every trainer.
_BUILTIN = {"pt": "train.stages.pt", "sft": "train.stages.sft", "rm": "train.stages.rm", "dpo": "train.stages.dpo",
            "ppo": "train.stages.ppo", "grpo": "train.stages.grpo"}
_REGISTRY: dict[str, "Workflow"] = {}


@dataclass(frozen=True)
class Workflow:
    name: str
    # (TrainConfig) -> (ray.data.Dataset of training rows, data stats or None)
    build_dataset: Callable[[Any], tuple[Any, Any]]
    # Ray Train's train_loop_per_worker; receives the launcher's loop config dict.
    train_loop: Callable[[dict], None]
    # Collate for the rows of this stage's dataset (None: the worker's default).
    collate: Callable | None = None


def register_stage(workflow: Workflow) -> Workflow:
    _REGISTRY[workflow.name] = workflow
    return workflow


def add_builtin(name: str, module: str) -> None:
    """Let a stage living in another module be found by name (imported lazily)."""
    _BUILTIN[name] = module


def stage_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_workflow(name: str) -> Workflow:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(stage_names())}")
    return _REGISTRY[name]
