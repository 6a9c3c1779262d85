"""Preference pairs for the rm and dpo stages: read, tokenize with the chat template, collate.

A pair becomes `prompt_ids` + `chosen_ids` / `rejected_ids` (the completion tokens, with
the end-of-turn marker the template adds). Bad pairs are not silently lost: each one is
dropped with a reason and counted for the data card:
- `empty_response`       chosen or rejected is blank;
- `identical_responses`  chosen == rejected (no preference signal);
- `prompt_exceeds_cutoff` the prompt alone fills `cutoff_len`, so no response token is left;
- the SFT encoder's reasons (`not_alternating`, `tool_turn_unsupported`, ...) for prompts
  the template cannot render.
A pair is tokenized like an SFT conversation ending in the response (train.tokenize), so
the trained tokens are the reply plus the template's stop string. Over-long pairs that
still keep response tokens lose the end of the response (TRL's "keep_start"): the
prompt stays whole.

A ranked list (kind `ranked_preference`, K responses best first) is tokenized the same way,
response by response; it keeps `ranked_ids` (all K) beside `chosen_ids` / `rejected_ids`
(best / worst), so the reward model trains on every pair of the list while DPO and the eval
metrics use its best-vs-worst pair.

Also here: `generate_preference_rows`, the small toy preference set the stages train on
when no data is given.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.convert import trl_to_preference
from schemas.funnel import StageCount
from schemas.validate import table_from_rows, validate

DROP_EMPTY = "empty_response"
DROP_IDENTICAL = "identical_responses"
DROP_PROMPT_TOO_LONG = "prompt_exceeds_cutoff"
STAGE_NAME = "preference_tokenize"
IGNORE_INDEX = -100


# ---------------------------------------------------------------- reading
def read_preference_file(path: str | Path) -> pa.Table:
    """A preference table from Parquet (our schema), or JSON/JSONL with TRL's prompt/chosen/rejected."""
    path = Path(path)
    if path.is_dir():
        from schemas.dataset_io import read_parquet_dir

        return read_parquet_dir(path, "preference")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return validate(pq.read_table(path), "preference")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of prompt/chosen/rejected rows")
    return trl_to_preference(rows, source=str(path))


# ---------------------------------------------------------------- tokenizing
def resolve_template(name: str | None, tokenizer):
    """A train.templates template by name; None = the tokenizer's own chat template."""
    from train.templates import get_template

    return get_template(name or "tokenizer", tokenizer)


def _response_ids(row: dict, response: str, tokenizer, template, cutoff_len: int) -> tuple[list[int], list[int]] | str:
    """(prompt ids, response ids) of prompt + one response, or a drop reason.

    The SFT encoder does the rendering, masking and truncation, so a preference pair is
    tokenized exactly like an SFT conversation whose last assistant turn is the response:
    the labelled tokens are the reply plus the template's stop string.
    """
    from train.tokenize import Drop, encode_sft

    messages = [{"role": m["role"], "content": m["content"], "tool_calls": m.get("tool_calls")} for m in row["prompt"]]
    encoded = encode_sft({"messages": messages + [{"role": "assistant", "content": response}],
                          "system": row.get("system")}, tokenizer, template, cutoff_len, mask_history=True)
    if isinstance(encoded, Drop):
        return DROP_PROMPT_TOO_LONG if encoded.reason == "no_labels_after_cutoff" else encoded.reason
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    return encoded.input_ids[:first], encoded.input_ids[first:]


@dataclass
class TokenizedPreferences:
    examples: list[dict]                # id, prompt_ids, chosen_ids, rejected_ids (+ margin when given)
    count: StageCount                   # rows in / kept / dropped by reason
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (row id, reason)


