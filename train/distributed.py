"""The few collectives the training stages need, each a no-op in a single process.

In the RL loop we all-reduce gradients by hand instead of wrapping the actor in DDP: the same model also
generates, runs with its adapter disabled (reference) or switched (reward adapter), and
DDP's hooks would fire on those no-grad passes too. One flat all-reduce per optimizer step
costs the same as DDP's bucketed one at these sizes.
"""
from __future__ import annotations

from typing import Iterable

import torch


def world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if world()[1] == 1:
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    reduced = tensor.detach().to(device).clone()
    dist.all_reduce(reduced)
    return reduced.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor) / world()[1]


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Per-rank logged metrics (accuracy, margins, rewards) averaged over the workers."""
    if world()[1] == 1:
        return values
    keys = sorted(values)
    reduced = all_reduce_mean(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return dict(zip(keys, reduced.tolist()))


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Mean of every gradient over the workers, in one flat buffer."""
    if world()[1] == 1:
        return
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    flat = all_reduce_mean(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def global_masked_moments(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(mean, unbiased variance) of the masked entries over every worker's batch."""
    mask = mask.to(values.dtype)
    stats = torch.stack([mask.sum(), (values * mask).sum(), (values ** 2 * mask).sum()]).double()
    n, total, squares = all_reduce_sum(stats).tolist()
    mean = total / max(n, 1.0)
    var = max(squares - n * mean ** 2, 0.0) / max(n - 1, 1.0)
    return mean, var


def global_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean, var = global_masked_moments(values, mask)
    return (values - mean) / (var + eps) ** 0.5 * mask.to(values.dtype)
