"""One training worker: a HF Trainer fed from a stream of packed rows.

The same `run_causal_lm` serves a Ray Train worker (rows from
`ray.train.get_dataset_shard("train")`) and a plain process (rows from any
iterable, used by the benchmark's bare-HF baseline). Reading the loop top to bottom:
build the model, wrap the stream as batches, train for exactly `max_steps`, save.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from transformers import Trainer, TrainingArguments

from train.args import TrainConfig
from train.callbacks import MetricsJsonlCallback, NonFiniteLossGuard, tensorboard_callback
from train.finetune import apply_finetuning, count_parameters
from train.model_loading import load_model, load_tokenizer
from train.schedulers import scheduler_arguments

DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"


class StreamBatches(torch.utils.data.IterableDataset):
    """Micro-batches of `batch_size` rows, repeating the stream epoch after epoch.

    Repeating means every worker always has a next batch, so the number of steps is
    set by `max_steps` alone and distributed workers never fall out of lockstep when
    a stream ends. `skip_batches` drops already-trained batches on resume before they
    are collated: the data position is restored by replaying the (deterministic)
    stream, the approach HF's own `skip_first_batches` takes.
    """

    def __init__(self, open_epoch: Callable[[], Iterable[dict]], batch_size: int, collate: Callable,
                 skip_batches: int = 0):
        super().__init__()
        self.open_epoch, self.batch_size, self.collate, self.skip_batches = open_epoch, batch_size, collate, skip_batches

    def _row_batches(self) -> Iterator[list[dict]]:
        for epoch in itertools.count():
            empty = True
            rows = iter(self.open_epoch())
            while chunk := list(itertools.islice(rows, self.batch_size)):
                empty = False
                yield chunk
            if empty:
                raise ValueError(f"the training stream yielded no rows (epoch {epoch}); is the dataset empty?")

    def __iter__(self):
        for index, chunk in enumerate(self._row_batches()):
            if index >= self.skip_batches:
                yield self.collate(chunk)


class StreamTrainer(Trainer):
    """HF Trainer whose train loader is our stream, as is: no sampler, no accelerate re-sharding
    (Ray Data already gave each worker its own shard)."""

    def get_train_dataloader(self):
        return torch.utils.data.DataLoader(self.train_dataset, batch_size=None)

    def get_eval_dataloader(self, eval_dataset=None):
        return torch.utils.data.DataLoader(eval_dataset if eval_dataset is not None else self.eval_dataset,
                                           batch_size=None)


class EvalBatches(torch.utils.data.IterableDataset):
    """The worker's held-out rows as collated batches, the same ones at every evaluation."""

    def __init__(self, rows: list[dict], batch_size: int, collate: Callable):
        super().__init__()
        self.batches = [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def deepspeed_config(name_or_path: str | None, use_gpu: bool) -> dict | None:
    """A shipped ZeRO config by name (zero0/2/3, zero2_offload, zero3_offload) or a JSON file."""
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if not path.suffix:
        path = DEEPSPEED_DIR / f"{name_or_path}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
        raise ValueError(f"unknown DeepSpeed config {name_or_path!r}; use one of {', '.join(shipped)} or a JSON path")
    config = json.loads(path.read_text(encoding="utf-8"))
    if not use_gpu:
        # On CPU the torch optimizer serves; DeepSpeed would otherwise insist on (and JIT-build) its CPU Adam.
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def eval_arguments(cfg: TrainConfig) -> dict:
    """TrainingArguments for evaluation during training (pt/sft with val_size or eval_data)."""
    t = cfg.training
    return {"eval_strategy": "steps", "eval_steps": t.eval_steps or t.save_steps,
            "per_device_eval_batch_size": t.per_device_batch_size, "prediction_loss_only": True,
            "load_best_model_at_end": t.load_best_model_at_end, "metric_for_best_model": t.metric_for_best_model,
            "greater_is_better": not t.metric_for_best_model.endswith("loss")}


def training_arguments(cfg: TrainConfig, output_dir: str, max_steps: int, evaluate: bool = False) -> TrainingArguments:
    t, launch = cfg.training, cfg.launch
    return TrainingArguments(
        **(eval_arguments(cfg) if evaluate else {}),
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        neftune_noise_alpha=t.neftune_noise_alpha,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # NonFiniteLossGuard must see a NaN as a NaN
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        bf16=cfg.model.dtype == "bf16",
        fp16=cfg.model.dtype == "fp16",
        use_cpu=not launch.use_gpu,
        deepspeed=deepspeed_config(launch.deepspeed, launch.use_gpu),
        ignore_data_skip=True,  # StreamBatches skips consumed batches itself
        report_to="none",
        include_num_input_tokens_seen=True,
        disable_tqdm=True,
        dataloader_pin_memory=launch.use_gpu,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False if cfg.finetuning.finetuning_type == "full" else None,
        **scheduler_arguments(t, max_steps),
    )


def trained_steps(checkpoint_dir: str | None) -> int:
    if not checkpoint_dir:
        return 0
    state = Path(checkpoint_dir) / "trainer_state.json"
    return json.loads(state.read_text(encoding="utf-8"))["global_step"] if state.exists() else 0


def run_causal_lm(cfg: TrainConfig, rows: Callable[[], Iterable[dict]], collate: Callable | None, run_dir: str | Path,
                  max_steps: int, resume_from: str | None = None, extra_callbacks: list | None = None,
                  trainer_class: type[Trainer] = StreamTrainer, save_final: bool = True, rank: int = 0,
                  build_model: Callable | None = None, after_training: Callable | None = None,
                  eval_rows: Callable[[], Iterable[dict]] | None = None,
                  make_collate: Callable | None = None) -> dict:
    """Train on a row stream with the HF Trainer; returns the final metrics (rank 0 writes the outputs).

    The one worker body of the Trainer-based stages, in the same order for each: tokenizer,
    model (`build_model(cfg, tokenizer)`, default: the causal LM with its finetuning type),
    the stream as batches, train for exactly `max_steps`, then `after_training(trainer,
    tokenizer, metrics) -> extra metrics` (rm: eval and its own save) and the final save.
    """
    run_dir = Path(run_dir)
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(cfg.model)
    if build_model is not None:
        model = build_model(cfg, tokenizer)
    else:
        model = apply_finetuning(load_model(cfg.model, cfg.finetuning, cfg.launch.use_gpu), cfg.finetuning)
    # A KV cache switches off transformers' packed-sequence detection from position_ids,
    # which keeps packed examples from attending to each other; training needs no cache.
    model.config.use_cache = False
    if collate is None:
        # A collate that needs the tokenizer (its pad id) is built from the one loaded here.
        collate = make_collate(tokenizer) if make_collate else default_collate(cfg.data.packing, tokenizer.pad_token_id)
    trainable, total = count_parameters(model)

    done = trained_steps(resume_from)
    micro_batches_done = done * cfg.training.gradient_accumulation_steps
    dataset = StreamBatches(rows, cfg.training.per_device_batch_size, collate, skip_batches=micro_batches_done)
    # One HF output dir per rank: each rank's checkpoint files (DeepSpeed shards, RNG state) are
    # reported from its own dir and Ray Train merges them into one checkpoint.
    eval_dataset = None
    if eval_rows is not None:
        eval_dataset = EvalBatches(list(eval_rows()), cfg.training.per_device_batch_size, collate)
    args = training_arguments(cfg, str(run_dir / "hf" / f"rank{rank}"), max_steps, evaluate=eval_dataset is not None)
    guard = NonFiniteLossGuard()
    callbacks = [guard, MetricsJsonlCallback(run_dir / "metrics.jsonl")] + list(extra_callbacks or [])
    if args.process_index == 0:
        callbacks.append(tensorboard_callback(run_dir / "tensorboard"))
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                            processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume_from)
    guard.raise_if_tripped(last_good=_latest_checkpoint(args.output_dir))
    metrics = dict(result.metrics, global_step=trainer.state.global_step, trainable_params=trainable,
                   total_params=total, tokens_seen=trainer.state.num_input_tokens_seen,
                   torch_threads=torch.get_num_threads())
    if after_training is not None:
        metrics.update(after_training(trainer, tokenizer, metrics) or {})
    if save_final:
        # Every rank calls save_model: under ZeRO-3 it gathers the sharded weights collectively.
        # A PeftModel saves its adapters alone; a full model saves safetensors.
        trainer.save_model(str(run_dir / "model"))
    return metrics


