"""Converters between raymill record kinds and the formats people already use.

- Hugging Face `datasets.Dataset` (any kind, lossless through Arrow);
- TRL's conversational formats: `{"messages": [...]}` for SFT and
  `{"prompt": [...], "chosen": [...], "rejected": [...]}` for preferences
  (TRL's "standard" string form of prompt/chosen/rejected is read too);
- LLaMA-Factory's alpaca and sharegpt files, with their `dataset_info.json` entry.
"""
from __future__ import annotations

import json
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
