"""The prompt set of an RL run: read, tokenized once on the driver, kept or dropped with a reason.

Accepted rows: `prompt` (text or a message list), `messages` (trailing assistant turns are
cut: the policy answers the last user turn), alpaca `instruction` + `input`, or `text`
(a raw-text prompt, no chat template). Message prompts go through the tokenizer's chat
template with the generation prompt added. Prompts longer than the window
(`max_prompt_tokens`, default cutoff_len − max_new_tokens) are dropped and counted.
Prompt sets are small next to training corpora, so they are tokenized in one pass here;
the result is a Ray Dataset that Ray Train splits between the workers.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable

import pyarrow as pa

DROP_TOO_LONG = "prompt_too_long"
DROP_EMPTY = "empty_prompt"
DROP_NO_FIELD = "no_prompt_field"


def prompt_messages(row: dict) -> tuple[list[dict] | None, str | None] | str:
    """(messages, None) for a chat prompt, (None, text) for a raw-text one, or a drop reason."""
    system = row.get("system")
    messages: Any = None
    if "prompt" in row and row["prompt"] is not None:
        messages = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": str(row["prompt"])}]
    elif isinstance(row.get("messages"), list):
        messages = list(row["messages"])
        while messages and messages[-1].get("role") == "assistant":
            messages.pop()
    elif row.get("instruction"):
        text = str(row["instruction"]) + (f"\n\n{row['input']}" if str(row.get("input") or "").strip() else "")
        messages = [{"role": "user", "content": text}]
    elif row.get("text") is not None:
        text = str(row["text"])
        return (None, text) if text.strip() else DROP_EMPTY
    else:
        return DROP_NO_FIELD
    messages = [{"role": m.get("role", "user"), "content": str(m.get("content") or "")} for m in messages]
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": str(system)})
    if not messages or not any(m["content"].strip() for m in messages):
        return DROP_EMPTY
    return messages, None


def encode_prompt(row: dict, tokenizer, max_tokens: int) -> dict | str:
    """A kept prompt row {prompt_ids, prompt_text, prompt_messages} or a drop reason."""
    parsed = prompt_messages(row)
    if isinstance(parsed, str):
        return parsed
    messages, text = parsed
    if messages is not None:
        if not tokenizer.chat_template:
            raise ValueError("chat prompts need a tokenizer with a chat template (or give raw-text prompts as `text`)")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        text = tokenizer.decode(ids)
    else:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        return DROP_EMPTY
    if len(ids) > max_tokens:
        return DROP_TOO_LONG
    return {"prompt_ids": [int(i) for i in ids], "prompt_text": text,
            "prompt_messages": json.dumps(messages, ensure_ascii=False) if messages is not None else None}


class PromptStats(dict):
    """Counts for data_stats.json plus per-prompt rows (no text) for the training data card."""

    def __init__(self, counts: dict, card_rows: pa.Table):
        super().__init__(counts)
        self.card_rows = card_rows

    def card_dataset(self) -> pa.Table:
        return self.card_rows

    def funnel(self) -> list:
        from schemas.funnel import StageCount

        return [StageCount(stage="rl_prompts", rows_in=self["rows_in"], kept=self["kept"], dropped=dict(self["dropped"]))]


def tokenize_prompts(rows: Iterable[tuple[str, dict]], tokenizer, max_tokens: int) -> tuple[list[dict], PromptStats]:
    """(kept prompt rows, stats) from (id, raw row) pairs."""
    kept, ids, lengths, reasons = [], [], [], []
    for rid, row in rows:
        out = encode_prompt(row, tokenizer, max_tokens) if isinstance(row, dict) else DROP_NO_FIELD
        ids.append(rid)
        if isinstance(out, dict):
            kept.append({"id": rid, **out})
            lengths.append(len(out["prompt_ids"]))
            reasons.append(None)
        else:
            lengths.append(None)
            reasons.append(out)
    drops = Counter(r for r in reasons if r)
    stats = PromptStats({"stage": "rl_prompts", "rows_in": len(ids), "kept": len(kept),
                         "dropped": dict(sorted(drops.items())), "max_prompt_tokens": max_tokens},
                        pa.table({"id": pa.array(ids, pa.string()), "prompt_tokens": pa.array(lengths, pa.int32()),
                                  "drop_reason": pa.array(reasons, pa.string())}))
    return kept, stats


def read_prompt_rows(data: list[str]) -> Iterable[tuple[str, dict]]:
    """(id, raw row) of every input file or registry name, in order."""
    from pathlib import Path

    from train.formats import DatasetSpec, iter_raw_rows, load_dataset_spec

    for entry in data:
        # A prompt file's rows are read as they are (see prompt_messages), so a path needs no
        # format sniffing; a registry name still resolves through the registry.
        path = Path(str(entry)).expanduser()
        spec = DatasetSpec(name=path.stem, path=str(path), format="sft") if path.exists() else load_dataset_spec(entry)
        for index, row in enumerate(iter_raw_rows(spec)):
            rid = str(row.get("id")) if isinstance(row, dict) and row.get("id") is not None else f"{spec.name}-{index}"
            yield rid, row


def prompt_rows(cfg, options) -> tuple[list[dict], PromptStats]:
    """(kept tokenized prompts, stats) without Ray; a one-line error when no prompt is left.
    The launcher's preflight calls it too, so an empty prompt set fails before Ray starts."""
    from train.args import TrainConfigError
    from train.model_loading import load_tokenizer
    from train.rl.default import default_prompts_file

    data = list(cfg.data.data) or [default_prompts_file()]
    window = options.max_prompt_tokens or cfg.data.cutoff_len - options.max_new_tokens
    if window < 1:
        raise TrainConfigError(f"cutoff_len ({cfg.data.cutoff_len}) leaves no room for prompts after "
                               f"max_new_tokens ({options.max_new_tokens})")
    try:
        kept, stats = tokenize_prompts(read_prompt_rows(data), load_tokenizer(cfg.model), window)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainConfigError(f"prompt set {data}: {exc}") from None
    if not kept:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["dropped"].items()) or "the files hold no rows"
        raise TrainConfigError(f"empty prompt set: {stats['rows_in']} rows read from {data}, none kept ({reasons})")
    if len(kept) < cfg.launch.num_workers:
        raise TrainConfigError(f"{len(kept)} prompts are fewer than num_workers={cfg.launch.num_workers}")
    return kept, stats


def build_prompt_dataset(cfg, options) -> tuple[Any, PromptStats]:
    """(Ray Dataset of tokenized prompts, stats)."""
    import ray.data

    kept, stats = prompt_rows(cfg, options)
    return ray.data.from_items(kept), stats
