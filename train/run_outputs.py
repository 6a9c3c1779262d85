"""Run-directory outputs written by the driver: loss/LR plots, run summary, data stats and cards."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from schemas.dataset_io import write_json


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_series(records: list[dict], key: str, path: Path, ylabel: str) -> bool:
    """One PNG of `key` against the optimizer step (headless Agg backend)."""
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps, values = zip(*points)
    ax.plot(steps, values, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
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
    write_json(summary, run_dir / "run_summary.json")
    return summary
