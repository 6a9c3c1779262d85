"""Stage registry: stage name -> Workflow, everything the launcher needs to know about a stage.

A workflow holds a stage's facts in one place: the kind of its training set's card, the
dataclass of its `data_options` (checked before Ray starts), how it builds its dataset
(tokenized once, with the stats and card rows from the same pass) and the Ray Train
worker body that trains on it. A new stage is one module that calls
`register_stage(Workflow(...))` plus one line in `_BUILTIN` below, so that
`jobs/train.py --stage NAME` finds it.
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
    # Kind of the training set's card (schemas.card): document | sft | preference | prompt.
    card_kind: str = "sft"
    # Collate for the rows of this stage's dataset (None: the worker's default).
    collate: Callable | None = None
    # Dataclass of the stage's `data_options`; None = the stage takes none.
    options: type | None = None
    # Checks of the stage's own that must fail before Ray starts (e.g. an empty prompt set). A
    # stage with one reads and checks its own data there: the launcher's generic check of the
    # data files (which must sniff a training-record format) is skipped for it.
    preflight: Callable[[Any], None] | None = None
    # (cfg, dataset, stats) -> optimizer steps, where a step is not one micro-batch per worker.
    count_steps: Callable[[Any, Any, Any], int] | None = None
    # The worker evaluates an "eval" dataset during training (val_size / eval_data).
    evaluates: bool = False

    def parse_options(self, cfg: Any) -> Any:
        """The stage's options from `data_options`, or a TrainConfigError naming the bad key."""
        from schemas.options import OptionsError, from_mapping
        from train.args import TrainConfigError

        raw = dict(cfg.data.data_options or {})
        if self.options is None:
            if raw:
                raise TrainConfigError(f"stage {self.name!r} takes no data_options, got {sorted(raw)}")
            return None
        if hasattr(self.options, "from_config"):  # an options class that parses the config itself
            return self.options.from_config(cfg)
        try:
            options = from_mapping(self.options, raw, f"data_options (stage {self.name})")
            if hasattr(options, "check"):
                options.check(cfg)
        except (OptionsError, ValueError) as exc:
            raise TrainConfigError(str(exc)) from None
        return options


def register_stage(workflow: Workflow) -> Workflow:
    _REGISTRY[workflow.name] = workflow
    return workflow


def stage_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_workflow(name: str) -> Workflow:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(stage_names())}")
    return _REGISTRY[name]
