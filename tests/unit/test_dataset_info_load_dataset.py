"""`--data` takes what `datasets.load_dataset` takes: here a local dataset folder with two
configs and splits declared in its README (the Hub's layout), by `hf:` reference or entry."""
from __future__ import annotations

import json

import pytest

from train.formats import convert_row, iter_raw_rows, load_dataset_spec

README = """---
configs:
- config_name: qa
  data_files:
  - split: train
    path: qa/train.jsonl
  - split: test
    path: qa/test.jsonl
- config_name: chat
  data_files:
  - split: train
    path: chat/train.jsonl
---
# A local dataset folder
"""


@pytest.fixture
def hf_folder(tmp_path):
    root = tmp_path / "my_dataset"
    (root / "qa").mkdir(parents=True)
    (root / "chat").mkdir()
    (root / "README.md").write_text(README, encoding="utf-8")

    def jsonl(path, rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    jsonl(root / "qa" / "train.jsonl", [{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)}
                                        for i in range(3)])
    jsonl(root / "qa" / "test.jsonl", [{"instruction": "Add 9 and 1.", "input": "", "output": "10"}])
    jsonl(root / "chat" / "train.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "hello"}]}])
    return root


def test_hf_reference_with_config_and_split(hf_folder):
    spec = load_dataset_spec(f"hf:{hf_folder}?config=qa&split=test")
    assert (spec.loader, spec.config, spec.split, spec.format, spec.kind) == ("hf", "qa", "test", "alpaca", "sft")
    rows = list(iter_raw_rows(spec))
    assert [r["output"] for r in rows] == ["10"]
    record = convert_row(rows[0], spec, 0)
    assert [m["content"] for m in record["messages"]] == ["Add 9 and 1.", "10"]
    # Default split is train, as for load_dataset; the config decides the format.
    chat = load_dataset_spec(f"hf:{hf_folder}?config=chat")
    assert chat.format == "sft" and len(list(iter_raw_rows(chat))) == 1


def test_registry_and_inline_entries_name_the_loader(hf_folder, tmp_path):
    spec = load_dataset_spec({"name": "qa_train", "hf": str(hf_folder), "config": "qa", "split": "train"})
    assert spec.name == "qa_train" and len(list(iter_raw_rows(spec))) == 3
    # LLaMA-Factory's dataset_info keys: hf_hub_url + subset (local folder relative to the registry).
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"qa_lf": {"hf_hub_url": "my_dataset", "subset": "qa", "split": "test"}}), encoding="utf-8")
    lf = load_dataset_spec("qa_lf", tmp_path / "dataset_info.json")
    assert (lf.loader, lf.format) == ("hf", "alpaca") and [r["output"] for r in iter_raw_rows(lf)] == ["10"]
    # The folder itself, without hf:, is recognised by its README configs.
    auto = load_dataset_spec(str(hf_folder), config="chat")
    assert auto.loader == "hf" and auto.format == "sft"


def test_bad_references_fail_with_one_line_naming_the_problem(hf_folder):
    with pytest.raises(ValueError, match=r"hf:.*unknown option 'splt'.*config, data_dir, split"):
        load_dataset_spec(f"hf:{hf_folder}?splt=test")
    with pytest.raises(ValueError, match=r"dataset 'my_dataset'.*nope"):
        load_dataset_spec(f"hf:{hf_folder}?config=nope")
    with pytest.raises(ValueError, match=r"dataset 'my_dataset'.*split.*validation"):
        load_dataset_spec(f"hf:{hf_folder}?config=qa&split=validation")
