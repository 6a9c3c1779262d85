"""The RL loop's optimizer steps: plain data parallel (gradients all-reduced by hand) or a DeepSpeed
ZeRO engine (`--deepspeed zero0|zero1|zero2|...|PATH`). Both take the same minibatch losses and keep
the same learning-rate schedule, gradient clipping and checkpoint contents, so the loop does not
know which one it runs:

    steps.step(loss)          backward, gradients averaged over the workers, clipped, one optimizer step
    steps.end_rl_step()       the schedule moves once per RL step (after all its minibatches)
    steps.save(dir) / load(dir)

One AdamW with two parameter groups (actor; critic at `critic_lr_ratio`) and one HF schedule serve
both. Under DeepSpeed the schedule is stepped by us, not by the engine: the engine would step it at
every optimizer step, and an RL step takes `ppo_epochs × num_minibatches` of those.

ZeRO-3 is refused (train.rl.stage.check_deepspeed): it partitions the weights themselves, and
the rollout's `generate`, the prompt-sharing forward and the checkpoint's weight copy read them whole.
"""
from __future__ import annotations

import copy
import logging
import os
import socket
from pathlib import Path

import torch

from train.args import TrainConfig
from train.distributed import average_gradients

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"       # plain: the AdamW state and the schedule
SCHEDULER_FILE = "scheduler.pt"       # deepspeed: the schedule (the engine's files hold the optimizer)
DEEPSPEED_TAG = "deepspeed"           # the engine's checkpoint folder inside a checkpoint directory
SUPPORTED_ZERO_STAGES = (0, 1, 2)


def parameter_groups(modules: dict[str, torch.nn.Module], learning_rate: float, critic_lr_ratio: float) -> list[dict]:
    """The actor's trainable parameters at the learning rate; the critic's (value head, separate
    backbone) at `critic_lr_ratio` × it. A parameter the critic shares with the actor counts as the actor's."""
    actor = [p for p in modules["actor"].parameters() if p.requires_grad]
    seen = {id(p) for p in actor}
    critic = [p for name, m in modules.items() if name != "actor" for p in m.parameters()
              if p.requires_grad and id(p) not in seen]
    groups = [{"params": actor, "lr": learning_rate}]
    if critic:
        groups.append({"params": critic, "lr": learning_rate * critic_lr_ratio})
    return groups


def build_schedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps: int):
    from transformers.optimization import get_scheduler

    from train.schedulers import scheduler_arguments

    args = scheduler_arguments(cfg.training, steps)
    return get_scheduler(args["lr_scheduler_type"], optimizer, num_warmup_steps=args["warmup_steps"],
                         num_training_steps=steps, scheduler_specific_kwargs=args["lr_scheduler_kwargs"])


