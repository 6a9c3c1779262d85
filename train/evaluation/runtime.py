"""What every eval task shares: the actor pool that holds the model, and how an actor loads it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.run_models import ResolvedModel

DTYPES = ("fp32", "bf16", "fp16")


@dataclass
class RuntimeOptions:
    """How the model runs: `concurrency` actors, each with its own copy of the model."""

    batch_size: int = 8       # rows handed to an actor per call
    concurrency: int = 1      # actors in the pool
    num_cpus: float = 1.0     # per actor; also its torch thread count on CPU
    num_gpus: float = 0.0     # per actor
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError(f"batch_size and concurrency must be >= 1, got {self.batch_size} and {self.concurrency}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("num_cpus and num_gpus must be >= 0")


def actor_pool_args(runtime: RuntimeOptions, constructor_kwargs: dict[str, Any]) -> dict[str, Any]:
    """map_batches keyword arguments for a model-holding callable class."""
    from ray.data import ActorPoolStrategy

    args: dict[str, Any] = {
        "batch_size": runtime.batch_size, "compute": ActorPoolStrategy(size=runtime.concurrency),
        "num_cpus": runtime.num_cpus, "fn_constructor_kwargs": constructor_kwargs,
    }
    if runtime.num_gpus:
        args["num_gpus"] = runtime.num_gpus
    return args


class ModelActor:
    """Base of the Ray Data actors: loads the tokenizer and the model (adapter merged) once."""

    def __init__(self, model: ResolvedModel, dtype: str = "fp32", threads: float = 1.0):
        import torch

        from train.run_models import load_model, load_tokenizer

        # Ray starts actors with one OMP thread; give torch the cores this actor reserved.
        torch.set_num_threads(max(1, int(threads)))
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(model)
        self.model = load_model(model, dtype=dtype, merge=True, device=self.device)
