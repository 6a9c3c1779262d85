"""Launch a training run on Ray Train: one TorchTrainer whose workers run a HF Trainer.

Run directory (`launch.output`):
  train_config.yaml    the effective flat config
  data_stats.json      what the ingest kept and dropped (and data_cards/ copied from the inputs)
  train_data/          the training set as this run saw it (one row per record) and its card/
  ray/                 Ray Train storage: checkpoint_* (each holds checkpoint/ = a HF checkpoint)
  hf/rank<i>/          each worker's local HF checkpoints before Ray persists them
  metrics.jsonl, loss.png, lr.png, tensorboard/, model/ (final weights or LoRA adapters),
  run_summary.json     with `timings_s`: where the run's wall time went (train.run_outputs.PhaseClock)
  logs/                Ray's log lines, the session's logs (ray-session), worker_phases.json

On a multi-node cluster the run directory must be on storage every node sees
(NFS or similar), as Ray Train requires for `storage_path`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from train.args import TrainConfig, TrainConfigError
from train.data_card import try_write_training_card
from train.model_loading import check_dtype, resolve_model_path
from train.run_outputs import RUN_CLOCK, WORKER_PHASES_FILE, copy_data_cards, write_run_outputs
from train.stages import get_workflow

RAY_RUN_NAME = "ray"


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Absolute run dir; refuses to silently resume or clobber an earlier run."""
    run_dir = Path(cfg.launch.output).expanduser().resolve()
    previous = run_dir / RAY_RUN_NAME
    if cfg.launch.resume:
        if not previous.exists():
            raise TrainConfigError(f"--resume: no earlier run in {run_dir} (expected {previous})")
    elif previous.exists() or (run_dir / "metrics.jsonl").exists():
        if not cfg.launch.overwrite_output:
            raise TrainConfigError(f"{run_dir} already holds a run; pass --resume to continue it or "
                                   "overwrite_output=true to start over")
        for name in (RAY_RUN_NAME, "hf", "tensorboard", "model", "metrics.jsonl", "train_data"):
            target = run_dir / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def count_steps(cfg: TrainConfig, num_rows: int) -> int:
    """Optimizer steps for `num_train_epochs` over `num_rows` packed rows split across workers."""
    t = cfg.training
    rows_per_worker = num_rows // cfg.launch.num_workers  # Ray Data's equal split drops the remainder
    if rows_per_worker < 1:
        raise TrainConfigError(f"the training set has {num_rows} rows, fewer than num_workers={cfg.launch.num_workers}")
    micro_batches = math.ceil(rows_per_worker / t.per_device_batch_size)
    return max(1, math.ceil(micro_batches * t.num_train_epochs / t.gradient_accumulation_steps))


def resolve_for_workers(cfg: TrainConfig) -> TrainConfig:
    """Resolve names the workers would otherwise each resolve ("tiny" -> its built path)."""
    model = dataclasses.replace(cfg.model, model=resolve_model_path(cfg.model.model))
    if cfg.model.tokenizer:
        model = dataclasses.replace(model, tokenizer=resolve_model_path(cfg.model.tokenizer))
    return dataclasses.replace(cfg, model=model)


def data_paths(cfg: TrainConfig) -> list[str]:
    """The dataset paths or names of `data`, without weights."""
    from train.ingest import split_weight

    out = []
    for entry in cfg.data.data:
        if isinstance(entry, dict):
            out.append(str(entry.get("path") or entry.get("file_name") or entry.get("name")))
        else:
            out.append(split_weight(entry)[0])
    return out


