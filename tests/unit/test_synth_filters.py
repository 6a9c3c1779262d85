"""Every instruction and instance filter on real-format English and Chinese text."""
from __future__ import annotations

from synth import filters as F
from synth.filters import FilterConfig, instance_rules, instruction_rule, novelty_rule
from synth.rouge import InstructionPool

CFG = FilterConfig()


def test_keeps_ordinary_instructions():
    assert instruction_rule("Suggest a healthy breakfast that has at least 20 grams of protein.", CFG) is None
    assert instruction_rule("请为下面这段话写一个简短的标题", CFG) is None


def test_too_short_and_too_long_in_words_and_characters():
    assert instruction_rule("Summarize it.", CFG) == F.TOO_SHORT
    assert instruction_rule("Explain " + "why the sky is blue and " * 40, CFG) == F.TOO_LONG
    assert instruction_rule("翻译", CFG) == F.TOO_SHORT
    assert instruction_rule("请解释" + "为什么天空是蓝色的" * 40, CFG) == F.TOO_LONG


def test_blacklisted_words_english_and_chinese():
    assert instruction_rule("Describe the image below in two sentences.", CFG) == F.BLACKLISTED
    assert instruction_rule("Draw a diagram of the water cycle.", CFG) == F.BLACKLISTED
    assert instruction_rule("Summarize the audio recording of the meeting.", CFG) == F.BLACKLISTED
    assert instruction_rule("请描述下面这张图片中的内容", CFG) == F.BLACKLISTED
    assert instruction_rule("根据下面的链接总结文章的要点", CFG) == F.BLACKLISTED
    # Whole words only in English: "profile" contains "file" but is fine.
    assert instruction_rule("Write a short profile of a famous scientist.", CFG) is None


def test_starts_with_punctuation_or_non_letter():
    assert instruction_rule("- List five fruits that are red.", CFG) == F.NON_LETTER_START
    assert instruction_rule("3. List five fruits that are red.", CFG) == F.NON_LETTER_START
    assert instruction_rule("“请列出五种红色的水果”", CFG) == F.NON_LETTER_START
    assert instruction_rule("请列出五种红色的水果", CFG) is None


def test_rouge_novelty_english_and_chinese():
    pool = InstructionPool(["Generate a one-sentence description for each of the following people.",
                            "给出下面词语的同义词"])
    reason, near = novelty_rule("Generate a one-sentence description for each of these people.", pool, CFG)
    assert reason == F.TOO_SIMILAR and near.best > 0.7
    reason, near = novelty_rule("给出下面词语的反义词", pool, CFG)
    assert reason == F.TOO_SIMILAR and near.texts[0] == "给出下面词语的同义词"
    reason, near = novelty_rule("Plan a three-day trip to Rome on a small budget.", pool, CFG)
    assert reason is None and near.best < 0.7 and len(near.texts) == 2


def test_instance_rules_each_reason():
    inst = [
        {"input": "Night : Day", "output": "They are opposites.", "last": False},
        {"input": "", "output": "   ", "last": False},
        {"input": "hello", "output": "hello", "last": False},
        {"input": "Up : Down", "output": "Opposites.", "last": False},
        {"input": "Up : Down", "output": "Antonyms.", "last": False},
        {"input": "Night : Day", "output": "They are opposites.", "last": False},
        {"input": "Hot : Cold", "output": "They are oppo", "last": True},
    ]
    assert instance_rules(inst, "length") == [None, F.EMPTY_OUTPUT, F.SAME_INPUT_OUTPUT, F.CONFLICTING,
                                              F.CONFLICTING, F.DUPLICATE_INSTANCE, F.TRUNCATED]
    # The same last instance is complete when generation stopped normally.
    assert instance_rules(inst[-1:], "stop") == [None]


def test_instance_rules_chinese():
    inst = [{"input": "惊人地", "output": "令人惊奇地", "last": False},
            {"input": "惊人地", "output": "意外地", "last": True}]
    assert instance_rules(inst, "stop") == [F.CONFLICTING, F.CONFLICTING]
