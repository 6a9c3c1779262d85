"""Prompt rendering and answer parsing (English and Chinese), and seed-file loading."""
from __future__ import annotations

import json
import re

import pytest

from synth.prompts import (ParseError, format_instances, parse_classify, parse_instances, parse_proposals,
                           render_classify, render_instances, render_propose)
from synth.seeds import SeedError, load_seeds


def test_propose_roundtrip_english():
    prompt = render_propose(["Is there anything I can eat for breakfast without eggs?",
                             "What is the relation between the given pairs?"], "en", 3)
    assert "Task 1: Is there anything" in prompt and "Task 3 to Task 5" in prompt
    answer = ("Sure! Here are three new tasks:\n\nTask 3: Rewrite the sentence in the passive voice.\n"
              "Task 4: Give two reasons why people\n  enjoy gardening.\n**Task 5:** Convert 30 degrees Celsius to Fahrenheit.")
    assert parse_proposals(answer) == ["Rewrite the sentence in the passive voice.",
                                       "Give two reasons why people enjoy gardening.",
                                       "Convert 30 degrees Celsius to Fahrenheit."]


def test_propose_parse_chinese_and_failure():
    assert parse_proposals("任务9：写一首关于秋天的短诗\n任务10: 解释什么是通货膨胀") == ["写一首关于秋天的短诗", "解释什么是通货膨胀"]
    with pytest.raises(ParseError):
        parse_proposals("I cannot help with that.")


def test_classify_parse():
    prompt = render_classify("Is the review positive or negative?", [("Tell me a joke.", False)], "en")
    assert prompt.endswith("Task: Is the review positive or negative?\nClassification:")
    assert parse_classify(" Yes") is True
    assert parse_classify("No, it is open-ended.") is False
    assert parse_classify("Classification: yes") is True
    assert parse_classify("是") is True and parse_classify("否。") is False
    with pytest.raises(ParseError):
        parse_classify("Maybe")


def test_instances_input_first_and_output_first():
    text = "Input: Night : Day :: Right : Left\nOutput: They are opposites.\n\nInput: <none>\nOutput: Hello!"
    got = parse_instances(text, classification=False)
    assert [(g.input, g.output) for g in got] == [("Night : Day :: Right : Left", "They are opposites."), ("", "Hello!")]
    assert got[-1].last and not got[0].last
    cls = "Class label: Positive\nInput: I loved this film.\nClass label: Negative\nInput: Boring and long."
    got = parse_instances(cls, classification=True)
    assert [(g.input, g.output) for g in got] == [("I loved this film.", "Positive"), ("Boring and long.", "Negative")]
    zh = "输入：惊人地\n输出：令人惊奇地，意外地\n输入：<无>\n输出：你好"
    assert [(g.input, g.output) for g in parse_instances(zh, False)] == [("惊人地", "令人惊奇地，意外地"), ("", "你好")]
    with pytest.raises(ParseError):
        parse_instances("Output: only an output", classification=False)


def test_trailing_incomplete_pair_does_not_mark_complete_one_as_last():
    got = parse_instances("Input: a\nOutput: b\nInput: c", classification=False)
    assert len(got) == 1 and not got[0].last


def test_instances_render_roundtrip():
    body = format_instances([("", "Paris"), ("Spain", "Madrid")], "en", classification=False)
    prompt = render_instances("Name the capital.", [("Name a fruit.", [("", "Apple")])], "en", False, 2)
    assert "Task: Name a fruit.\nInput: <none>\nOutput: Apple" in prompt
    assert [(g.input, g.output) for g in parse_instances(body, False)] == [("", "Paris"), ("Spain", "Madrid")]


def test_real_seed_files_load(shared_data):
    en = load_seeds(shared_data / "self_instruct" / "seed_tasks.jsonl")
    zh = load_seeds(shared_data / "self_instruct" / "zh_seed_tasks.jsonl")
    assert len(en) == 175 and sum(s.is_classification for s in en) == 26
    assert len(zh) == 175 and all(s.instances for s in zh)


def test_malformed_seed_lines_name_the_line(tmp_path):
    good = json.dumps({"id": "a", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}],
                       "is_classification": False})
    cases = {
        "{not json": "not valid JSON",
        json.dumps({"id": "b", "instances": [{"input": "", "output": "x"}]}): "missing field 'instruction'",
        json.dumps({"id": "b", "instruction": "Do it.", "instances": [{"input": ""}]}): "instances[0]: missing field 'output'",
        json.dumps({"id": "b", "instruction": "Do it.", "instances": [{"input": "", "output": "x"}],
                    "is_classification": "yes"}): "is_classification",
    }
    for bad, message in cases.items():
        path = tmp_path / "seeds.jsonl"
        path.write_text(good + "\n\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(SeedError, match=r"seeds.jsonl:3: .*" + re.escape(message)):
            load_seeds(path)
