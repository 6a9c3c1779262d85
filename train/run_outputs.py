"""Run-directory outputs written by the driver: loss/LR plots, run summary, data stats and cards."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from schemas.dataset_io import write_json

# The rank-0 worker's own phase times (train.callbacks.MetricsJsonlCallback), in RUN/logs/.
WORKER_PHASES_FILE = "worker_phases.json"


def process_start_time() -> float:
    """Unix time at which this process started (Linux: /proc/self/stat, to the clock tick),
    so a run's timings include the interpreter's start and the imports; elsewhere, now."""
    try:
        after_paren = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(after_paren[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


class PhaseClock:
    """Named points of a run in wall-clock time, reported as seconds since the process started.

    A short run is mostly fixed cost (Ray start-up, data, the worker group, model loading,
    outputs): run_summary.json's `timings_s` says where it went, with the rank-0 worker's own
    points (prefixed `worker_`) merged in from RUN/logs/worker_phases.json."""

    def __init__(self) -> None:
        self.origin = process_start_time()
        self.points: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.points[name] = time.time()

    def report(self, run_dir: Path | None = None) -> dict[str, float]:
        points = dict(self.points)
        phases = Path(run_dir) / "logs" / WORKER_PHASES_FILE if run_dir is not None else None
        if phases is not None and phases.is_file():
            try:
                points.update({f"worker_{k}": float(v) for k, v in json.loads(phases.read_text(encoding="utf-8")).items()})
            except (ValueError, TypeError):
                pass  # a torn file from a killed worker: the driver's points still stand
        return {k: round(v - self.origin, 3) for k, v in sorted(points.items(), key=lambda kv: kv[1])}


# The job's one clock: jobs/train.py and the launcher mark it, write_run_outputs reports it.
RUN_CLOCK = PhaseClock()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_series(records: list[dict], key: str, path: Path, ylabel: str) -> bool:
    """One PNG of `key` against the optimizer step.

    A detached `Figure` saved straight to PNG (Agg): no pyplot, so no backend selection and no
    figure manager to set up and tear down, headless wherever the run ends."""
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not points:
        return False
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    steps, values = zip(*points)
    ax.plot(steps, values, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    # bbox_inches="tight" keeps the axis labels inside the image, which tight_layout() did before
    fig.savefig(path, format="png", bbox_inches="tight")
    return True


def copy_data_cards(data_paths: list[str], run_dir: Path, kind: str | None = None) -> list[str]:
    """The data card of each input dataset directory into run_dir/data_cards/<i>-<name>/.

    A card written by curate/synth (`<dataset>/card/`) is copied; a dataset directory
    without one gets its card computed here (written into the run dir, never into the
    input). Inputs that are not dataset directories (single files, the embedded sample)
    have no card; a card that cannot be built is noted, not fatal."""
    import logging

    from schemas.card import CARD_DIR, compute_card, store_card

    notes = []
    for index, data_path in enumerate(data_paths or []):
        source = Path(str(data_path))
        target = Path(run_dir) / "data_cards" / f"{index}-{source.name}"
        if (source / CARD_DIR).is_dir():
            shutil.copytree(source / CARD_DIR, target, dirs_exist_ok=True)
            notes.append(str(target))
        elif (source / "data").is_dir() and kind:
            try:
                store_card(compute_card(source, kind), target)
                notes.append(str(target))
            except Exception as exc:  # a card is a report: never fail the training run over it
                logging.getLogger(__name__).warning("no data card for %s: %s", source, exc)
    return notes


def _as_dict(stats: Any) -> Any:
    if stats is None:
        return None
    for method in ("as_dict", "to_dict"):
        if hasattr(stats, method):
            return getattr(stats, method)()
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    return stats if isinstance(stats, dict) else str(stats)


def write_run_outputs(run_dir: Path, cfg, stats: Any, max_steps: int, metrics: dict | None,
                      checkpoint: str | None, error: str | None = None) -> dict:
    """Plots, effective config, data stats and run_summary.json; returns the summary."""
    run_dir = Path(run_dir)
    (run_dir / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    if stats is not None:
        write_json(_as_dict(stats), run_dir / "data_stats.json")
    records = read_metrics(run_dir / "metrics.jsonl")
    curves = (("loss", "loss.png", "training loss"), ("learning_rate", "lr.png", "learning rate"),
              ("eval_loss", "eval_loss.png", "eval loss"))
    plots = [name for key, name, label in curves if plot_series(records, key, run_dir / name, label)]
    losses = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
    summary = {
        "stage": cfg.launch.stage, "finetuning_type": cfg.finetuning.finetuning_type, "max_steps": max_steps,
        "final_metrics": metrics, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "latest_checkpoint": checkpoint, "model_dir": str(run_dir / "model") if (run_dir / "model").exists() else None,
        "plots": plots, "data_card": str(run_dir / "train_data" / "card") if (run_dir / "train_data" / "card").is_dir()
        else None, "error": error,
    }
    RUN_CLOCK.mark("outputs_written")
    summary["timings_s"] = RUN_CLOCK.report(run_dir)
    write_json(summary, run_dir / "run_summary.json")
    return summary
