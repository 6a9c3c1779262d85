"""What a Ray Train RL stage is: build the prompt dataset on the driver, run RLLoop in each worker.

`ppo` and `grpo` are two Workflows made here that differ only in their default options
(train.rl.options.STAGE_DEFAULTS); every estimator runs under either name.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from train.args import TrainConfig


def build_dataset_for(stage: str) -> Callable:
    def build_dataset(cfg: TrainConfig):
        from train.rl.options import rl_options
        from train.rl.prompts import build_prompt_dataset

        return build_prompt_dataset(cfg, rl_options(cfg.data.data_options, stage))

    return build_dataset


def run_rl(cfg: TrainConfig, rows: Callable, run_dir: str | Path, max_steps: int, resume_from: str | None = None,
           extra_callbacks: list | None = None, rank: int = 0, report: Callable | None = None) -> dict:
    """Train on this worker's prompts (`rows()` yields them). `max_steps` from the launcher counts
    HF micro-batches; an RL step takes `prompts_per_step` prompts, so the loop counts its own
    steps (cfg.training.max_steps when set). HF callbacks do not apply to this loop."""
    from train.rl.loop import RLLoop, total_steps
    from train.rl.options import rl_options

    options = rl_options(cfg.data.data_options, cfg.launch.stage)
    prompts = [dict(row) for row in rows()]
    for row in prompts:
        row["prompt_ids"] = [int(i) for i in row["prompt_ids"]]
    loop = RLLoop(cfg, options, prompts, run_dir, total_steps(cfg, options, len(prompts)), report=report)
    return loop.run(resume_from)


def _ray_report(metrics: dict, checkpoint_dir: str | None, every_rank: bool = False) -> None:
    """Report a step's metrics; rank 0's checkpoint directory holds the whole checkpoint, unless
    `every_rank` (DeepSpeed: each rank's directory holds its ZeRO partition, and Ray Train merges
    the directories of all ranks into one checkpoint)."""
    import ray.train

    checkpoint = None
    if checkpoint_dir and (every_rank or ray.train.get_context().get_world_rank() == 0):
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, checkpoint=checkpoint)


def train_loop(loop_config: dict) -> None:
    """Ray Train `train_loop_per_worker` of the RL stages."""
    from train.worker import run_in_ray_worker

    def run(cfg, rows, run_dir, max_steps, **kwargs) -> dict:
        report = functools.partial(_ray_report, every_rank=bool(cfg.launch.deepspeed))
        return run_rl(cfg, rows, run_dir, max_steps, report=report, **kwargs)

    run_in_ray_worker(run, loop_config)


def check_prompts(cfg: TrainConfig) -> None:
    """Preflight (before Ray): the DeepSpeed config and the rollout engine can run, and the prompt
    set reads and keeps at least one prompt per worker."""
    from train.rl.options import rl_options
    from train.rl.prompts import prompt_rows

    options = rl_options(cfg.data.data_options, cfg.launch.stage)
    check_deepspeed(cfg)
    if options.rollout_engine == "vllm":
        from train.rl.vllm_rollout import check_vllm_available

        check_vllm_available(cfg.launch.use_gpu)
    prompt_rows(cfg, options)


def check_deepspeed(cfg: TrainConfig) -> None:
    """Preflight of `--deepspeed` for the RL loop: a known config (by name or path) of ZeRO stage 0, 1 or 2."""
    from train.args import TrainConfigError

    if not cfg.launch.deepspeed:
        return
    from train.rl.optimizer_steps import SUPPORTED_ZERO_STAGES, zero_stage
    from train.worker import deepspeed_config

    stage = zero_stage(deepspeed_config(cfg.launch.deepspeed, cfg.launch.use_gpu))
    if stage not in SUPPORTED_ZERO_STAGES:
        raise TrainConfigError(f"--deepspeed {cfg.launch.deepspeed}: the {cfg.launch.stage} stage runs ZeRO stage 0, 1 "
                               f"or 2, not {stage}: ZeRO-3 partitions the weights, which the rollout's generate and "
                               "the checkpoint's weight copy read whole; use zero2 (or zero2_offload)")


def count_steps(cfg: TrainConfig, dataset, stats) -> int:
    """RL steps: each takes `prompts_per_step` prompts per worker (not HF micro-batches)."""
    from train.rl.loop import total_steps
    from train.rl.options import rl_options

    prompts_per_worker = int(stats["kept"]) // cfg.launch.num_workers
    return total_steps(cfg, rl_options(cfg.data.data_options, cfg.launch.stage), prompts_per_worker)


def make_workflow(stage: str):
    from train.rl.options import STAGE_OPTIONS
    from train.stages import Workflow

    return Workflow(name=stage, build_dataset=build_dataset_for(stage), train_loop=train_loop, card_kind="prompt",
                    options=STAGE_OPTIONS[stage], preflight=check_prompts, count_steps=count_steps)
