"""Read prompts for sampling: a raymill dataset (kind prompt or sft) or a JSONL file.

JSONL lines may hold `prompt` (a string or a message list), `messages` (the
conversation; a trailing assistant turn is cut off) or `instruction` (+ `input`), the
Self-Instruct / alpaca shape. A line with none of these is an error naming the line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: list[dict[str, str]]  # ends with a user turn
    system: str | None = None


def _user_turns(messages: list[dict], where: str) -> list[dict[str, str]]:
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    if not msgs or msgs[-1]["role"] != "user":
        raise ValueError(f"{where}: the conversation has no user turn to answer")
    return msgs


def _from_object(obj: dict, where: str) -> tuple[list[dict[str, str]], str | None]:
    system = obj.get("system")
    if isinstance(obj.get("prompt"), str):
        return [{"role": "user", "content": obj["prompt"]}], system
    if isinstance(obj.get("prompt"), list):
        return _user_turns(obj["prompt"], where), system
    if isinstance(obj.get("messages"), list):
        msgs = [m for m in obj["messages"] if m.get("role") != "system"]
        system = system or next((m["content"] for m in obj["messages"] if m.get("role") == "system"), None)
        return _user_turns(msgs, where), system
    if isinstance(obj.get("instruction"), str):
        text = obj["instruction"] + (f"\n\n{obj['input']}" if obj.get("input") else "")
        return [{"role": "user", "content": text}], system
    raise ValueError(f"{where}: expected a 'prompt', 'messages' or 'instruction' field")


def _stable_id(messages: list[dict]) -> str:
    return "p-" + hashlib.blake2b(json.dumps(messages, ensure_ascii=False).encode(), digest_size=8).hexdigest()


def load_prompts(path: str | Path, limit: int | None = None) -> list[Prompt]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompts {path} do not exist")
    prompts: list[Prompt] = []
    if path.is_dir():
        from schemas.dataset_io import read_parquet_dir

        data = path / "data" if (path / "data").is_dir() else path
        table = read_parquet_dir(data)
        column = "prompt" if "prompt" in table.column_names else "messages"
        for i, row in enumerate(table.to_pylist()):
            where = f"{data} row {i} (id={row.get('id')!r})"
            msgs = _user_turns(row[column], where)
            prompts.append(Prompt(str(row.get("id") or _stable_id(msgs)), msgs, row.get("system")))
    else:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{where}: expected a JSON object")
                msgs, system = _from_object(obj, where)
                prompts.append(Prompt(str(obj.get("id") or _stable_id(msgs)), msgs, system))
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: prompt ids are not unique")
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts[:limit] if limit else prompts


def with_system(prompt: Prompt) -> list[dict[str, str]]:
    """The messages a backend sees: the system prompt (if any) as a leading system turn."""
    return ([{"role": "system", "content": prompt.system}] if prompt.system else []) + prompt.messages