def tokenize_pair(row: dict, tokenizer, template, cutoff_len: int) -> dict | str:
    """One pair as ids, or the reason it is dropped."""
    chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
    if not chosen or not rejected:
        return DROP_EMPTY
    if chosen == rejected:
        return DROP_IDENTICAL
    pieces = []
    for response in (row["chosen"], row["rejected"]):
        out = _response_ids(row, response, tokenizer, template, cutoff_len)
        if isinstance(out, str):
            return out
        pieces.append(out)
    (prompt_ids, chosen_ids), (other_prompt, rejected_ids) = pieces
    if prompt_ids != other_prompt:
        raise ValueError(f"preference row {row['id']!r}: the template renders the prompt differently before "
                         "the chosen and the rejected response")
    example = {"id": row["id"], "prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
    if row.get("margin") is not None:
        example["margin"] = float(row["margin"])
    return example


def tokenize_ranked(row: dict, tokenizer, template, cutoff_len: int) -> dict | str:
    """One ranked list as ids (`ranked_ids` best first, plus best/worst as chosen/rejected),
    or the reason it is dropped."""
    template = template if template is not None else resolve_template(None, tokenizer)
    responses = [r.strip() for r in row["responses"]]
    if any(not r for r in responses):
        return DROP_EMPTY
    if len(set(responses)) != len(responses):
        return DROP_IDENTICAL  # the same text at two ranks carries a contradictory preference
    prompt_ids, ranked = None, []
    for response in row["responses"]:
        out = _response_ids(row, response, tokenizer, template, cutoff_len)
        if isinstance(out, str):
            return out
        if prompt_ids is not None and out[0] != prompt_ids:
            raise ValueError(f"ranked row {row['id']!r}: the template renders the prompt differently before "
                             "two of its responses")
        prompt_ids = out[0]
        ranked.append(out[1])
    return {"id": row["id"], "prompt_ids": prompt_ids, "chosen_ids": ranked[0], "rejected_ids": ranked[-1],
            "ranked_ids": ranked}


def tokenize_preferences(table: pa.Table, tokenizer, cutoff_len: int = 1024, template=None) -> TokenizedPreferences:
    """Tokenize every pair of a preference table; drops are counted, never silent.

    `template` is a train.templates Template (None: the tokenizer's chat template).
    """
    template = template if template is not None else resolve_template(None, tokenizer)
    rows = validate(table, "preference").to_pylist()
    examples, dropped = [], []
    for row in rows:
        out = tokenize_pair(row, tokenizer, template, cutoff_len)
        if isinstance(out, str):
            dropped.append((row["id"], out))
        else:
            examples.append(out)
    by_reason: dict[str, int] = {}
    for _, reason in dropped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    count = StageCount(STAGE_NAME, rows_in=len(rows), kept=len(examples), dropped=by_reason)
    count.check()
    return TokenizedPreferences(examples, count, dropped)


# ---------------------------------------------------------------- collating
def _pad(seqs: list[list[int]], value: int) -> "torch.Tensor":
    import torch

    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def _ids(value) -> list[int]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict:
    """Batch of 2B right-padded sequences: the B chosen first, then the B rejected (TRL's order).

    `labels` are the input ids on response tokens and IGNORE_INDEX elsewhere.
    `ref_chosen_logps` / `ref_rejected_logps` pass through when precomputed.
    """
    seqs, labels = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for ex in examples:
            prompt, response = _ids(ex["prompt_ids"]), _ids(ex[key])
            seqs.append(prompt + response)
            labels.append([IGNORE_INDEX] * len(prompt) + response)
    input_ids = _pad(seqs, pad_token_id)
    attention_mask = _pad([[1] * len(s) for s in seqs], 0)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": _pad(labels, IGNORE_INDEX)}
    return {**batch, **pair_extras(examples)}


def pair_extras(examples: list[dict]) -> dict:
    """What a pair batch carries besides its tokens, whatever its layout (padded here, packed
    in train.packed_pairs): precomputed reference log-probs, margins, pair ids."""
    import torch

    extras = {}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key in examples[0]:
            extras[key] = torch.tensor([float(ex[key]) for ex in examples])
    if "margin" in examples[0]:
        extras["margin"] = torch.tensor([float(ex.get("margin") or 0.0) for ex in examples])
    if "id" in examples[0]:
        extras["ids"] = [str(ex["id"]) for ex in examples]  # a list: Trainer leaves it on the host
    return extras


def _ranked_responses(example: dict) -> list[list[int]]:
    """The example's responses best first: its ranked list, or [chosen, rejected] for a pair."""
    ranked = example.get("ranked_ids")
    if ranked is None:
        return [_ids(example["chosen_ids"]), _ids(example["rejected_ids"])]
    return [_ids(r) for r in ranked]


def has_ranked_lists(examples: list[dict]) -> bool:
    return any(ex.get("ranked_ids") is not None and len(ex["ranked_ids"]) > 2 for ex in examples)


def collate_ranked(examples: list[dict], pad_token_id: int) -> dict:
    """Batch of K·B right-padded sequences, rank-major: rank 0 of every example, then rank 1, ...
    (for K = 2 exactly the pair layout). `rank_mask` [B, K] marks real responses: a shorter
    list is filled with copies of its last response, which the mask leaves out of the loss."""
    import torch

    lists = [_ranked_responses(ex) for ex in examples]
    k = max(len(r) for r in lists)
    seqs, labels = [], []
    for rank in range(k):
        for ex, responses in zip(examples, lists):
            prompt, response = _ids(ex["prompt_ids"]), responses[min(rank, len(responses) - 1)]
            seqs.append(prompt + response)
            labels.append([IGNORE_INDEX] * len(prompt) + response)
    batch = {"input_ids": _pad(seqs, pad_token_id), "attention_mask": _pad([[1] * len(s) for s in seqs], 0),
             "labels": _pad(labels, IGNORE_INDEX),
             "rank_mask": torch.tensor([[1 if rank < len(r) else 0 for rank in range(k)] for r in lists])}
    if "id" in examples[0]:
        batch["ids"] = [str(ex["id"]) for ex in examples]
    return batch


class PreferenceCollator:
    """Picklable collator for HF Trainer / torch DataLoader: pairs, or ranked lists when a
    batch holds any list longer than two."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        if has_ranked_lists(examples):
            return collate_ranked(examples, self.pad_token_id)
        return collate_pairs(examples, self.pad_token_id)


# ---------------------------------------------------------------- toy data
_SUBJECTS = ["the model", "a river", "the city", "our team", "the data", "a student", "the garden", "this paper"]
_VERBS = ["describes", "improves", "follows", "measures", "explains", "collects", "builds", "answers"]
_OBJECTS = ["the results", "a short story", "clean text", "the weather", "three examples", "the question",
            "a simple plan", "every detail"]
_TAILS = ["today.", "with care.", "in one step.", "before noon.", "for the report."]


def generate_preference_rows(n: int = 256, seed: int = 0) -> list[dict]:
    """A separable toy preference set in our schema (as dicts).

    The prompt asks for a sentence about a subject; the chosen answer is a well-formed
    sentence about that subject, the rejected one is the same words scrambled and
    stuttered. A tiny model learns to tell them apart in a few hundred steps.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject, verb, obj, tail = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)
        good = f"{subject.capitalize()} {verb} {obj} {tail}"
        words = f"{subject} {verb} {obj}".split()
        rng.shuffle(words)
        bad = " ".join(words[:2] + words[:2] + words[2:])
        rows.append({
            "id": f"toy-{seed}-{i}",
            "prompt": [{"role": "user", "content": f"Write one sentence about {subject}.", "tool_calls": None}],
            "chosen": good,
            "rejected": bad,
            "source": "raymill.toy_preferences",
        })
    return rows


def toy_preference_table(n: int = 256, seed: int = 0) -> pa.Table:
    return table_from_rows(generate_preference_rows(n, seed), "preference")


def split_train_eval(table: pa.Table, eval_fraction: float, seed: int = 0) -> tuple[pa.Table, pa.Table | None]:
    """Deterministic row split; eval gets at least one row when the fraction is positive."""
    if eval_fraction <= 0 or table.num_rows < 2:
        return table, None
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(table.num_rows * eval_fraction)))
    return table.take(sorted(order[n_eval:])), table.take(sorted(order[:n_eval]))
