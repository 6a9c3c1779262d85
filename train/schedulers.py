"""Learning-rate schedules as HF Trainer arguments.

transformers ships warmup-stable-decay (`lr_scheduler_type="warmup_stable_decay"`,
`get_wsd_schedule`), so WSD needs no scheduler of ours: we only turn the run's
`decay_ratio` into the step count the HF schedule wants, because a stream's step
count is known only once `max_steps` is fixed.
"""
from __future__ import annotations

import math

from train.args import HyperParameters, TrainConfigError

_HF_NAMES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup", "wsd": "warmup_stable_decay"}


def warmup_steps_for(params: HyperParameters, max_steps: int) -> int:
    """Explicit warmup steps win over the ratio, as in HF."""
    if params.warmup_steps > 0:
        return params.warmup_steps
    return math.ceil(params.warmup_ratio * max_steps)


def scheduler_arguments(params: HyperParameters, max_steps: int) -> dict:
    """`lr_scheduler_type`, `lr_scheduler_kwargs` and `warmup_steps` for transformers.TrainingArguments."""
    if params.lr_scheduler not in _HF_NAMES:
        raise TrainConfigError(f"unknown lr_scheduler {params.lr_scheduler!r}; choose one of {', '.join(_HF_NAMES)}")
    warmup = warmup_steps_for(params, max_steps)
    kwargs: dict = {}
    if params.lr_scheduler == "wsd":
        decay = max(1, round(params.decay_ratio * max_steps)) if params.decay_ratio > 0 else 0
        if warmup + decay > max_steps:
            raise TrainConfigError(f"wsd: warmup ({warmup}) + decay ({decay}) steps exceed max_steps ({max_steps})")
        kwargs = {"num_decay_steps": decay, "min_lr_ratio": params.min_lr_ratio}
    return {"lr_scheduler_type": _HF_NAMES[params.lr_scheduler], "lr_scheduler_kwargs": kwargs, "warmup_steps": warmup}


def lr_at(step: int, peak: float, params: HyperParameters, max_steps: int) -> float:
    """The learning rate HF's schedule gives at `step` (for tests and plots), built from the same arguments."""
    import torch
    from transformers.optimization import get_scheduler

    args = scheduler_arguments(params, max_steps)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = get_scheduler(args["lr_scheduler_type"], optimizer, num_warmup_steps=args["warmup_steps"],
                              num_training_steps=max_steps, scheduler_specific_kwargs=args["lr_scheduler_kwargs"])
    return peak * scheduler.lr_lambdas[0](step)