def _latest_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def default_collate(packing: bool, pad_token_id: int) -> Callable:
    """Packed rows -> one flattened sequence; unpacked rows -> a padded batch."""
    import functools

    from train.collate import flatten_collate, padded_collate

    return flatten_collate if packing else functools.partial(padded_collate, pad_token_id=pad_token_id)


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which container limits narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_worker_threads(cfg: TrainConfig) -> int:
    """Torch threads of a Ray Train worker; returns the number set.

    Ray starts every worker with OMP_NUM_THREADS set to its CPU reservation (1, or 1 for a
    0-CPU reservation too), which would leave a CPU run on a single core (measured: 1.8x
    slower than a bare process on 2 cores). On CPU the node's cores are split between the
    workers on it, as separate torch processes would split them; `torch_threads` overrides.
    GPU runs keep Ray's setting: there the CPU threads only feed the GPU.
    """
    import ray.train

    threads = cfg.launch.torch_threads
    if threads is None:
        if cfg.launch.use_gpu:
            return torch.get_num_threads()
        threads = max(1, usable_cpus() // max(1, ray.train.get_context().get_local_world_size()))
    torch.set_num_threads(threads)
    return threads


SHM_COMM_ENV = "RAYMILL_DEEPSPEED_SHM_COMM"


def skip_deepspeed_jit_comm_build(cfg: TrainConfig) -> bool:
    """Keep DeepSpeed on CPU from JIT-compiling its shared-memory collectives; True if skipped.

    `deepspeed.initialize` on the CPU accelerator compiles `deepspeed_shm_comm` with the
    C++ toolchain behind a lock file in ~/.cache/torch_extensions. The build takes minutes
    on a small machine, and a worker killed mid-build (a timeout, Ctrl-C) leaves the lock
    behind, after which every later run waits on it forever. gloo does the same collectives
    without a build; set RAYMILL_DEEPSPEED_SHM_COMM=1 to have DeepSpeed build and use the op.
    """
    if cfg.launch.use_gpu or not cfg.launch.deepspeed or os.environ.get(SHM_COMM_ENV) == "1":
        return False
    import deepspeed.ops

    # DeepSpeed's comm backend builds the op only if its compatibility probe said yes.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return True


# What Ray Train sets for torch.distributed, and what accelerate/transformers read to decide
# that a run is distributed (LOCAL_RANK alone makes accelerate wrap the model in DDP).
TORCH_DIST_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK")


def leave_single_worker_group(cfg: TrainConfig) -> bool:
    """A CPU run of one worker trains as one plain process; returns True if it does.

    Ray Train gives even a single worker a gloo process group and LOCAL_RANK, and accelerate
    then wraps the model in DistributedDataParallel: every backward copies the gradients into
    DDP's buckets (measured: 17% of the training thread on the bench model) and every step's
    token count and logged loss go through a gloo collective — for a world of one. Ray Train
    itself does not use the process group (its reporting and barriers go through Ray actors),
    so a lone CPU worker drops it and trains like a bare HF process. DeepSpeed initialises its
    own distributed state and keeps it; GPU runs keep Ray's setup (not measured here).
    """
    import ray.train
    import torch.distributed as dist

    if cfg.launch.deepspeed or cfg.launch.use_gpu or ray.train.get_context().get_world_size() != 1:
        return False
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name in TORCH_DIST_ENV:
        os.environ.pop(name, None)
    return True


def prepare_worker(cfg: TrainConfig) -> None:
    """What every Ray Train worker sets up before it builds a trainer."""
    configure_worker_threads(cfg)
    skip_deepspeed_jit_comm_build(cfg)
    leave_single_worker_group(cfg)


@contextlib.contextmanager
def restored_checkpoint(loop_config: dict) -> Iterator[str | None]:
    """The HF checkpoint directory a Ray Train worker resumes from, or None.

    Ray Train's own restored checkpoint comes first. Where it has none although the run
    was asked to resume (a hard stop, such as Ctrl-C or a lost driver, can leave the Ray
    checkpoint directories on disk without the checkpoint manager's snapshot that Ray
    restores from), the launcher's pick of the latest checkpoint on disk serves.
    """
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_checkpoint"):
        checkpoint = ray.train.Checkpoint(loop_config["resume_checkpoint"])
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as restored:
        yield os.path.join(restored, RayTrainReportCallback.CHECKPOINT_NAME)


def run_in_ray_worker(run: Callable[..., dict], loop_config: dict) -> None:
    """Body of a Ray Train `train_loop_per_worker` for a stage whose `run(cfg, rows, run_dir,
    max_steps, resume_from=, extra_callbacks=, rank=)` trains on the worker's "train" shard.
    Callbacks: Ray Train's reporting one, then any the launcher was given."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    from train.args import parse_train_config

    cfg = parse_train_config(loop_config["train"])
    prepare_worker(cfg)
    context = ray.train.get_context()
    if loop_config.get("train_files"):  # the launcher's local fast path: the token cache read from disk
        from train.ingest import cached_rows

        rows = cached_rows(loop_config["train_files"], context.get_world_rank(), context.get_world_size())
    else:
        rows = ray.train.get_dataset_shard("train").iter_rows
    with restored_checkpoint(loop_config) as resume_from:
        metrics = run(cfg, rows, loop_config["run_dir"], loop_config["max_steps"],
                      resume_from=resume_from,
                      extra_callbacks=[RayTrainReportCallback(), *loop_config.get("callbacks", [])],
                      rank=context.get_world_rank())
    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def causal_lm_train_loop(loop_config: dict) -> None:
    """Ray Train `train_loop_per_worker` for causal-LM stages (pt, sft): rows from the "train" shard."""
    collate = loop_config.get("collate")

    def run(cfg: TrainConfig, rows, run_dir, max_steps, **kwargs) -> dict:
        eval_rows = None
        if loop_config.get("has_eval"):
            import ray.train

            eval_rows = ray.train.get_dataset_shard("eval").iter_rows
        return run_causal_lm(cfg, rows, collate, run_dir, max_steps, eval_rows=eval_rows, **kwargs)

    run_in_ray_worker(run, loop_config)
