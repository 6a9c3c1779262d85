"""Command-line plumbing shared by every job: YAML config + `key=value` overrides, Ray start-up."""
from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge `update` into a copy of `base` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML: {exc}") from None
    node = config
    for key in keys[:-1]:
        if not isinstance(node.setdefault(key, {}), dict):
            raise ConfigError(f"override {assignment!r}: {key!r} is not a mapping")
        node = node[key]
    node[keys[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | None = None, defaults: dict | None = None) -> dict:
    """defaults <- YAML file <- overrides."""
    config = copy.deepcopy(defaults or {})
    if path:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        config = deep_merge(config, loaded)
    for assignment in overrides or []:
        apply_override(config, assignment)
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value overrides, e.g. filter.min_words=80")


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), else start an embedded Ray."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if not os.environ.get("RAY_ADDRESS"):
        # address="local": a plain ray.init() would join any `ray start` cluster left on this
        # machine and then refuse num_cpus; without RAY_ADDRESS the job is documented as embedded.
        kwargs["address"] = "local"
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


def run_main(main) -> None:
    """Run a job's main(); turn expected user errors into one clear line and exit code 2."""
    import sys

    try:
        main()
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