def preflight(cfg: TrainConfig):
    """Checks that need no Ray, so a bad option fails in a second with one clear line instead
    of inside a worker: stage and its data_options, template, DeepSpeed config, model path,
    dtype, QLoRA's bitsandbytes, the data files. Returns the stage's workflow."""
    import importlib.util

    from train.model_loading import ModelLoadError

    workflow = get_workflow(cfg.launch.stage)
    workflow.parse_options(cfg)
    if workflow.preflight is not None:
        workflow.preflight(cfg)
    if cfg.data.template and cfg.data.template != "tokenizer":
        from train.templates import get_template

        get_template(cfg.data.template)
    if cfg.launch.deepspeed:  # train.worker loads torch and transformers' Trainer: only where there is a config to check
        from train.worker import deepspeed_config

        deepspeed_config(cfg.launch.deepspeed, cfg.launch.use_gpu)
    for name in filter(None, (cfg.model.model, cfg.model.tokenizer)):
        if name != "tiny":
            resolve_model_path(name)
    if workflow.preflight is None:  # a stage's own preflight reads its data (RL prompt records)
        check_data(cfg)
    # On a cluster the driver may lack the GPU (and the GPU-only packages) its workers have.
    if not cfg.launch.use_gpu or _driver_sees_gpu():
        if cfg.model.dtype != "fp32":  # fp32 trains anywhere: no check, and no torch import before Ray starts
            check_dtype(cfg.model.dtype, cfg.launch.use_gpu)
        if cfg.finetuning.finetuning_type == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError("finetuning_type qlora needs the bitsandbytes package: pip install bitsandbytes")
    return workflow


def eval_split(cfg: TrainConfig, workflow, dataset, stats) -> tuple[Any, Any, int | None]:
    """(train rows, eval rows or None, number of train rows if counted) for evaluation during
    training: `eval_data` built like the training data, or the last `val_size` packed rows
    held out of the training set (a fraction below 1, or a count)."""
    if not workflow.evaluates or not (cfg.training.val_size or cfg.data.eval_data):
        return dataset, None, None
    if cfg.data.eval_data:
        eval_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data=list(cfg.data.eval_data)))
        eval_dataset, _ = workflow.build_dataset(eval_cfg)
        return dataset, eval_dataset, None
    rows = _count_rows(dataset, stats)
    size = cfg.training.val_size
    held_out = int(size) if size >= 1 else max(1, round(rows * size))
    if held_out < cfg.launch.num_workers or rows - held_out < cfg.launch.num_workers:
        raise TrainConfigError(f"val_size={size} holds out {held_out} of {rows} packed rows: each of the "
                               f"{cfg.launch.num_workers} worker(s) needs at least one row to train and one to eval")
    train, held = dataset.split_at_indices([rows - held_out])
    return train, held, rows - held_out


def check_data(cfg: TrainConfig) -> None:
    """Every `data` entry names readable files (or a registry name) before Ray starts."""
    from train.ingest import resolve_data

    if not cfg.data.data:
        return
    registry = (cfg.data.data_options or {}).get("registry")
    try:
        for weighted in resolve_data(cfg.data.data, registry):
            weighted.spec.files()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise TrainConfigError(f"data: {exc}") from None


def resolve_template(cfg: TrainConfig, workflow) -> TrainConfig:
    """The template a run renders conversations with, recorded in its config: a built-in by
    name, else "tokenizer" (the tokenizer's own chat template), which must then exist."""
    if cfg.data.template or workflow.card_kind == "document":
        return cfg
    source = cfg.model.tokenizer or cfg.model.model
    if not declares_chat_template(source):
        # Not evident from the files (a hub id, an unusual layout, or none at all): ask
        # transformers, whose error names the built-in templates to pass instead.
        from transformers import AutoTokenizer

        from train.templates import get_template

        try:
            get_template(None, AutoTokenizer.from_pretrained(source))
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from None
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, template="tokenizer"))


