"""Converters between raymill record kinds and the formats people already use.

- Hugging Face `datasets.Dataset` (any kind, lossless through Arrow);
- TRL's conversational formats: `{"messages": [...]}` for SFT and
  `{"prompt": [...], "chosen": [...], "rejected": [...]}` for preferences
  (TRL's "standard" string form of prompt/chosen/rejected is read too);
- LLaMA-Factory's alpaca and sharegpt files, with their `dataset_info.json` entry.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from schemas.validate import SchemaError, table_from_rows, validate

Row = dict[str, Any]


# ---------------------------------------------------------------- Hugging Face datasets
def to_hf_dataset(table: pa.Table, kind: str):
    """A `datasets.Dataset` over the validated table (zero-copy through Arrow)."""
    import datasets

    return datasets.Dataset(validate(table, kind))


def from_hf_dataset(dataset, kind: str) -> pa.Table:
    """The Arrow table under a `datasets.Dataset`, validated as `kind`."""
    return validate(dataset.with_format("arrow")[:], kind) if len(dataset) else validate(dataset.data.table, kind)


# ---------------------------------------------------------------- shared message helpers
def _message(role: str, content: str, tool_calls: str | None = None) -> Row:
    return {"role": role, "content": content, "tool_calls": tool_calls}


def _plain_messages(messages: Iterable[Row]) -> list[Row]:
    """Messages as TRL / chat templates expect them: no null tool_calls key."""
    out = []
    for m in messages:
        item = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            item["tool_calls"] = json.loads(m["tool_calls"])
        out.append(item)
    return out


def _split_system(messages: list[Row], index: int) -> tuple[str | None, list[Row]]:
    """Pull a leading system message out of a TRL conversation into the `system` field."""
    if messages and messages[0].get("role") == "system":
        rest = messages[1:]
        if any(m.get("role") == "system" for m in rest):
            raise SchemaError("sft", "messages.role", "a system message is only allowed as the first turn", index)
        return messages[0].get("content"), rest
    return None, messages


def _ours(messages: list[Row]) -> list[Row]:
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        out.append(_message(m.get("role"), m.get("content") or "", json.dumps(calls) if calls else None))
    return out


def _row_id(row: Row, prefix: str, index: int) -> str:
    return str(row.get("id") if row.get("id") is not None else f"{prefix}-{index}")


# ---------------------------------------------------------------- TRL
def sft_to_trl(table: pa.Table) -> list[Row]:
    rows = []
    for r in validate(table, "sft").to_pylist():
        messages = _plain_messages(r["messages"])
        if r.get("system"):
            messages = [{"role": "system", "content": r["system"]}] + messages
        rows.append({"messages": messages})
    return rows


def trl_to_sft(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    out = []
    for i, r in enumerate(rows):
        if "messages" not in r:
            raise SchemaError("sft", "messages", "is missing (TRL conversational rows need 'messages')", i)
        system, messages = _split_system(list(r["messages"]), i)
        out.append({"id": _row_id(r, "sft", i), "messages": _ours(messages), "system": system, "source": source})
    return table_from_rows(out, "sft")


def preference_to_trl(table: pa.Table) -> list[Row]:
    rows = []
    for r in validate(table, "preference").to_pylist():
        prompt = _plain_messages(r["prompt"])
        if r.get("system"):
            prompt = [{"role": "system", "content": r["system"]}] + prompt
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        })
    return rows


def _response_text(value: Any, field: str, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
        return value[0].get("content") or ""
    raise SchemaError("preference", field, "must be a string or a single assistant message", index)


def trl_to_preference(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    """Read TRL conversational or standard (plain string) prompt/chosen/rejected rows."""
    out = []
    for i, r in enumerate(rows):
        for key in ("prompt", "chosen", "rejected"):
            if key not in r:
                raise SchemaError("preference", key, "is missing", i)
        prompt = r["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        system, prompt = _split_system(list(prompt), i)
        out.append({
            "id": _row_id(r, "pref", i),
            "prompt": _ours(prompt),
            "chosen": _response_text(r["chosen"], "chosen", i),
            "rejected": _response_text(r["rejected"], "rejected", i),
            "system": system,
            "source": source,
        })
    return table_from_rows(out, "preference")


# ---------------------------------------------------------------- LLaMA-Factory alpaca
def _pairs(messages: list[Row], kind: str, index: int) -> list[tuple[str, str]]:
    """(user, assistant) pairs; alpaca can only hold strictly alternating text turns."""
    if len(messages) % 2:
        raise SchemaError(kind, "messages", "alpaca needs user/assistant pairs", index)
    pairs = []
    for j in range(0, len(messages), 2):
        u, a = messages[j], messages[j + 1]
        if u["role"] != "user" or a["role"] != "assistant" or a.get("tool_calls"):
            raise SchemaError(kind, "messages", "alpaca holds only alternating user/assistant text turns", index)
        pairs.append((u["content"], a["content"]))
    return pairs


def sft_to_alpaca(table: pa.Table) -> list[Row]:
    rows = []
    for i, r in enumerate(validate(table, "sft").to_pylist()):
        pairs = _pairs(r["messages"], "sft", i)
        row = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1],
               "history": [list(p) for p in pairs[:-1]]}
        if r.get("system"):
            row["system"] = r["system"]
        rows.append(row)
    return rows


def _alpaca_prompt(r: Row, index: int, kind: str) -> tuple[list[Row], str | None]:
    if not isinstance(r.get("instruction"), str):
        raise SchemaError(kind, "instruction", "is missing or not a string", index)
    query = r["instruction"] if not r.get("input") else f"{r['instruction']}\n{r['input']}"
    messages: list[Row] = []
    for turn in r.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise SchemaError(kind, "history", "each history item must be [query, response]", index)
        messages += [_message("user", turn[0]), _message("assistant", turn[1])]
    messages.append(_message("user", query))
    return messages, r.get("system") or None


def alpaca_to_sft(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    out = []
    for i, r in enumerate(rows):
        messages, system = _alpaca_prompt(r, i, "sft")
        if not isinstance(r.get("output"), str):
            raise SchemaError("sft", "output", "is missing or not a string", i)
        messages.append(_message("assistant", r["output"]))
        out.append({"id": _row_id(r, "sft", i), "messages": messages, "system": system, "source": source})
    return table_from_rows(out, "sft")


def preference_to_alpaca(table: pa.Table) -> list[Row]:
    rows = []
    for i, r in enumerate(validate(table, "preference").to_pylist()):
        pairs = _pairs(r["prompt"] + [_message("assistant", "")], "preference", i)
        row = {"instruction": pairs[-1][0], "input": "", "chosen": r["chosen"], "rejected": r["rejected"],
               "history": [list(p) for p in pairs[:-1]]}
        if r.get("system"):
            row["system"] = r["system"]
        rows.append(row)
    return rows


def alpaca_to_preference(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    out = []
    for i, r in enumerate(rows):
        prompt, system = _alpaca_prompt(r, i, "preference")
        out.append({"id": _row_id(r, "pref", i), "prompt": prompt, "system": system, "source": source,
                    "chosen": _response_text(r.get("chosen"), "chosen", i),
                    "rejected": _response_text(r.get("rejected"), "rejected", i)})
    return table_from_rows(out, "preference")


# ---------------------------------------------------------------- LLaMA-Factory sharegpt
_TO_SHAREGPT = {"user": "human", "assistant": "gpt", "tool": "observation"}
_FROM_SHAREGPT = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "observation": "tool", "function_call": "assistant"}


def _to_sharegpt_turns(messages: list[Row]) -> list[Row]:
    turns = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            turns.append({"from": "function_call", "value": m["tool_calls"]})
        else:
            turns.append({"from": _TO_SHAREGPT[m["role"]], "value": m["content"]})
    return turns


def _from_sharegpt_turns(turns: Any, kind: str, index: int) -> list[Row]:
    if not isinstance(turns, list):
        raise SchemaError(kind, "conversations", "must be a list of {from, value}", index)
    messages = []
    for t in turns:
        role = _FROM_SHAREGPT.get(t.get("from")) if isinstance(t, dict) else None
        if role is None:
            raise SchemaError(kind, "conversations.from", f"unknown speaker {t!r}", index)
        if t["from"] == "function_call":
            messages.append(_message("assistant", "", t.get("value")))
        else:
            messages.append(_message(role, t.get("value") or ""))
    return messages


def sft_to_sharegpt(table: pa.Table) -> list[Row]:
    rows = []
    for r in validate(table, "sft").to_pylist():
        row: Row = {"conversations": _to_sharegpt_turns(r["messages"])}
        if r.get("system"):
            row["system"] = r["system"]
        if r.get("tools"):
            row["tools"] = r["tools"]
        rows.append(row)
    return rows


def sharegpt_to_sft(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    out = []
    for i, r in enumerate(rows):
        messages = _from_sharegpt_turns(r.get("conversations"), "sft", i)
        system = r.get("system")
        if messages and messages[0]["role"] == "system":
            system, messages = messages[0]["content"], messages[1:]
        out.append({"id": _row_id(r, "sft", i), "messages": messages, "system": system or None,
                    "tools": r.get("tools") or None, "source": source})
    return table_from_rows(out, "sft")


def preference_to_sharegpt(table: pa.Table) -> list[Row]:
    rows = []
    for r in validate(table, "preference").to_pylist():
        row: Row = {"conversations": _to_sharegpt_turns(r["prompt"]),
                    "chosen": {"from": "gpt", "value": r["chosen"]},
                    "rejected": {"from": "gpt", "value": r["rejected"]}}
        if r.get("system"):
            row["system"] = r["system"]
        rows.append(row)
    return rows


def sharegpt_to_preference(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    out = []
    for i, r in enumerate(rows):
        prompt = _from_sharegpt_turns(r.get("conversations"), "preference", i)
        responses = {}
        for key in ("chosen", "rejected"):
            value = r.get(key)
            if not (isinstance(value, dict) and isinstance(value.get("value"), str)):
                raise SchemaError("preference", key, "must be a {from, value} turn", i)
            responses[key] = value["value"]
        out.append({"id": _row_id(r, "pref", i), "prompt": prompt, "system": r.get("system") or None,
                    "source": source, **responses})
    return table_from_rows(out, "preference")


# ---------------------------------------------------------------- LLaMA-Factory files
_WRITERS = {
    ("sft", "alpaca"): sft_to_alpaca, ("sft", "sharegpt"): sft_to_sharegpt,
    ("preference", "alpaca"): preference_to_alpaca, ("preference", "sharegpt"): preference_to_sharegpt,
}
_READERS = {
    ("sft", "alpaca"): alpaca_to_sft, ("sft", "sharegpt"): sharegpt_to_sft,
    ("preference", "alpaca"): alpaca_to_preference, ("preference", "sharegpt"): sharegpt_to_preference,
}


def _dataset_info_entry(file_name: str, kind: str, formatting: str) -> Row:
    entry: Row = {"file_name": file_name, "formatting": formatting}
    if kind == "preference":
        entry["ranking"] = True
    if formatting == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "system": "system", "history": "history"}
        if kind == "preference":
            columns.update(chosen="chosen", rejected="rejected")
        else:
            columns["response"] = "output"
    else:
        columns = {"messages": "conversations", "system": "system"}
        if kind == "preference":
            columns.update(chosen="chosen", rejected="rejected")
        else:
            columns["tools"] = "tools"
    entry["columns"] = columns
    return entry


def write_llamafactory(table: pa.Table, kind: str, directory: str | Path, name: str, formatting: str = "sharegpt") -> Path:
    """Write `name.json` in LLaMA-Factory's format and add its entry to `dataset_info.json`."""
    if (kind, formatting) not in _WRITERS:
        raise ValueError(f"no LLaMA-Factory writer for kind={kind!r} formatting={formatting!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    file_name = f"{name}.json"
    rows = _WRITERS[(kind, formatting)](table)
    tmp = directory / f".{file_name}.tmp"
    tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(directory / file_name)
    info_path = directory / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name] = _dataset_info_entry(file_name, kind, formatting)
    tmp = directory / ".dataset_info.json.tmp"
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(info_path)
    return directory / file_name


