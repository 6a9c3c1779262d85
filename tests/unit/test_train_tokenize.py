"""Loss masks, truncation and drop reasons of `encode_sft`; `encode_pretrain`."""
from __future__ import annotations

import pytest

from train.templates import get_template
from train.tokenize import IGNORE_INDEX, Drop, EncodedExample, encode_pretrain, encode_pretrain_batch, encode_sft

TURNS = [
    {"role": "user", "content": "Sort these words: river, city, paper."},
    {"role": "assistant", "content": "city, paper, river."},
    {"role": "user", "content": "Now reverse them."},
    {"role": "assistant", "content": "river, paper, city."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def chatml():
    return get_template("chatml")


def _trained_text(tok, ex: EncodedExample) -> str:
    return tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX])


def test_all_turns_trained_in_one_sequence(tok, chatml):
    ex = encode_sft({"messages": TURNS}, tok, chatml, 1024)
    assert isinstance(ex, EncodedExample) and not ex.truncated and ex.num_turns == 2
    assert _trained_text(tok, ex) == "city, paper, river.<|im_end|>river, paper, city.<|im_end|>"
    assert len(ex.labels) == len(ex.input_ids)


def test_mask_history_trains_only_the_last_turn(tok, chatml):
    ex = encode_sft({"messages": TURNS}, tok, chatml, 1024, mask_history=True)
    assert _trained_text(tok, ex) == "river, paper, city.<|im_end|>"


def test_train_on_prompt_labels_everything(tok, chatml):
    ex = encode_sft({"messages": TURNS}, tok, chatml, 1024, train_on_prompt=True)
    assert ex.labels == ex.input_ids


def test_eos_after_every_turn_for_eos_templates(tok):
    ex = encode_sft({"messages": TURNS}, tok, get_template("alpaca"), 1024)
    eos = tok.eos_token_id
    trained = [t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX]
    assert trained.count(eos) == 2 and trained[-1] == eos


def test_cutoff_keeps_first_prompt_and_cuts_the_reply(tok, chatml):
    full = encode_sft({"messages": TURNS}, tok, chatml, 1024)
    first_prompt = full.labels.index(next(l for l in full.labels if l != IGNORE_INDEX))
    cutoff = first_prompt + 3
    ex = encode_sft({"messages": TURNS}, tok, chatml, cutoff)
    assert ex.truncated and len(ex.input_ids) == cutoff
    assert ex.input_ids == full.input_ids[:cutoff]  # the whole first prompt is there, intact
    assert sum(l != IGNORE_INDEX for l in ex.labels) == 3


def test_cutoff_drops_whole_later_turns(tok, chatml):
    full = encode_sft({"messages": TURNS}, tok, chatml, 1024)
    first = encode_sft({"messages": TURNS[:2]}, tok, chatml, 1024)
    # Room for the first turn and a little of the next prompt: the second turn goes entirely.
    ex = encode_sft({"messages": TURNS}, tok, chatml, len(first.input_ids) + 2)
    assert ex.truncated and ex.input_ids == first.input_ids and len(full.input_ids) > len(ex.input_ids)


def test_no_labels_after_cutoff_is_a_drop(tok, chatml):
    ex = encode_sft({"messages": TURNS}, tok, chatml, 5)
    assert ex == Drop("no_labels_after_cutoff", ex.detail)
    # With train_on_prompt the first prompt is cut (unavoidable) and still trains.
    ex = encode_sft({"messages": TURNS}, tok, chatml, 5, train_on_prompt=True)
    assert isinstance(ex, EncodedExample) and len(ex.input_ids) == 5


@pytest.mark.parametrize("messages,reason", [
    ([{"role": "assistant", "content": "hi"}], "not_alternating"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "not_alternating"),
    ([{"role": "user", "content": "a"}], "not_alternating"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}], "empty_assistant_turn"),
    ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], "unknown_role"),
    ([{"role": "user"}, {"role": "assistant", "content": "b"}], "missing_field"),
    ([{"content": "a"}], "missing_field"),
    ([], "missing_field"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}, {"role": "assistant", "content": "c"}],
     "not_alternating"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": "not json"},
      {"role": "tool", "content": "r"}, {"role": "assistant", "content": "c"}], "bad_tool_calls"),
])
def test_bad_conversations_are_drops_with_reasons(tok, chatml, messages, reason):
    result = encode_sft({"messages": messages}, tok, chatml, 256)
    assert isinstance(result, Drop) and result.reason == reason


def test_missing_messages_and_unsupported_tools(tok):
    assert encode_sft({"text": "x"}, tok, get_template("chatml"), 64).reason == "missing_field"
    tool_conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", "tool_calls": '[{"name": "f"}]'},
                 {"role": "tool", "content": "r"}, {"role": "assistant", "content": "c"}]
    assert encode_sft({"messages": tool_conv}, tok, get_template("vicuna"), 64).reason == "tool_turn_unsupported"


def test_leading_system_message_is_the_system_prompt(tok, chatml):
    a = encode_sft({"messages": [{"role": "system", "content": "S"}] + TURNS}, tok, chatml, 1024)
    b = encode_sft({"messages": TURNS, "system": "S"}, tok, chatml, 1024)
    assert a.input_ids == b.input_ids and a.labels == b.labels


def test_encode_pretrain(tok):
    ids = encode_pretrain("The model answers the question.", tok)
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == "The model answers the question."
    assert encode_pretrain("  ", tok).reason == "empty_text"
    assert encode_pretrain(None, tok).reason == "missing_field"
    batch = encode_pretrain_batch(["a b", "", "The data"], tok)
    assert batch[0] == encode_pretrain("a b", tok) and isinstance(batch[1], Drop) and batch[2][-1] == tok.eos_token_id
