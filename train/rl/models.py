"""The models of an RL run: actor, reference, critic, reward adapter — and what they share.

- actor:      the policy being trained (full, freeze, LoRA or QLoRA, as train.finetune sets it up);
- reference:  the starting policy: the actor with its LoRA adapter disabled (no extra weights),
              or a frozen copy (full finetuning);
- critic:     a value head (hidden → 1) either on the actor's own hidden states ("shared":
              no extra backbone; the value loss also shapes the actor's features) or on a
              separate copy of the backbone ("separate");
- reward adapter: a second LoRA adapter on the actor's backbone plus its scalar `score` head,
              as `--stage rm` trains with LoRA; switched on only while scoring.
With LoRA and a shared critic, actor + reference + critic + reward weigh about one backbone.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from train.rl.rollout import RolloutBatch, TokenOutputs, response_outputs

REWARD_ADAPTER = "reward"


class ValueHead(torch.nn.Module):
    """Scalar value per position from the last hidden state."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        # Start near zero: early advantages are then ≈ returns, not the noise of a random head.
        torch.nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1))
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The head's own dtype: fp32 as built, bf16/fp16 when a DeepSpeed engine casts the trainable modules.
        return self.linear(hidden.to(self.linear.weight.dtype)).float().squeeze(-1)


def hidden_size(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def active_adapter(model, name: str) -> Iterator[None]:
    """Run with another LoRA adapter of `model` switched on; the previous one comes back after."""
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        # peft's set_adapter makes the active adapter trainable; the reward adapter never trains.
        for pname, param in model.named_parameters():
            if f".{name}." in pname:
                param.requires_grad_(False)


def load_reward_adapter(actor, path: str | Path) -> torch.nn.Linear:
    """Add the LoRA reward adapter saved in `path` to the actor (as adapter "reward") and return
    its `score` head. The adapter is a peft SEQ_CLS save of the actor's base model whose state
    holds the LoRA weights plus the head (`modules_to_save=["score"]`)."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not config_file.exists() or not weights_file.exists():
        raise ValueError(f"data_options.reward_adapter: {path} is not a peft adapter directory "
                         "(adapter_config.json + adapter_model.safetensors)")
    if not is_peft(actor):
        raise ValueError("data_options.reward_adapter needs finetuning_type lora or qlora (the reward adapter "
                         "sits beside the actor's adapter on one backbone)")
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    config = LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], target_modules=saved["target_modules"],
                        lora_dropout=0.0, use_dora=saved.get("use_dora", False), task_type="CAUSAL_LM")
    state = load_file(str(weights_file))
    head_keys = [k for k in state if ".score." in f".{k}" or k.endswith("score.weight")]
    if not head_keys:
        raise ValueError(f"data_options.reward_adapter: {path} holds no `score` head weights")
    weight = state[[k for k in head_keys if k.endswith("weight")][0]]
    head = torch.nn.Linear(weight.size(1), weight.size(0), bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    head.requires_grad_(False)
    actor.add_adapter(REWARD_ADAPTER, config)
    result = set_peft_model_state_dict(actor, {k: v for k, v in state.items() if k not in head_keys},
                                       adapter_name=REWARD_ADAPTER)
    missing = [k for k in getattr(result, "missing_keys", []) if f"{REWARD_ADAPTER}" in k and "lora" in k]
    if missing:
        raise ValueError(f"data_options.reward_adapter: {path} does not fit the actor's model "
                         f"({len(missing)} LoRA weights missing, e.g. {missing[0]})")
    for pname, param in actor.named_parameters():
        if f".{REWARD_ADAPTER}." in pname:
            param.requires_grad_(False)
    return head.to(next(actor.parameters()).device)


class RLModels:
    """Actor, reference, critic and reward adapter behind the few calls the loop makes."""

    def __init__(self, actor, reference_mode: str, critic_mode: str | None, reference_copy=None,
                 critic_backbone=None, reward_head: torch.nn.Linear | None = None):
        self.actor = actor
        self.reference_mode = reference_mode
        self.reference_copy = reference_copy
        self.critic_mode = critic_mode  # None: no critic (group-relative, leave-one-out, REINFORCE++)
        self.critic_backbone = critic_backbone
        self.value_head = ValueHead(hidden_size(actor)).to(next(actor.parameters()).device) if critic_mode else None
        self.reward_head = reward_head
        if reference_mode == "adapter" and not is_peft(actor):
            raise ValueError("data_options.reference=adapter needs finetuning_type lora or qlora")

    # ------------------------------------------------------------ the actor and its critic
    def policy(self, batch: RolloutBatch, temperature: float, with_entropy: bool = False,
               entropy_grad: bool = True) -> tuple[TokenOutputs, torch.Tensor | None]:
        """Actor log-probs (+ entropy, under autograd only if `entropy_grad`); with a shared critic
        also its values from the same forward."""
        shared = self.critic_mode == "shared"
        out = response_outputs(self.actor, batch, temperature, with_entropy=with_entropy, with_hidden=shared,
                               entropy_grad=entropy_grad)
        values = self.value_head(out.hidden) if shared else None
        return out, values

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        """Values of a separate critic (a shared critic's values come with `policy`)."""
        if self.critic_mode != "separate":
            raise RuntimeError("values() is for a separate critic")
        out = response_outputs(self.critic_backbone, batch, with_hidden=True)
        return self.value_head(out.hidden)

    @torch.no_grad()
    def reference_logps(self, batch: RolloutBatch, temperature: float) -> torch.Tensor:
        if self.reference_mode == "copy":
            return response_outputs(self.reference_copy, batch, temperature).logps
        with self.actor.disable_adapter():
            return response_outputs(self.actor, batch, temperature).logps

    @torch.no_grad()
    def adapter_rewards(self, batch: RolloutBatch) -> torch.Tensor:
        """The reward adapter's score at each sequence's last real token."""
        from train.reward_model import last_token_index

        if self.reward_head is None:
            raise RuntimeError("no reward adapter loaded")
        with active_adapter(self.actor, REWARD_ADAPTER):
            out = self.actor(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False, logits_to_keep=1,
                             output_hidden_states=True)
        scores = self.reward_head(out.hidden_states[-1].float()).squeeze(-1)
        return scores[torch.arange(scores.size(0)), last_token_index(batch.attention_mask)]

    # ------------------------------------------------------------ training state
    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        modules = {"actor": self.actor}
        if self.value_head is not None:
            modules["value_head"] = self.value_head
        if self.critic_backbone is not None:
            modules["critic"] = self.critic_backbone
        return modules

    def all_modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.actor, self.reference_copy, self.critic_backbone, self.value_head, self.reward_head)
                if m is not None]


