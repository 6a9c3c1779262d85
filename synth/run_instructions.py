"""The `instructions` job: seeds -> self-instruct rounds -> SFT dataset directory."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from synth.backends import Backend
from synth.output import write_dataset
from synth.self_instruct import SelfInstruct, SelfInstructConfig
from synth.seeds import load_seeds


def default_checkpoint_dir(output: str | Path) -> Path:
    output = Path(output).resolve()
    return output.parent / f".{output.name}.checkpoint"


def sft_row(row: dict[str, Any], source: str) -> dict[str, Any]:
    """One kept instance as an SFT conversation; the self-instruct labels ride along as columns."""
    user = row["instruction"] if not row["input"] else f"{row['instruction']}\n\n{row['input']}"
    return {
        "id": row["id"], "source": source,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}],
        "instruction": row["instruction"], "input": row["input"], "output": row["output"],
        "is_classification": bool(row["is_classification"]), "instruction_id": row["instruction_id"],
        "round": int(row["round"]), "lang": row["lang"],
        "rouge_to_nearest": float(row["rouge_to_nearest"]),
        "most_similar": list(row["most_similar"]), "most_similar_rouge_l": [float(x) for x in row["most_similar_rouge_l"]],
    }


def run_instructions(seeds: str | Path, backend: Backend, output: str | Path, config: SelfInstructConfig,
                     checkpoint_dir: str | Path | None = None, keep_checkpoint: bool = False,
                     after_round: Callable[[int], None] | None = None, job_config: dict | None = None) -> Path:
    tasks = load_seeds(seeds)
    backend.check_ready()  # an unreachable server fails here, before any round starts
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(output)
    engine = SelfInstruct(tasks, backend, config)
    accepted, rejected, stages, run = engine.run(ckpt_dir, after_round=after_round)
    source = f"self_instruct:{backend.identity}"
    rows = [sft_row(r, source) for r in accepted]
    run.update({"job": "synth.instructions", "inputs": [str(Path(seeds).resolve())], "models": [backend.identity],
                "config": job_config or {}, "seed_tasks": len(tasks)})
    write_dataset(output, "sft", rows, rejected, stages, run)
    if not keep_checkpoint:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return Path(output)