def read_llamafactory(directory: str | Path, name: str) -> tuple[str, pa.Table]:
    """Read the dataset `name` described in `directory/dataset_info.json`; returns (kind, table).

    The entry's `columns` and sharegpt `tags` are honoured; JSON and JSONL files are read.
    A row with images, videos or audios is refused: these converters carry text only.
    """
    directory = Path(directory)
    info_path = directory / "dataset_info.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if name not in info:
        raise KeyError(f"dataset {name!r} is not in {info_path} (has: {sorted(info)})")
    entry = info[name]
    formatting = entry.get("formatting", "alpaca")
    kind = "preference" if entry.get("ranking") else "sft"
    columns = llamafactory_columns(formatting, entry.get("columns"), name)
    tags = llamafactory_tags(formatting, entry.get("tags"), name)
    path = directory / entry["file_name"]
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    renamed = []
    for i, row in enumerate(rows):
        media = llamafactory_media(row, columns)
        if media:
            raise SchemaError(kind, media[0], "multimodal rows are not supported (text only)", i)
        renamed.append(llamafactory_row(row, formatting, columns, tags))
    return kind, _READERS[(kind, formatting)](renamed, source=name)


# ---------------------------------------------------------------- LLaMA-Factory entries: columns and tags
# LLaMA-Factory's names in an entry's `columns` -> the key our alpaca/sharegpt readers take.
# Our own key names (instruction, conversations, ...) are accepted as `columns` keys too.
LLAMAFACTORY_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
               "system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected",
               "instruction": "instruction", "input": "input", "output": "output", "id": "id"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen",
                 "rejected": "rejected", "conversations": "conversations", "id": "id"},
}
# Columns that hold images/videos/audios: a row with any is not trainable as text.
LLAMAFACTORY_MEDIA_COLUMNS = ("images", "videos", "audios")
# KTO's desirable/undesirable label: no raymill stage trains KTO; rows are read as SFT.
LLAMAFACTORY_IGNORED_COLUMNS = ("kto_tag",)
# sharegpt turn layout: the keys of a turn and the speaker names, with LLaMA-Factory's defaults.
LLAMAFACTORY_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                     "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_SPEAKER_OF_TAG = {"user_tag": "human", "assistant_tag": "gpt", "observation_tag": "observation",
                   "function_tag": "function_call", "system_tag": "system"}


