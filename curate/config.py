"""The curate job's configuration: `default_config.yaml` <- a user YAML <- key=value overrides
(the job merges them with jobs.common.load_config; library callers use `merge_config`).

`CurateConfig` is the typed view the pipeline uses. Which stages exist, in which order,
and which keys each section may hold come from curate.registry; a section's keys are
checked here, without building the stage (no model loads in the driver).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.heuristics import DEFAULT_THRESHOLDS
from curate.registry import STAGE_ORDER, STAGES
from schemas.options import OptionsError, check_keys, from_mapping

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")

TOP_LEVEL_KEYS = {"input", "output", "cache_dir", "read", "thresholds", "runtime", *STAGE_ORDER}
AUTO = "auto"  # a stage's `enabled:` value: on when the stages it needs are on (StageSpec.needs)


class CurateConfigError(ValueError):
    pass


def default_config() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))


@dataclass
class Runtime:
    workers: int | None = None
    batch_size: int = 32
    num_cpus: int | None = None
    # Logical CPUs per pipeline actor. Below 1 on purpose: with one actor per CPU and a
    # whole CPU each, Ray could never schedule the read and write tasks beside them.
    actor_cpus: float = 0.5
    # Logical CPUs per task (reading, task-pool stage segments, the final tag + write).
    # With `workers` = all CPUs, actors take half of them; 0.25 lets one read and one
    # write task run beside them even on a 1-CPU cluster (a whole CPU per task would
    # leave the reader waiting for a CPU the actor holds: the job would hang).
    task_cpus: float = 0.25
    # Object-store memory the pipeline's in-flight blocks may use, per worker (MiB; None =
    # Ray Data's default share of the store). Reading outruns extraction by far, so without
    # a cap the reader fills Ray Data's default budget and peak memory grows with the input.
    inflight_mb_per_worker: int | None = 64


@dataclass
class CurateConfig:
    input: Any = None
    output: str | None = None
    cache_dir: str | None = None
    read: dict = field(default_factory=dict)
    stages: dict[str, dict] = field(default_factory=dict)  # section without `enabled`, enabled ones only
    thresholds: dict = field(default_factory=dict)
    rules: list[dict] = field(default_factory=list)
    runtime: Runtime = field(default_factory=Runtime)
    raw: dict = field(default_factory=dict)  # the merged config as given, for the card

    def enabled(self, stage: str) -> bool:
        return stage in self.stages


def parse_config(cfg: dict) -> CurateConfig:
    """Check the merged config dict and build the typed view (errors name the key)."""
    if not isinstance(cfg, dict):
        raise CurateConfigError("the curate config must be a mapping")
    try:
        check_keys(cfg, TOP_LEVEL_KEYS, "curate config")
    except OptionsError as exc:
        raise CurateConfigError(str(exc)) from None
    stages: dict[str, dict] = {}
    for spec in STAGES:
        name = spec.key
        section = cfg.get(name)
        section = {} if section is None else section
        if not isinstance(section, dict):
            raise CurateConfigError(f"config section {name!r} must be a mapping, got {section!r}")
        # An absent section means the stage's declared default, not silently "on".
        enabled = section.get("enabled", spec.default_enabled)
        if enabled == AUTO and spec.needs:
            enabled = all(need in stages for need in spec.needs)  # needs come earlier in STAGES
        elif not isinstance(enabled, bool):
            choices = "true, false or auto" if spec.needs else "true or false"
            raise CurateConfigError(f"{name}.enabled must be {choices}, got {enabled!r}")
        elif enabled and (off := [need for need in spec.needs if need not in stages]):
            raise CurateConfigError(f"{name} needs the {', '.join(off)} stage's labels, which is disabled "
                                    f"(enable it, or set {name}.enabled: auto or false)")
        if enabled:
            stages[name] = {k: v for k, v in section.items() if k != "enabled"}
            try:
                # The filter's one key, its rule list, is parsed below into `rules`.
                check_keys(stages[name], {"rules"}, name) if name == "filter" else spec.check(stages[name])
            except ValueError as exc:  # an unknown key (OptionsError) or an options dataclass's value check
                raise CurateConfigError(str(exc)) from None
    thresholds = DEFAULT_THRESHOLDS.as_dict()
    extra = cfg.get("thresholds") or {}
    if not isinstance(extra, dict):
        raise CurateConfigError("thresholds must be a mapping of name: number")
    for key, value in extra.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CurateConfigError(f"thresholds.{key} must be a number, got {value!r}")
        thresholds[key] = value
    rules = []
    filter_section = stages.get("filter", {})
    for i, rule in enumerate(filter_section.get("rules") or []):
        if not isinstance(rule, dict):
            raise CurateConfigError(f"filter.rules[{i}] must be a mapping with name and expr, got {rule!r}")
        needs = rule.get("stage")
        if needs is not None and needs not in STAGE_ORDER:
            raise CurateConfigError(f"rule {rule.get('name')!r}: stage {needs!r} is not a curate stage ({', '.join(STAGE_ORDER)})")
        if needs is None or needs in stages:
            rules.append(rule)
    try:
        runtime = from_mapping(Runtime, cfg.get("runtime") or {}, "runtime")
    except OptionsError as exc:
        raise CurateConfigError(str(exc)) from None
    if runtime.workers is not None and (not isinstance(runtime.workers, int) or runtime.workers < 1):
        raise CurateConfigError(f"runtime.workers must be a positive integer or null, got {runtime.workers!r}")
    for key in ("actor_cpus", "task_cpus"):
        value = getattr(runtime, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 64:
            raise CurateConfigError(f"runtime.{key} must be a positive number, got {value!r}")
    inflight = runtime.inflight_mb_per_worker
    if inflight is not None and (isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 1):
        raise CurateConfigError(f"runtime.inflight_mb_per_worker must be a positive integer (MiB) or null, got {inflight!r}")
    if not isinstance(runtime.batch_size, int) or runtime.batch_size < 1:
        raise CurateConfigError(f"runtime.batch_size must be a positive integer, got {runtime.batch_size!r}")
    return CurateConfig(input=cfg.get("input"), output=cfg.get("output"), cache_dir=cfg.get("cache_dir"),
                        read=dict(cfg.get("read") or {}), stages=stages, thresholds=thresholds, rules=rules,
                        runtime=runtime, raw=cfg)


def merge_config(user: dict | None = None) -> dict:
    """The default config deep-merged with `user` (lists such as the rules replace, not append)."""
    from copy import deepcopy

    def merge(base: dict, update: dict) -> dict:
        out = deepcopy(base)
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = deepcopy(value)
        return out

    return merge(default_config(), user or {})