def declares_chat_template(tokenizer_path: str) -> bool:
    """True where a local tokenizer directory's own files carry a chat template (what
    transformers loads as `tokenizer.chat_template`), so the driver records "tokenizer"
    without importing transformers and loading the tokenizer only to look; the workers
    that tokenize load it and render with it (train.templates.TokenizerTemplate)."""
    root = Path(tokenizer_path)
    if not root.is_dir():
        return False
    if (root / "chat_template.jinja").is_file() or (root / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def run_training(cfg: TrainConfig, dataset: Any = None, stats: Any = None, collate: Callable | None = None,
                 callbacks: list | None = None) -> dict:
    """Build the data (unless given), train on Ray Train, write the run outputs; returns the summary."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workflow = preflight(cfg)
    run_dir = prepare_run_dir(cfg)
    cfg = resolve_template(resolve_for_workers(cfg), workflow)
    RUN_CLOCK.mark("run_start")
    built_here = dataset is None
    if built_here:
        dataset, stats = workflow.build_dataset(cfg)
    RUN_CLOCK.mark("dataset_ready")
    copy_data_cards(data_paths(cfg), run_dir, workflow.card_kind)
    dataset, eval_dataset, train_rows = eval_split(cfg, workflow, dataset, stats)
    train_files = direct_train_files(stats) if built_here and eval_dataset is None else None

    max_steps = cfg.training.max_steps
    if max_steps <= 0:
        # A stream's length is unknown: count the packed rows once (one pass of the ingest
        # pipeline, which also fills the data stats). Set max_steps to skip it on a big corpus.
        max_steps = (workflow.count_steps(cfg, dataset, stats) if workflow.count_steps
                     else count_steps(cfg, train_rows if train_rows is not None else _count_rows(dataset, stats)))
    if cfg.training.lr_scheduler == "wsd" or cfg.training.warmup_ratio:
        from train.schedulers import scheduler_arguments

        scheduler_arguments(cfg.training, max_steps)  # fail here, not in every worker

    latest = None
    if cfg.launch.resume:
        done, latest = finished_steps(run_dir)
        if done >= max_steps:
            # HF would still take one more step from a checkpoint at max_steps: nothing to do instead.
            return _already_finished(run_dir, cfg, stats, max_steps, done, latest)

    loop_config = {"train": cfg.to_dict(), "max_steps": max_steps, "run_dir": str(run_dir), "resume_checkpoint": latest,
                   "collate": collate or workflow.collate, "callbacks": list(callbacks or []),
                   "has_eval": eval_dataset is not None, "train_files": train_files}
    datasets = {} if train_files else {"train": dataset}
    if eval_dataset is not None:
        datasets["eval"] = eval_dataset
    trainer = TorchTrainer(
        train_loop_per_worker=workflow.train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.launch.num_workers, use_gpu=cfg.launch.use_gpu,
                                     resources_per_worker=worker_resources(cfg),
                                     placement_strategy=cfg.launch.placement_strategy),
        run_config=RunConfig(
            name=RAY_RUN_NAME, storage_path=str(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.training.save_total_limit),
            failure_config=FailureConfig(max_failures=cfg.launch.max_failures),
        ),
        datasets=datasets,
    )
    # An earlier run's worker timings in this directory must not pass for this run's.
    (run_dir / "logs" / WORKER_PHASES_FILE).unlink(missing_ok=True)
    RUN_CLOCK.mark("fit_start")
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        write_run_outputs(run_dir, cfg, stats, max_steps, metrics=None, checkpoint=None, error=str(exc))
        raise TrainingRunError(f"training failed: {_root_cause(exc)}") from exc
    RUN_CLOCK.mark("fit_end")
    checkpoint = result.checkpoint.path if result.checkpoint else None
    if cfg.data.collect_data_stats:
        if hasattr(stats, "collect") and not getattr(stats, "collected", True):
            stats.collect()  # max_steps was given, so the stream was never counted: count it now for the record
        try_write_training_card(run_dir, cfg, stats, workflow.card_kind)
        RUN_CLOCK.mark("training_card")
    return write_run_outputs(run_dir, cfg, stats, max_steps, metrics=result.metrics, checkpoint=checkpoint)


def direct_train_files(stats: Any) -> list[str] | None:
    """The token cache's Parquet files of the training rows where the workers read them
    themselves (train.ingest.cached_rows) instead of through Ray Data; None otherwise.

    The local fast path: on an embedded, one-node Ray every worker sees the driver's disk, so
    a cached training set needs no Ray Data execution (its split coordinator actor and read
    tasks are processes to start, on the cores the trainer is about to use) to reach the
    workers; they get the same rows either way. On a cluster (RAY_ADDRESS, several nodes)
    the rows go through Ray Data, whose shards reach workers on any node; so does every
    stream that is not a cache read (tokenized_cache off, an eval split, a given dataset).
    """
    from train.ingest import DataStats

    if not isinstance(stats, DataStats) or not stats.cache_dir or os.environ.get("RAY_ADDRESS"):
        return None
    import ray

    if sum(1 for node in ray.nodes() if node.get("Alive")) != 1:
        return None
    from train.token_cache import parquet_files

    return parquet_files(Path(stats.cache_dir), "train") or None


def finished_steps(run_dir: Path) -> tuple[int, str | None]:
    """(highest global_step among the run's Ray Train checkpoints, that checkpoint's dir)."""
    best, where = 0, None
    # Each Ray checkpoint holds the HF checkpoint in checkpoint/ (RayTrainReportCallback.CHECKPOINT_NAME).
    for state in Path(run_dir, RAY_RUN_NAME).glob("checkpoint_*/checkpoint/trainer_state.json"):
        step = int(json.loads(state.read_text(encoding="utf-8")).get("global_step") or 0)
        if step > best:
            best, where = step, str(state.parent.parent)
    return best, where


def _already_finished(run_dir: Path, cfg: TrainConfig, stats: Any, max_steps: int, done: int,
                      latest: str | None) -> dict:
    previous = run_dir / "run_summary.json"
    summary = json.loads(previous.read_text(encoding="utf-8")) if previous.exists() else {}
    if not summary or summary.get("error"):
        summary = write_run_outputs(run_dir, cfg, stats, max_steps, metrics=None, checkpoint=latest)
    summary["note"] = f"--resume: the run already reached step {done} of max_steps {max_steps}; nothing to train"
    logging.getLogger(__name__).warning(summary["note"])
    return summary


# The ingest's read task and tokenizer actor pool hold one CPU each while the stream runs.
DATA_PIPELINE_CPUS = 2


def worker_resources(cfg: TrainConfig) -> dict:
    """What each training worker reserves. On a small machine (a 2-core laptop) reserving a
    CPU per worker would starve the streaming ingest and deadlock, so workers reserve no CPU
    there (torch still uses every core; the reservation is bookkeeping only). A placement
    bundle may not be empty, hence the token 1 MiB of memory."""
    cpus = cfg.launch.cpus_per_worker
    if cpus is None:
        import ray

        total = ray.cluster_resources().get("CPU", 0)
        cpus = 1.0 if total >= cfg.launch.num_workers + DATA_PIPELINE_CPUS else 0.0
    return {"CPU": cpus} if cpus > 0 else {"CPU": 0, "memory": 2**20}


def _count_rows(dataset, stats) -> int:
    if stats is not None and hasattr(stats, "collect"):
        if not getattr(stats, "collected", False):
            stats.collect()
        if stats.sequences == 0 and stats.records:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(stats.drops.items())) or "none"
            raise TrainConfigError(f"no training examples left: {stats.records} records read, {stats.dropped} dropped "
                                   f"(by reason: {reasons}); check the dataset's columns and format")
        return int(stats.sequences)
    return dataset.count()


class TrainingRunError(RuntimeError):
    pass


def _root_cause(exc: BaseException) -> str:
    """The innermost worker error message (Ray wraps it in a few layers)."""
    text = str(exc)
    for marker in ("NonFiniteLossError:", "NonFiniteRLError:", "RewardSourceError:", "TrainConfigError:",
                   "ModelLoadError:", "ValueError:"):
        if marker in text:
            return text[text.rindex(marker):].strip().splitlines()[0]
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__


def _driver_sees_gpu() -> bool:
    # On a cluster the driver may have no GPU while workers do: only check dtype where it can be known.
    import torch

    return torch.cuda.is_available()