def llamafactory_columns(formatting: str, columns: Any, dataset: str) -> dict[str, str]:
    """An entry's `columns` checked for `formatting`: {LLaMA-Factory column name: file column}."""
    if formatting not in LLAMAFACTORY_COLUMNS:
        raise ValueError(f"dataset {dataset!r}: LLaMA-Factory formatting must be alpaca or sharegpt, got {formatting!r}")
    columns = dict(columns or {})
    valid = set(LLAMAFACTORY_COLUMNS[formatting]) | set(LLAMAFACTORY_MEDIA_COLUMNS) | set(LLAMAFACTORY_IGNORED_COLUMNS)
    for key, value in columns.items():
        if key not in valid:
            raise ValueError(f"dataset {dataset!r}: unknown columns key {key!r} for formatting {formatting}; "
                             f"valid: {', '.join(sorted(valid))}")
        if not isinstance(value, str) or not value:
            raise ValueError(f"dataset {dataset!r}: columns.{key} must name a column, got {value!r}")
    return columns


def llamafactory_tags(formatting: str, tags: Any, dataset: str) -> dict[str, str]:
    """An entry's sharegpt `tags` merged over LLaMA-Factory's defaults."""
    if not tags:
        return dict(LLAMAFACTORY_TAGS)
    if formatting != "sharegpt":
        raise ValueError(f"dataset {dataset!r}: tags apply to formatting sharegpt only, not {formatting}")
    if not isinstance(tags, dict):
        raise ValueError(f"dataset {dataset!r}: tags must be a mapping, got {tags!r}")
    for key, value in tags.items():
        if key not in LLAMAFACTORY_TAGS:
            raise ValueError(f"dataset {dataset!r}: unknown tags key {key!r}; valid: {', '.join(LLAMAFACTORY_TAGS)}")
        if not isinstance(value, str) or not value:
            raise ValueError(f"dataset {dataset!r}: tags.{key} must be a string, got {value!r}")
    return {**LLAMAFACTORY_TAGS, **tags}


