"""RL options, given as `data_options.<name>=<value>` (or a `data_options:` mapping in the YAML).

The stage sets the defaults that differ (`ppo`: GAE with a critic, KL in the reward;
`grpo`: group-relative, KL in the loss); everything else is shared by the one loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from schemas.options import OptionsError, from_mapping
from train.rl.advantages import ESTIMATORS
from train.rl.objective import KL_ESTIMATORS

CRITIC_MODES = ("separate", "shared")
REFERENCE_MODES = ("auto", "adapter", "copy")
KL_PLACEMENTS = ("reward", "loss")
ROLLOUT_ENGINES = ("hf", "vllm")


@dataclass
class RLOptions:
    advantage: str = "gae"             # gae | grpo | dr_grpo | rloo | reinforce_pp
    num_generations: int = 1           # samples per prompt (G); grpo/rloo need >= 2
    prompts_per_step: int = 8          # prompts each worker rolls out per RL step
    # sampling
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    rollout_engine: str = "hf"         # hf (HF generate on the policy) | vllm (a vLLM engine in each worker; GPU)
    vllm_gpu_memory_utilization: float = 0.3  # share of the GPU the vLLM engine takes (beside the training models)
    # policy epochs
    ppo_epochs: int = 1                # passes over each rollout batch
    num_minibatches: int = 1           # optimizer steps per pass
    clip_range: float = 0.2
    clip_range_high: float | None = None  # asymmetric clipping (DAPO's clip-higher); None = clip_range
    # critic (gae)
    critic: str = "separate"           # separate (own copy of the backbone) | shared (value head on the actor's)
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    critic_lr_ratio: float = 1.0       # critic learning rate / actor learning rate (separate critic)
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True     # gae: normalise advantages over the batch
    # KL to the reference
    kl_coef: float = 0.05              # β, initial value when adaptive
    kl_estimator: str = "k1"           # k1 | k2 | k3
    kl_placement: str = "reward"       # reward (PPO, REINFORCE++) | loss (GRPO)
    kl_importance_weighted: bool = True  # KL in the loss: weight by π/π_old (as TRL's GRPOTrainer)
    target_kl: float | None = None     # adaptive controller's target (per-sequence KL); None = fixed β
    kl_horizon: int = 10_000
    reference: str = "auto"            # auto (adapter for lora/qlora, else copy) | adapter | copy
    # extra loss terms
    entropy_coef: float = 0.0
    ptx_coef: float = 0.0              # γ of PPO-ptx
    ptx_data: str | None = None        # text dataset for the ptx term
    ptx_batch_size: int = 4
    # rewards: models first, then the adapter, then functions; weights in that order
    reward_model: list[str] = field(default_factory=list)
    reward_adapter: str | None = None  # a LoRA reward adapter (peft dir, SEQ_CLS with a `score` head) on the actor's base
    reward_function: list[str] = field(default_factory=list)  # "module:function(prompts, responses) -> list[float]"
    reward_weights: list[float] = field(default_factory=list)
    normalize_reward: bool = False     # running mean/std of the combined score
    reward_clip: float | None = None   # clip the (normalised) score to ±reward_clip
    # outputs
    sample_every: int = 10             # write prompt/response/reward samples every N steps
    num_samples_logged: int = 4
    max_prompt_tokens: int | None = None  # prompts over this are dropped (None: cutoff_len − max_new_tokens)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), str(f.type)))
        self.check()

    def check(self, cfg=None) -> None:
        """Cross-option checks (`cfg`, the TrainConfig, is accepted for the stage registry's preflight)."""
        def bad(message: str) -> None:
            raise OptionsError(f"data_options.{message}")

        if self.advantage not in ESTIMATORS:
            bad(f"advantage: unknown estimator {self.advantage!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            bad(f"kl_estimator: {self.kl_estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}")
        for name, allowed in (("critic", CRITIC_MODES), ("reference", REFERENCE_MODES), ("kl_placement", KL_PLACEMENTS),
                              ("rollout_engine", ROLLOUT_ENGINES)):
            if getattr(self, name) not in allowed:
                bad(f"{name}: {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if self.advantage in ("grpo", "dr_grpo", "rloo") and self.num_generations < 2:
            bad(f"num_generations: advantage {self.advantage} compares samples of a prompt; needs >= 2, "
                f"got {self.num_generations}")
        for name in ("num_generations", "prompts_per_step", "ppo_epochs", "num_minibatches", "max_new_tokens",
                     "sample_every", "ptx_batch_size"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        rollouts = self.prompts_per_step * self.num_generations
        if rollouts % self.num_minibatches:
            bad(f"num_minibatches: {rollouts} samples per step (prompts_per_step × num_generations) do not split "
                f"into {self.num_minibatches} minibatches")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            bad(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if cfg is not None and self.rollout_engine == "vllm" and cfg.finetuning.finetuning_type == "qlora":
            bad("rollout_engine=vllm: a qlora policy's 4-bit base cannot be pushed into vLLM; use lora or "
                "rollout_engine=hf")
        if self.clip_range <= 0:
            bad(f"clip_range must be > 0, got {self.clip_range}")
        if self.kl_coef < 0 or self.entropy_coef < 0 or self.ptx_coef < 0:
            bad("kl_coef, entropy_coef and ptx_coef must be >= 0")
        if self.ptx_coef > 0 and not self.ptx_data:
            bad("ptx_data: ptx_coef > 0 needs a text dataset (ptx_data=PATH)")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            bad(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        n_sources = len(self.reward_model) + bool(self.reward_adapter) + len(self.reward_function)
        if self.reward_weights and len(self.reward_weights) != max(n_sources, 1):
            bad(f"reward_weights: {len(self.reward_weights)} weights for {n_sources} reward sources "
                "(order: reward_model..., reward_adapter, reward_function...)")
        for spec in self.reward_function:
            if spec.count(":") != 1 or not all(spec.split(":")):
                bad(f"reward_function: {spec!r} is not 'module:function'")

    @property
    def uses_critic(self) -> bool:
        return self.advantage == "gae"

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    def reference_mode(self, finetuning_type: str) -> str:
        if self.reference != "auto":
            return self.reference
        return "adapter" if finetuning_type in ("lora", "qlora") else "copy"

    def aggregation(self) -> str:
        """How per-token loss terms become a scalar: TRL's conventions for grpo / dr_grpo, a token mean otherwise."""
        return {"grpo": "sequence_mean", "dr_grpo": "token_sum_norm"}.get(self.advantage, "token_mean")


@dataclass
class PPOOptions(RLOptions):
    """Stage ppo: GAE with a critic, the KL (k1) in the reward, 2 epochs of 2 minibatches."""

    advantage: str = "gae"
    num_generations: int = 1
    kl_placement: str = "reward"
    kl_estimator: str = "k1"
    ppo_epochs: int = 2
    num_minibatches: int = 2


@dataclass
class GRPOOptions(RLOptions):
    """Stage grpo: 4 samples per prompt, group-relative advantages, the KL (k3, β = 0.04) in the loss."""

    advantage: str = "grpo"
    num_generations: int = 4
    kl_placement: str = "loss"
    kl_estimator: str = "k3"
    kl_coef: float = 0.04
    ppo_epochs: int = 1
    num_minibatches: int = 1


STAGE_OPTIONS: dict[str, type[RLOptions]] = {"ppo": PPOOptions, "grpo": GRPOOptions}


def rl_options(data_options: dict | None, stage: str) -> RLOptions:
    """The stage's options from `data_options`; an unknown key is a one-line error."""
    return from_mapping(STAGE_OPTIONS.get(stage, RLOptions), dict(data_options or {}), "data_options")


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Values from the command line arrive as YAML scalars; lists may be comma-separated strings."""
    def fail(kind: str) -> None:
        raise OptionsError(f"data_options.{name} must be {kind}, got {value!r}")

    if value is None:
        if "None" in annotation:
            return None
        fail("set")
    if annotation.startswith("list"):
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            fail("a list")
        try:
            return [float(v) for v in items] if "float" in annotation else [str(v) for v in items]
        except (TypeError, ValueError):
            fail("a list of numbers")
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
            return str(value).lower() in ("true", "1", "yes")
        fail("true or false")
    if annotation.startswith("int"):
        if isinstance(value, bool):
            fail("an integer")
        try:
            number = float(value)
        except (TypeError, ValueError):
            fail("an integer")
        if number != int(number):
            fail("an integer")
        return int(number)
    if annotation.startswith("float"):
        if isinstance(value, bool):
            fail("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            fail("a number")
    return str(value)