def unique_parameter_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of every distinct parameter/buffer storage of `modules` (a shared backbone counts once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen:
                continue
            seen.add(pointer)
            total += tensor.untyped_storage().nbytes()
    return total


def build_models(cfg, options) -> RLModels:
    """Load the actor (with its finetuning type), then the reference, critic and reward adapter
    the options ask for. Every extra backbone is loaded only when nothing can be shared."""
    import dataclasses

    from train.finetune import apply_finetuning
    from train.model_loading import load_model

    actor = apply_finetuning(load_model(cfg.model, cfg.finetuning, cfg.launch.use_gpu), cfg.finetuning)
    reference_mode = options.reference_mode(cfg.finetuning.finetuning_type)
    frozen = dataclasses.replace(cfg.finetuning, finetuning_type="full") \
        if cfg.finetuning.finetuning_type != "qlora" else cfg.finetuning
    reference_copy = None
    if reference_mode == "copy":
        reference_copy = load_model(cfg.model, frozen, cfg.launch.use_gpu).eval().requires_grad_(False)
    critic_mode = options.critic if options.uses_critic else None
    critic_backbone = None
    if critic_mode == "separate":
        critic_backbone = apply_finetuning(load_model(cfg.model, cfg.finetuning, cfg.launch.use_gpu), cfg.finetuning)
    reward_head = load_reward_adapter(actor, options.reward_adapter) if options.reward_adapter else None
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.launch.use_gpu else torch.device("cpu")
    for module in (actor, reference_copy, critic_backbone):
        if module is not None and not getattr(module, "is_quantized", False):
            module.to(device)
    return RLModels(actor, reference_mode, critic_mode, reference_copy, critic_backbone, reward_head)