def llamafactory_media(row: Row, columns: dict[str, str]) -> list[str]:
    """The media columns (mapped, or under their default names) that hold something in this row."""
    found = []
    for key in LLAMAFACTORY_MEDIA_COLUMNS:
        value = row.get(columns.get(key, key))
        if value not in (None, "", [], {}):
            found.append(key)
    return found


def _retag_turn(turn: Any, tags: dict[str, str]) -> Any:
    """One sharegpt turn in the default layout ({from, value}, human/gpt/...); unknown speakers
    stay as they are so the reader refuses them by name."""
    if not isinstance(turn, dict):
        return turn
    speaker = turn.get(tags["role_tag"])
    for tag, default_speaker in _SPEAKER_OF_TAG.items():
        if speaker == tags[tag]:
            speaker = default_speaker
            break
    return {"from": speaker, "value": turn.get(tags["content_tag"])}


def llamafactory_row(row: Row, formatting: str, columns: dict[str, str], tags: dict[str, str] | None = None) -> Row:
    """A raw LLaMA-Factory row with its columns under our reader's keys and sharegpt turns in the
    default tags, ready for alpaca_to_* / sharegpt_to_*. Columns the entry does not map keep
    their own names (LLaMA-Factory's defaults are our keys)."""
    out = dict(row)
    for key, column in columns.items():
        ours = LLAMAFACTORY_COLUMNS[formatting].get(key)
        if ours is not None:
            out[ours] = row.get(column)
    if formatting == "sharegpt" and tags and tags != LLAMAFACTORY_TAGS:
        if isinstance(out.get("conversations"), list):
            out["conversations"] = [_retag_turn(t, tags) for t in out["conversations"]]
        for key in ("chosen", "rejected"):
            if isinstance(out.get(key), dict):
                out[key] = _retag_turn(out[key], tags)
    return out


