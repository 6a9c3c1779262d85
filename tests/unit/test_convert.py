"""Converters round-trip between our kinds and HF datasets, TRL and LLaMA-Factory formats."""
from __future__ import annotations

import json

import pytest

from schemas import SchemaError, table_from_rows
from schemas import convert


def msg(role, content, tool_calls=None):
    return {"role": role, "content": content, "tool_calls": tool_calls}


SFT_ROWS = [
    {"id": "a", "system": "You are terse.", "messages": [msg("user", "2+2?"), msg("assistant", "4"),
                                                         msg("user", "and 3+3?"), msg("assistant", "6")]},
    {"id": "b", "messages": [msg("user", "Hello"), msg("assistant", "Hi!")]},
]
TOOL_ROW = {"id": "t", "tools": json.dumps([{"name": "add", "parameters": {"a": "int", "b": "int"}}]),
            "messages": [msg("user", "add 1 and 2"),
                         msg("assistant", "", json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}])),
                         msg("tool", "3"), msg("assistant", "It is 3.")]}
PREF_ROWS = [
    {"id": "p", "system": "Be kind.", "prompt": [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Help?")],
     "chosen": "Sure, how?", "rejected": "No."},
    {"id": "q", "prompt": [msg("user", "Name a colour")], "chosen": "Blue", "rejected": ""},
]


def sft_table(rows=SFT_ROWS):
    return table_from_rows(rows, "sft")


def pref_table():
    return table_from_rows(PREF_ROWS, "preference")


def strip(table, keep):
    return [{k: r.get(k) for k in keep} for r in table.to_pylist()]


def test_hf_datasets_round_trip():
    table = sft_table(SFT_ROWS + [TOOL_ROW])
    ds = convert.to_hf_dataset(table, "sft")
    assert len(ds) == 3 and ds[0]["messages"][0]["content"] == "2+2?"
    back = convert.from_hf_dataset(ds, "sft")
    assert back.to_pylist() == table.to_pylist()


def test_trl_sft_round_trip_moves_system_into_messages():
    rows = convert.sft_to_trl(sft_table())
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are terse."}
    back = convert.trl_to_sft(rows)
    assert strip(back, ["messages", "system"]) == strip(sft_table(), ["messages", "system"])


def test_trl_preference_round_trip_and_standard_form():
    rows = convert.preference_to_trl(pref_table())
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Sure, how?"}]
    back = convert.trl_to_preference(rows)
    keys = ["prompt", "chosen", "rejected", "system"]
    assert strip(back, keys) == strip(pref_table(), keys)
    plain = convert.trl_to_preference([{"prompt": "Q?", "chosen": "good", "rejected": "bad"}])
    assert plain.to_pylist()[0]["prompt"][0]["content"] == "Q?"


def test_trl_missing_field_names_row():
    with pytest.raises(SchemaError) as err:
        convert.trl_to_preference([{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}])
    assert err.value.row == 1 and err.value.field == "rejected"


@pytest.mark.parametrize("formatting", ["alpaca", "sharegpt"])
def test_llamafactory_sft_round_trip_with_dataset_info(tmp_path, formatting):
    rows = SFT_ROWS + ([TOOL_ROW] if formatting == "sharegpt" else [])
    table = sft_table(rows)
    convert.write_llamafactory(table, "sft", tmp_path, "mine", formatting)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["mine"]["file_name"] == "mine.json" and info["mine"]["formatting"] == formatting
    kind, back = convert.read_llamafactory(tmp_path, "mine")
    assert kind == "sft"
    assert strip(back, ["messages", "system", "tools"]) == strip(table, ["messages", "system", "tools"])


@pytest.mark.parametrize("formatting", ["alpaca", "sharegpt"])
def test_llamafactory_preference_round_trip(tmp_path, formatting):
    convert.write_llamafactory(pref_table(), "preference", tmp_path, "prefs", formatting)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["prefs"]["ranking"] is True
    kind, back = convert.read_llamafactory(tmp_path, "prefs")
    keys = ["prompt", "chosen", "rejected", "system"]
    assert kind == "preference" and strip(back, keys) == strip(pref_table(), keys)


def test_alpaca_input_is_joined_and_custom_columns_are_honoured(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "Translate", "ctx": "bonjour", "a": "hello"}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"d": {"file_name": "d.jsonl", "columns": {"prompt": "q", "query": "ctx", "response": "a"}}}))
    kind, table = convert.read_llamafactory(tmp_path, "d")
    assert table.to_pylist()[0]["messages"][0]["content"] == "Translate\nbonjour"


def test_alpaca_refuses_tool_turns_and_bad_rows():
    with pytest.raises(SchemaError, match="alpaca"):
        convert.sft_to_alpaca(sft_table([TOOL_ROW]))
    with pytest.raises(SchemaError) as err:
        convert.alpaca_to_sft([{"instruction": "x", "output": "y"}, {"output": "y"}])
    assert err.value.row == 1 and err.value.field == "instruction"


def test_sharegpt_unknown_speaker_is_refused():
    with pytest.raises(SchemaError, match="unknown speaker"):
        convert.sharegpt_to_sft([{"conversations": [{"from": "narrator", "value": "x"}]}])
