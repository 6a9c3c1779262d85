"""LLaMA-Factory `dataset_info.json` entries as LLaMA-Factory's own demo datasets use them:
`columns` renames (alpaca and sharegpt), sharegpt `tags`, `ranking: true` preference sets,
media columns dropped with a counted reason, and a per-dataset default `system` prompt."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from schemas import convert
from train.formats import convert_row, iter_raw_rows, load_dataset_spec
from train.tokenize import Drop


def _write(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


@pytest.fixture
def lf_dir(tmp_path):
    """A data directory laid out like LLaMA-Factory's data/: JSON files + dataset_info.json."""
    # alpaca, every column renamed (as in orca_pairs / rlaif_v style entries)
    _write(tmp_path / "qa.json", [
        {"question": "Translate to English", "context": "bonjour", "answer": "hello", "sys": "You translate.",
         "turns": [["Hi", "Hello!"]]},
        {"question": "Name a colour", "context": "", "answer": "Blue"},
    ])
    # sharegpt in OpenAI-style roles (ultrachat_200k / mllm_demo tags), a system turn first,
    # plus tool turns under custom function/observation tags
    _write(tmp_path / "chat.json", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "weather?"},
                      {"role": "tool_call", "content": "{\"name\": \"weather\", \"arguments\": {}}"},
                      {"role": "tool_result", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}],
         "functions": "[{\"name\": \"weather\"}]"},
        {"messages": [{"role": "narrator", "content": "once"}, {"role": "assistant", "content": "upon"}]},
    ])
    # ranking=true sharegpt pairs with custom tags (dpo_en_demo's shape, renamed keys)
    _write(tmp_path / "pairs.json", [
        {"dialog": [{"speaker": "person", "text": "Name a fruit"}],
         "good": {"speaker": "bot", "text": "Apple"}, "bad": {"speaker": "bot", "text": "Rock"}},
    ])
    # ranking=true alpaca pairs (ultrafeedback / orca_pairs shape)
    _write(tmp_path / "alpaca_pairs.json", [
        {"question": "2+2?", "system": "Be exact.", "chosen": "4", "rejected": "5"},
    ])
    _write(tmp_path / "plain_pairs.json", [{"question": "3+3?", "chosen": "6", "rejected": "7"}])
    # multimodal rows: images are not supported and must not be trained as text
    _write(tmp_path / "mm.json", [
        {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane"}],
         "images": ["mllm_demo_data/1.jpg"]},
        {"messages": [{"role": "user", "content": "Plain text"}, {"role": "assistant", "content": "ok"}],
         "images": []},
    ])
    info = {
        "qa": {"file_name": "qa.json", "columns": {"prompt": "question", "query": "context", "response": "answer",
                                                   "system": "sys", "history": "turns"}},
        "chat": {"file_name": "chat.json", "formatting": "sharegpt",
                 "columns": {"messages": "messages", "tools": "functions"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant", "system_tag": "system", "function_tag": "tool_call",
                          "observation_tag": "tool_result"}},
        "pairs": {"file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
                  "columns": {"messages": "dialog", "chosen": "good", "rejected": "bad"},
                  "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "person", "assistant_tag": "bot"}},
        "alpaca_pairs": {"file_name": "alpaca_pairs.json", "ranking": True,
                         "columns": {"prompt": "question", "system": "system", "chosen": "chosen", "rejected": "rejected"}},
        "mm": {"file_name": "mm.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
        "defaulted": {"file_name": "plain_pairs.json", "ranking": True, "system": "Default system.",
                      "columns": {"prompt": "question", "chosen": "chosen", "rejected": "rejected"}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return tmp_path


def _records(lf_dir, name):
    spec = load_dataset_spec(name, lf_dir / "dataset_info.json")
    return spec, [convert_row(row, spec, i) for i, row in enumerate(iter_raw_rows(spec))]


def _turns(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_alpaca_with_renamed_columns(lf_dir):
    spec, (first, second) = _records(lf_dir, "qa")
    assert spec.kind == "sft"
    assert first["system"] == "You translate."
    assert _turns(first) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "Translate to English\nbonjour"),
                             ("assistant", "hello")]
    assert _turns(second) == [("user", "Name a colour"), ("assistant", "Blue")]


def test_sharegpt_with_custom_tags_system_turn_and_tools(lf_dir):
    spec, (plain, tools, bad) = _records(lf_dir, "chat")
    assert plain["system"] == "Be brief." and _turns(plain) == [("user", "hi"), ("assistant", "hello")]
    assert [m["role"] for m in tools["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(tools["messages"][1]["tool_calls"]) == {"name": "weather", "arguments": {}}
    assert tools["tools"] == "[{\"name\": \"weather\"}]"
    assert isinstance(bad, Drop) and bad.reason == "unknown_role" and "narrator" in bad.detail


def test_ranking_entries_become_preference_pairs(lf_dir):
    spec, (pair,) = _records(lf_dir, "pairs")
    assert spec.kind == "preference"
    assert pair["prompt"][0]["content"] == "Name a fruit" and (pair["chosen"], pair["rejected"]) == ("Apple", "Rock")
    spec, (pair,) = _records(lf_dir, "alpaca_pairs")
    assert spec.kind == "preference" and pair["system"] == "Be exact."
    assert pair["prompt"][0]["content"] == "2+2?" and (pair["chosen"], pair["rejected"]) == ("4", "5")


def test_media_rows_are_dropped_with_a_counted_reason(lf_dir):
    _, records = _records(lf_dir, "mm")
    reasons = Counter(r.reason if isinstance(r, Drop) else "kept" for r in records)
    assert reasons == {"unsupported_media": 1, "kept": 1}
    assert "images" in next(r for r in records if isinstance(r, Drop)).detail


def test_per_dataset_default_system_fills_only_rows_without_one(lf_dir, tmp_path):
    _, (pair,) = _records(lf_dir, "defaulted")
    assert pair["system"] == "Default system."
    # A row's own system prompt wins over the dataset's default.
    spec = load_dataset_spec({"name": "own", "path": str(lf_dir / "alpaca_pairs.json"), "formatting": "alpaca",
                              "ranking": True, "system": "Default system.", "columns": {"prompt": "question"}})
    assert convert_row(next(iter_raw_rows(spec)), spec, 0)["system"] == "Be exact."
    # Also for SFT data and from the command-line form of an entry.
    spec = load_dataset_spec({"name": "chat", "path": str(lf_dir / "qa.json"), "system": "S0",
                              "columns": {"prompt": "question", "response": "answer"}})
    second = convert_row(list(iter_raw_rows(spec))[1], spec, 1)
    assert second["system"] == "S0"


def test_bad_entries_fail_naming_the_dataset_and_key(lf_dir):
    with pytest.raises(ValueError, match=r"dataset 'x'.*columns.*'promt'"):
        load_dataset_spec({"name": "x", "path": str(lf_dir / "qa.json"), "formatting": "alpaca",
                           "columns": {"promt": "question"}})
    with pytest.raises(ValueError, match=r"dataset 'y'.*tags.*'speaker_tag'"):
        load_dataset_spec({"name": "y", "path": str(lf_dir / "chat.json"), "formatting": "sharegpt",
                           "tags": {"speaker_tag": "role"}})
    with pytest.raises(ValueError, match=r"dataset 'z'.*tags.*sharegpt"):
        load_dataset_spec({"name": "z", "path": str(lf_dir / "qa.json"), "formatting": "alpaca",
                           "tags": {"role_tag": "role"}})


def test_read_llamafactory_honours_columns_and_tags(lf_dir):
    kind, table = convert.read_llamafactory(lf_dir, "pairs")
    assert kind == "preference" and table.to_pylist()[0]["chosen"] == "Apple"
    kind, table = convert.read_llamafactory(lf_dir, "qa")
    assert kind == "sft" and table.to_pylist()[0]["system"] == "You translate."