# ---------------------------------------------------------------- ranked lists
def preference_to_ranked(table: pa.Table) -> pa.Table:
    """Pairs as ranked lists of two ([chosen, rejected]), so pairs and lists train one loss."""
    out = []
    for r in validate(table, "preference").to_pylist():
        scores = None
        if r.get("chosen_score") is not None and r.get("rejected_score") is not None:
            scores = [r["chosen_score"], r["rejected_score"]]
        out.append({"id": r["id"], "prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]],
                    "scores": scores, "system": r.get("system"), "judge": r.get("judge"), "source": r.get("source")})
    return table_from_rows(out, "ranked_preference")


def ranked_to_preference(table: pa.Table) -> pa.Table:
    """Each list as its best-vs-worst pair (what a pairwise stage such as DPO can use)."""
    out = []
    for r in validate(table, "ranked_preference").to_pylist():
        scores = r.get("scores")
        row = {"id": r["id"], "prompt": r["prompt"], "chosen": r["responses"][0], "rejected": r["responses"][-1],
               "system": r.get("system"), "judge": r.get("judge"), "source": r.get("source")}
        if scores:
            row.update(chosen_score=scores[0], rejected_score=scores[-1], margin=scores[0] - scores[-1])
        out.append(row)
    return table_from_rows(out, "preference")


def _order_best_first(r: Row, index: int) -> tuple[list, list | None]:
    """Responses best first, from `scores` (higher is better), `ranks` (0 is best) or the list order."""
    responses = r.get("responses")
    if not isinstance(responses, list):
        raise SchemaError("ranked_preference", "responses", "is missing or not a list", index)
    responses = [_response_text(x, "responses", index) if not isinstance(x, str) else x for x in responses]
    scores, ranks = r.get("scores"), r.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, list) or sorted(ranks) != list(range(len(responses))):
            raise SchemaError("ranked_preference", "ranks", f"must be a permutation of 0..{len(responses) - 1}", index)
        order = sorted(range(len(responses)), key=lambda i: ranks[i])
    elif scores is not None:
        if not isinstance(scores, list) or len(scores) != len(responses):
            raise SchemaError("ranked_preference", "scores", "needs one number per response", index)
        order = sorted(range(len(responses)), key=lambda i: -float(scores[i]))  # stable: ties keep list order
    else:
        return responses, None
    return [responses[i] for i in order], ([float(scores[i]) for i in order] if scores is not None else None)


