"""Dataset formats in and the dataset registry."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from schemas.convert import trl_to_sft, write_llamafactory
from train.formats import DatasetSpec, convert_row, iter_raw_rows, load_dataset_spec
from train.tokenize import Drop


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_yaml_and_sniffed_paths(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"instruction": "Add 1 and 2.", "input": "", "output": "3"}])
    _jsonl(tmp_path / "b.jsonl", [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])
    (tmp_path / "c.txt").write_text("first doc\n\nsecond doc\n", encoding="utf-8")
    registry = tmp_path / "datasets.yaml"
    registry.write_text(yaml.safe_dump({
        "tasks": {"path": "a.jsonl", "format": "alpaca"},
        "chats": {"path": "b.jsonl", "format": "sharegpt", "columns": {"conversations": "conversations"}},
    }), encoding="utf-8")
    spec = load_dataset_spec("tasks", registry)
    assert spec.kind == "sft" and spec.path == str(tmp_path / "a.jsonl")
    assert load_dataset_spec(str(tmp_path / "b.jsonl")).format == "sharegpt"  # sniffed from the keys
    text = load_dataset_spec(str(tmp_path / "c.txt"))
    assert text.kind == "text" and [r["text"] for r in iter_raw_rows(text)] == ["first doc", "second doc"]
    with pytest.raises(FileNotFoundError, match="registry has"):
        load_dataset_spec("missing", registry)


def test_llamafactory_dataset_info_is_a_registry(tmp_path):
    table = trl_to_sft([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])
    write_llamafactory(table, "sft", tmp_path, "mine", formatting="alpaca")
    spec = load_dataset_spec("mine", tmp_path / "dataset_info.json")
    assert spec.format == "alpaca" and spec.kind == "sft"
    rows = list(iter_raw_rows(spec))
    record = convert_row(rows[0], spec, 0)
    assert [m["content"] for m in record["messages"]] == ["q", "a"]


def test_convert_each_format():
    alpaca = DatasetSpec("al", "x", "alpaca")
    rec = convert_row({"instruction": "Say hi", "input": "politely", "output": "Hello.", "system": "S",
                       "history": [["first", "one"]]}, alpaca, 0)
    assert rec["system"] == "S" and [m["role"] for m in rec["messages"]] == ["user", "assistant", "user", "assistant"]
    share = DatasetSpec("sg", "x", "sharegpt")
    rec = convert_row({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                                         {"from": "gpt", "value": "a"}]}, share, 1)
    assert rec["system"] == "S" and rec["messages"][1]["content"] == "a"
    pref = DatasetSpec("p", "x", "preference")
    rec = convert_row({"prompt": "q?", "chosen": "good", "rejected": "bad"}, pref, 2)
    assert rec["chosen"] == "good" and rec["prompt"][0]["content"] == "q?"
    sft = DatasetSpec("s", "x", "sft")
    rec = convert_row({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]}]},
                      sft, 3)
    assert json.loads(rec["messages"][1]["tool_calls"]) == [{"name": "f", "arguments": {}}]
    renamed = DatasetSpec("t", "x", "text", columns={"text": "body"})
    assert convert_row({"body": "doc"}, renamed, 4)["text"] == "doc"


def test_bad_rows_become_drops_with_reasons():
    assert convert_row({"input": "x", "output": "y"}, DatasetSpec("al", "x", "alpaca"), 0).reason == "missing_field"
    bad_speaker = {"conversations": [{"from": "alien", "value": "q"}]}
    assert convert_row(bad_speaker, DatasetSpec("sg", "x", "sharegpt"), 0).reason == "unknown_role"
    assert convert_row({"title": "x"}, DatasetSpec("t", "x", "text"), 0).reason == "missing_field"
    assert isinstance(convert_row("not a dict", DatasetSpec("t", "x", "text"), 0), Drop)


def test_parquet_and_directory_with_split(tmp_path):
    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "train" / "part-0.parquet")
    _jsonl(tmp_path / "test.jsonl", [{"text": "z"}])
    spec = load_dataset_spec({"name": "d", "path": str(tmp_path), "format": "text", "split": "train"})
    assert [r["text"] for r in iter_raw_rows(spec)] == ["a", "b"]


def test_raymill_dataset_directory_reads_only_kept_rows(tmp_path):
    """A curate/synth output directory: data/ is the dataset; dropped/, accounting.json and
    card/ beside it must not be read as training rows (nor sniffed for the format)."""
    from schemas.funnel import StageCount, write_accounting

    kept = [{"id": "k1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    (tmp_path / "data").mkdir()
    (tmp_path / "dropped").mkdir()
    (tmp_path / "card").mkdir()
    _jsonl(tmp_path / "data" / "part-0.jsonl", kept)
    pq.write_table(pa.table({"id": ["d1"], "text": ["bad"], "drop_reason": ["r"], "drop_stage": ["s"]}),
                   tmp_path / "dropped" / "part-0.parquet")
    (tmp_path / "card" / "summary.json").write_text("{}", encoding="utf-8")
    write_accounting(tmp_path, [StageCount(stage="gen", rows_in=2, kept=1, dropped={"r": 1})], {"job": "t"})
    spec = load_dataset_spec(str(tmp_path))
    assert spec.format == "sft" and spec.files() == [tmp_path / "data" / "part-0.jsonl"]
    assert [r["id"] for r in iter_raw_rows(spec)] == ["k1"]
