"""The one template rule (issue 13.1): with no --template, every stage renders with the
tokenizer's own chat template; a tokenizer without one is a clear error naming the built-ins."""
from __future__ import annotations

import json

import pytest

from train.tokenize import IGNORE_INDEX

# Chat templates in Jinja, written here: a Llama-3-style one (turns closed by <|eot_id|>, no
# newline after it) and a Qwen-style one (ChatML with a default system prompt).
LLAMA3_STYLE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
QWEN_STYLE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
STOPS = {"llama3": "<|eot_id|>", "qwen": "<|im_end|>"}
CONVERSATION = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."},
                {"role": "user", "content": "And times 4?"}, {"role": "assistant", "content": "5 times 4 is 20."}]


def _tokenizer(tiny_model_dir, style: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": [STOPS[style], "<|begin_of_text|>",
                                                          "<|start_header_id|>", "<|end_header_id|>"]})
    tok.chat_template = LLAMA3_STYLE if style == "llama3" else QWEN_STYLE
    return tok


@pytest.mark.parametrize("style", ["llama3", "qwen"])
def test_sft_default_renders_the_tokenizers_own_template(tmp_path, tiny_model_dir, style):
    from train.ingest import TokenizePack

    tok = _tokenizer(tiny_model_dir, style)
    tok.save_pretrained(tmp_path / "tok")
    op = TokenizePack(str(tmp_path / "tok"), "examples", None, 512, packing=False, seed=0)
    batch = {"id": ["r1"], "source": ["s"], "kind": ["sft"], "drop_reason": [None], "drop_detail": [None],
             "record": [json.dumps({"messages": CONVERSATION, "system": None})]}
    row = op(batch).to_pylist()[0]
    expected = tok.apply_chat_template(CONVERSATION, tokenize=False)
    rendered = tok.decode(row["input_ids"])
    # The whole conversation as the tokenizer renders it (a trailing newline after the last turn
    # is not trained on, so it may be cut).
    assert rendered == expected or rendered == expected.rstrip("\n")
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    stop = STOPS[style]
    assert tok.decode(trained) == f"2 plus 3 is 5.{stop}5 times 4 is 20.{stop}"


@pytest.mark.parametrize("style", ["llama3", "qwen"])
def test_dpo_default_renders_the_tokenizers_own_template(tiny_model_dir, style):
    from train.preference_data import resolve_template, tokenize_pair

    tok = _tokenizer(tiny_model_dir, style)
    row = {"id": "p1", "prompt": [{"role": "user", "content": "Name a colour."}], "chosen": "Blue.", "rejected": "Seven.",
           "system": None}
    pair = tokenize_pair(row, tok, resolve_template(None, tok), 256)
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    assert tok.decode(pair["prompt_ids"]) == prompt
    assert tok.decode(pair["chosen_ids"]) == f"Blue.{STOPS[style]}"


def test_no_chat_template_is_an_error_listing_the_builtins(tiny_model_dir):
    from transformers import AutoTokenizer

    from train.templates import get_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template: pass --template with one of default, alpaca"):
        get_template(None, tok)


def test_launcher_records_the_template_it_used(tiny_model_dir):
    from train.args import parse_train_config
    from train.launcher import resolve_template
    from train.stages import get_workflow

    cfg = parse_train_config({"stage": "sft", "model": str(tiny_model_dir)})
    assert cfg.data.template is None
    assert resolve_template(cfg, get_workflow("sft")).data.template == "tokenizer"
    pt = parse_train_config({"stage": "pt", "model": str(tiny_model_dir)})
    assert resolve_template(pt, get_workflow("pt")).data.template is None  # plain text needs none