def rows_to_ranked(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    """Rows {prompt (string or messages), responses, optional scores | ranks, system} as ranked lists."""
    out = []
    for i, r in enumerate(rows):
        if "prompt" not in r:
            raise SchemaError("ranked_preference", "prompt", "is missing", i)
        prompt = [{"role": "user", "content": r["prompt"]}] if isinstance(r["prompt"], str) else list(r["prompt"])
        system, prompt = _split_system(prompt, i)
        responses, scores = _order_best_first(r, i)
        out.append({"id": _row_id(r, "ranked", i), "prompt": _ours(prompt), "responses": responses, "scores": scores,
                    "system": system or r.get("system") or None, "source": source})
    return table_from_rows(out, "ranked_preference")


# OASST's two speakers; the export stores "prompter" for the user.
_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def oasst_trees(rows: Iterable[Row]) -> Iterable[Row]:
    """Nested trees from either OASST export: tree rows ({message_tree_id, prompt: {..., replies}})
    pass through; flat message rows (message_id, parent_id) are grouped per consecutive tree."""
    pending: list[Row] = []

    def build(messages: list[Row]) -> Row:
        children: dict[Any, list[Row]] = {}
        for m in messages:
            children.setdefault(m.get("parent_id"), []).append(m)

        def node(m: Row) -> Row:
            return {**m, "replies": [node(c) for c in children.get(m["message_id"], [])]}

        roots = children.get(None, [])
        if len(roots) != 1:
            raise SchemaError("ranked_preference", "parent_id", f"a message tree needs one root, found {len(roots)}")
        return {"message_tree_id": messages[0].get("message_tree_id"), "prompt": node(roots[0])}

    for row in rows:
        if "prompt" in row and isinstance(row["prompt"], dict):
            yield row
            continue
        if pending and row.get("message_tree_id") != pending[0].get("message_tree_id"):
            yield build(pending)
            pending = []
        pending.append(row)
    if pending:
        yield build(pending)


def oasst_ranked_rows(tree: Row) -> Iterable[Row]:
    """One ranked-list row per prompter message with at least two ranked assistant replies;
    the prompt is the conversation on the tree path from the root down to that message.
    Unranked replies (rank null: not yet reviewed) are left out of the list."""
    def walk(node: Row, path: list[Row]) -> Iterable[Row]:
        role = _OASST_ROLES.get(node.get("role"))
        if role is None:
            raise SchemaError("ranked_preference", "role", f"unknown OASST role {node.get('role')!r}")
        path = path + [{"role": role, "content": node.get("text") or ""}]
        replies = node.get("replies") or []
        if role == "user":
            ranked = sorted((c for c in replies if c.get("rank") is not None), key=lambda c: c["rank"])
            if len(ranked) >= 2:
                yield {"id": str(node.get("message_id")), "prompt": path, "responses": [c.get("text") or "" for c in ranked],
                       "lang": node.get("lang")}
        for child in replies:
            yield from walk(child, path)

    yield from walk(tree["prompt"], [])


def oasst_to_ranked(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    """OASST message trees (nested or flat export) as ranked lists, one per ranked prompter turn."""
    out = [r for tree in oasst_trees(rows) for r in oasst_ranked_rows(tree)]
    return rows_to_ranked([{k: v for k, v in r.items() if k != "lang"} for r in out], source=source)


# ---------------------------------------------------------------- HH-RLHF
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_HH_ASSISTANT = "\n\nAssistant:"


def _hh_turns(text: str, index: int) -> list[Row]:
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise SchemaError("preference", "chosen", "text before the first Human:/Assistant: marker", index)
    return [_message(_HH_ROLES[speaker], content.strip()) for speaker, content in zip(parts[1::2], parts[2::2])]


def hh_rlhf_split(chosen: str, rejected: str, index: int = 0) -> tuple[list[Row], str, str]:
    """(prompt turns, chosen reply, rejected reply) of an HH-RLHF row: two full transcripts that
    share everything up to the last "Assistant:" marker."""
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(_HH_ASSISTANT)
    if cut < 0:
        raise SchemaError("preference", "chosen", "chosen and rejected share no turn ending in 'Assistant:'", index)
    replies = [text[cut + len(_HH_ASSISTANT):].strip() for text in (chosen, rejected)]
    # A reply holding a later Human turn means the transcripts parted earlier than their last turn.
    if any("\n\nHuman:" in text[cut + len(_HH_ASSISTANT):] for text in (chosen, rejected)):
        raise SchemaError("preference", "rejected", "chosen and rejected differ before the last assistant turn", index)
    prompt = _hh_turns(chosen[:cut], index)
    if not prompt or prompt[-1]["role"] != "user":
        raise SchemaError("preference", "chosen", "the shared prompt must end with a Human turn", index)
    return prompt, replies[0], replies[1]


def hh_rlhf_to_preference(rows: Iterable[Row], source: str | None = None) -> pa.Table:
    """Anthropic HH-RLHF rows ({chosen, rejected} full transcripts) as prompt + two responses."""
    out = []
    for i, r in enumerate(rows):
        for key in ("chosen", "rejected"):
            if not isinstance(r.get(key), str):
                raise SchemaError("preference", key, "is missing or not a transcript string", i)
        prompt, chosen, rejected = hh_rlhf_split(r["chosen"], r["rejected"], i)
        out.append({"id": _row_id(r, "hh", i), "prompt": prompt, "chosen": chosen, "rejected": rejected,
                    "source": source})
    return table_from_rows(out, "preference")