class PlainSteps:
    """AdamW on every worker, gradients averaged in one flat all-reduce (train.distributed)."""

    def __init__(self, cfg: TrainConfig, modules: dict[str, torch.nn.Module], critic_lr_ratio: float, steps: int):
        self.max_grad_norm = cfg.training.max_grad_norm
        self.optimizer = torch.optim.AdamW(parameter_groups(modules, cfg.training.learning_rate, critic_lr_ratio),
                                           weight_decay=cfg.training.weight_decay)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = build_schedule(cfg, self.optimizer, steps)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.parameters)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()

    def end_rl_step(self) -> None:
        self.scheduler.step()

    def save(self, target: Path, rank: int) -> None:
        if rank == 0:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       target / OPTIMIZER_FILE)

    def load(self, directory: Path, device: torch.device) -> None:
        state = torch.load(directory / OPTIMIZER_FILE, map_location=device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class TrainableModules(torch.nn.Module):
    """Actor, value head and critic backbone as one module, so one engine steps them together.
    The loop keeps calling the modules themselves; the engine only owns their parameters'
    gradient reduction, partitioned optimizer state and steps."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)

    def forward(self, *args, **kwargs):  # never called: the loop runs the parts directly
        raise RuntimeError("TrainableModules is a parameter container; call its parts")


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def engine_config(cfg: TrainConfig, minibatch_rows: int, world_size: int) -> dict:
    """The shipped (or given) ZeRO config with its "auto" values filled from the RL run.

    One engine step is one minibatch: no gradient accumulation; the batch sizes are the loop's
    minibatch (DeepSpeed only checks their product); clipping is `max_grad_norm`; bf16/fp16 follow
    the model's dtype. Any other "auto" in zero_optimization (bucket sizes) is left to DeepSpeed's default."""
    from train.worker import deepspeed_config

    config = copy.deepcopy(deepspeed_config(cfg.launch.deepspeed, cfg.launch.use_gpu))
    config["train_micro_batch_size_per_gpu"] = minibatch_rows
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = minibatch_rows * world_size
    config["gradient_clipping"] = float(cfg.training.max_grad_norm or 0.0)
    for key, dtype in (("bf16", "bf16"), ("fp16", "fp16")):
        section = config.get(key)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            section["enabled"] = cfg.model.dtype == dtype
    zero = config.setdefault("zero_optimization", {})
    for key in [k for k, v in zero.items() if v == "auto"]:
        del zero[key]
    config.setdefault("steps_per_print", 10 ** 9)  # the loop logs its own metrics
    return config


def offloads_optimizer(config: dict) -> bool:
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


def ensure_process_group() -> None:
    """DeepSpeed needs a process group; a Ray Train worker has one. A plain process (tests, a
    bare run of run_rl) gets a one-member gloo group on a free local port."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        os.environ.setdefault(name, value)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


class DeepSpeedSteps:
    """A DeepSpeed engine over the trainable modules: `engine.backward` reduces (ZeRO-2: reduce-
    scatters) the gradients and averages them over the workers, `engine.step` clips and steps."""

    def __init__(self, cfg: TrainConfig, modules: dict[str, torch.nn.Module], critic_lr_ratio: float, steps: int,
                 minibatch_rows: int, world_size: int):
        import deepspeed

        from train.worker import skip_deepspeed_jit_comm_build

        skip_deepspeed_jit_comm_build(cfg)
        ensure_process_group()
        self.config = engine_config(cfg, minibatch_rows, world_size)
        stage = zero_stage(self.config)
        if stage not in SUPPORTED_ZERO_STAGES:  # preflight says so first; a config file may change under a run
            raise ValueError(f"--deepspeed {cfg.launch.deepspeed}: ZeRO stage {stage} is not supported by the RL loop")
        groups = parameter_groups(modules, cfg.training.learning_rate, critic_lr_ratio)
        if offloads_optimizer(self.config) and cfg.launch.use_gpu:
            # With the optimizer state in host memory DeepSpeed steps it with its own CPU Adam.
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(groups, weight_decay=cfg.training.weight_decay, adamw_mode=True)
        else:
            optimizer = torch.optim.AdamW(groups, weight_decay=cfg.training.weight_decay)
        # Built on the torch optimizer before the engine wraps it: ZeRO keeps its param_groups
        # dicts (it swaps only their "params"), so the schedule's learning rates reach the steps.
        self.scheduler = build_schedule(cfg, optimizer, steps)
        self.optimizer = optimizer
        self.engine, _, _, _ = deepspeed.initialize(model=TrainableModules(modules), optimizer=optimizer,
                                                    config=self.config)
        log.info("RL optimizer steps under DeepSpeed ZeRO-%d (%d workers, %d rows per step)", stage, world_size,
                 minibatch_rows)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def end_rl_step(self) -> None:
        self.scheduler.step()

    def save(self, target: Path, rank: int) -> None:
        """Every rank writes its share (ZeRO's optimizer partition; rank 0 also the module states)
        into its own checkpoint directory; frozen weights (a LoRA base) are not written."""
        (target / DEEPSPEED_TAG).mkdir(parents=True, exist_ok=True)
        self.engine.save_checkpoint(str(target), tag=DEEPSPEED_TAG, save_latest=False, exclude_frozen_parameters=True)
        if rank == 0:
            torch.save(self.scheduler.state_dict(), target / SCHEDULER_FILE)

    def load(self, directory: Path, device: torch.device) -> None:
        if not (directory / DEEPSPEED_TAG).is_dir():
            raise ValueError(f"checkpoint {directory} was not written under --deepspeed (no {DEEPSPEED_TAG}/ folder); "
                             "resume it without --deepspeed")
        path, _ = self.engine.load_checkpoint(str(directory), tag=DEEPSPEED_TAG, load_module_strict=False,
                                              load_lr_scheduler_states=False)
        if path is None:
            raise ValueError(f"checkpoint {directory}: DeepSpeed found no checkpoint in {DEEPSPEED_TAG}/")
        self.scheduler.load_state_dict(torch.load(directory / SCHEDULER_FILE, map_location=device))


def build_steps(cfg: TrainConfig, modules: dict[str, torch.nn.Module], critic_lr_ratio: float, steps: int,
                minibatch_rows: int, world_size: int) -> PlainSteps | DeepSpeedSteps:
    if cfg.launch.deepspeed:
        return DeepSpeedSteps(cfg, modules, critic_lr_ratio, steps, minibatch_rows, world_size)
    return PlainSteps(cfg, modules, critic_lr_ratio, steps)
