"""The reward model: a causal-LM backbone with a one-output linear head, scored at the
last real token of each sequence.

We train and save it as a Hugging Face sequence-classification model with `num_labels=1`
(the layout TRL's RewardTrainer and serving engines read), but we do not use its pooling:
it picks "the rightmost token that is not the pad token", which is wrong when the pad
token is also the end-of-text token (a common setup) and for packed rows. Instead we
capture the head's per-token output with a forward hook — through any PEFT / DDP /
DeepSpeed wrapper, so gradients flow as usual — and pick the last real token ourselves
from the attention mask (right or left padding) or from `position_ids` (packed rows).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import torch

REWARD_CARD = "raymill_reward.json"


# ---------------------------------------------------------------- last-token indices
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the rightmost attended token of each row (right or left padding)."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(dim=1)


def packed_segment_ends(position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of the last token of every example packed into rows.

    A segment ends where the next position restarts at 0, where padding begins, or at
    the end of the row. Segments are returned in row-major order, i.e. packing order.
    """
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(position_ids, dtype=torch.bool)
    next_pos = torch.nn.functional.pad(position_ids[:, 1:], (0, 1), value=0)
    next_real = torch.nn.functional.pad(real[:, 1:], (0, 1), value=False)
    is_end = real & ((next_pos == 0) | ~next_real)
    rows, cols = is_end.nonzero(as_tuple=True)
    return rows, cols


# ---------------------------------------------------------------- capturing the head
def _head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The `score` head, through PEFT / DDP / DeepSpeed wrappers (shortest matching name)."""
    candidates = [(name, m) for name, m in model.named_modules() if name.split(".")[-1] == "score"]
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no `score` head: load the reward model with "
                         "AutoModelForSequenceClassification(num_labels=1)")
    return min(candidates, key=lambda c: len(c[0]))[1]


@contextlib.contextmanager
def _captured_head_output(model: torch.nn.Module) -> Iterator[list]:
    box: list = []
    handle = _head_module(model).register_forward_hook(lambda _m, _i, out: box.append(out))
    try:
        yield box
    finally:
        handle.remove()


def token_scores(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar head output at every position, [batch, T]."""
    with _captured_head_output(model) as box:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if len(box) != 1:
        raise RuntimeError(f"expected the score head to run once per forward, it ran {len(box)} times")
    return box[0].squeeze(-1).float()


def sequence_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     position_ids: torch.Tensor | None = None, packed: bool = False) -> torch.Tensor:
    """One reward per sequence: the head output at its last real token.

    Padded batches ([batch, T] with attention_mask): one reward per row.
    Packed rows (`packed=True`, `position_ids` restarting at 0 per example and no
    attention mask, or a mask that only marks trailing padding): one per example.
    """
    if packed:
        if position_ids is None:
            raise ValueError("packed rows need position_ids that restart at 0 for every example")
        # The attention mask of a packed row marks padding only; the backbone finds the
        # example boundaries from position_ids, so it gets no mask.
        scores = token_scores(model, input_ids, None, position_ids)
        rows, cols = packed_segment_ends(position_ids, attention_mask)
        return scores[rows, cols]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if position_ids is None:
        # Left-padded rows must still count positions from their first real token.
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    scores = token_scores(model, input_ids, attention_mask, position_ids)
    return scores[torch.arange(scores.size(0), device=scores.device), last_token_index(attention_mask)]


# ---------------------------------------------------------------- building, saving, loading
def build_reward_model(model_path: str | Path, tokenizer=None, **from_pretrained_kwargs) -> torch.nn.Module:
    """A fresh reward model on a causal-LM (or reward-model) checkpoint: backbone + new scalar head."""
    from transformers import AutoModelForSequenceClassification

    from_pretrained_kwargs.setdefault("num_labels", 1)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_path), **from_pretrained_kwargs)
    if model.config.num_labels != 1:
        raise ValueError(f"{model_path}: a reward model needs num_labels=1, got {model.config.num_labels}")
    if tokenizer is not None and model.config.pad_token_id is None:
        # HF's own pooling refuses batches without a pad id; ours does not need it, but keep
        # the saved config usable by other readers.
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return model


def save_reward_model(model: torch.nn.Module, tokenizer, path: str | Path, info: dict | None = None) -> Path:
    """Save weights (LoRA adapters merged), tokenizer and a small card describing how to score."""
    from schemas.dataset_io import atomic_output_dir, write_json

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with atomic_output_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json({"kind": "reward_model", "pooling": "last_real_token", **(info or {})}, Path(tmp) / REWARD_CARD)
    return Path(path)


class RewardModel:
    """A loaded reward model that scores conversations or plain texts.

    Conversations are tokenized exactly as the rm stage tokenized its pairs (the chat
    template through train.tokenize, ending at the reply's stop string), so the score is
    read at the same token the head was trained on.
    """

    def __init__(self, model, tokenizer, max_length: int = 2048, batch_size: int = 8, template: str | None = None):
        from train.preference_data import resolve_template

        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.template = resolve_template(template, tokenizer)

    def _ids(self, item: str | Sequence[dict]) -> list[int]:
        from train.tokenize import Drop, encode_sft

        if isinstance(item, str):
            ids = self.tokenizer(item, add_special_tokens=False)["input_ids"][-self.max_length:]
        else:
            messages = [dict(m) for m in item]
            if not messages or messages[-1].get("role") != "assistant":
                raise ValueError("a conversation to score must end with the assistant's response")
            encoded = encode_sft({"messages": messages}, self.tokenizer, self.template, self.max_length,
                                 mask_history=True)
            if isinstance(encoded, Drop):
                raise ValueError(f"cannot score this conversation: {encoded.reason} ({encoded.detail})")
            ids = encoded.input_ids
        if not ids:
            raise ValueError("cannot score an empty text")
        return ids

    @torch.no_grad()
    def score(self, items: Sequence[str | Sequence[dict]]) -> list[float]:
        """Scores of plain texts or conversations (message lists ending with the assistant turn)."""
        out: list[float] = []
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(items), self.batch_size):
            seqs = [self._ids(item) for item in items[start:start + self.batch_size]]
            width = max(len(s) for s in seqs)
            input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
            out += sequence_rewards(self.model, input_ids, mask).tolist()
        return out

    def score_responses(self, prompts: Sequence[Sequence[dict]], responses: Sequence[str]) -> list[float]:
        """Scores of `responses[i]` as the assistant's answer to the conversation `prompts[i]`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score([list(p) + [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)])


def load_reward_model(path: str | Path, device: str | None = None, dtype: torch.dtype | None = None,
                      batch_size: int = 8) -> RewardModel:
    """Load a reward model saved by `save_reward_model` (or any num_labels=1 classifier)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a saved model (no config.json)")
    card = json.loads((path / REWARD_CARD).read_text(encoding="utf-8")) if (path / REWARD_CARD).exists() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype or torch.float32)
    if model.config.num_labels != 1:
        raise ValueError(f"{path}: not a reward model (num_labels={model.config.num_labels}, expected 1)")
    if device:
        model.to(device)
    return RewardModel(model, tokenizer, max_length=int(card.get("cutoff_len") or 2048), batch_size=batch_size,
                       template=card.get("template"))
