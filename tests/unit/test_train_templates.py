"""Chat templates: rendered text equals each family's published format; label masks token by token."""
from __future__ import annotations

import json

import pytest

from train.templates import TEMPLATE_NAMES, TemplateError, get_template
from train.tokenize import IGNORE_INDEX, encode_sft

SYSTEM = "Be brief."
CONV = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Add 2 and 3."},
    {"role": "assistant", "content": "2 plus 3 is 5."},
]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TOOL_JSON = ('{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", '
             '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}')
TOOL_CONV = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}}])},
    {"role": "tool", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "It is 21 degrees."},
]

# Written from each family's published chat format.
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n2 plus 3 is 5.<|im_end|>\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n2 plus 3 is 5.<|eot_id|>"
    ),
    "vicuna": "Be brief. USER: Hi there ASSISTANT: Hello!</s>USER: Add 2 and 3. ASSISTANT: 2 plus 3 is 5.</s>",
    "alpaca": (
        "Be brief.\n\n### Instruction:\nHi there\n\n### Response:\nHello!</s>"
        "\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n2 plus 3 is 5.</s>"
    ),
    "default": "Be brief.\nHuman: Hi there\nAssistant: Hello!</s>\nHuman: Add 2 and 3.\nAssistant: 2 plus 3 is 5.</s>",
}
EXPECTED["qwen"] = EXPECTED["chatml"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_render_matches_family_format(name):
    assert get_template(name).render_text(CONV, SYSTEM, eos_token="</s>") == EXPECTED[name]


def test_default_system_prompts():
    qwen = get_template("qwen").render_text(CONV[:2])
    assert qwen.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                           "<|im_end|>\n<|im_start|>user\nHi there")
    assert get_template("chatml").render_text(CONV[:2]).startswith("<|im_start|>user\nHi there")
    assert get_template("vicuna").render_text(CONV[:2]) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: Hi there ASSISTANT: Hello!</s>")
    assert get_template("alpaca").render_text(CONV[:2]).startswith(
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nHi there\n\n### Response:\nHello!")


def test_qwen_tool_turns():
    text = get_template("qwen").render_text(TOOL_CONV, tools=[TOOL])
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + TOOL_JSON + "\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nIt is 21 degrees.<|im_end|>\n"
    )
    answers = [s.text for s in get_template("qwen").render(TOOL_CONV, tools=[TOOL]) if s.is_assistant]
    assert answers == ['\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
                       "It is 21 degrees.<|im_end|>"]


def test_llama3_tool_turns():
    segments = get_template("llama3").render(TOOL_CONV)
    text = "".join(s.text for s in segments)
    assert ('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}'
            '<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n{"temp": 21}<|eot_id|>') in text
    assert [s.text for s in segments if s.is_assistant][1] == "It is 21 degrees.<|eot_id|>"


@pytest.mark.parametrize("name", ["vicuna", "alpaca", "default"])
def test_tool_turns_refused_where_unsupported(name):
    with pytest.raises(TemplateError) as err:
        get_template(name).render(TOOL_CONV)
    assert err.value.reason == "tool_turn_unsupported"


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown template"):
        get_template("nope")


def test_tiny_tokenizer_template_equals_chatml(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hf = [{"role": "system", "content": SYSTEM}] + CONV
    assert tok.apply_chat_template(hf, tokenize=False) == get_template("chatml").render_text(CONV, SYSTEM)
    assert get_template("tokenizer", tok).render(CONV, SYSTEM) == get_template("chatml").render(CONV, SYSTEM)
    # Token ids too: segment-wise tokenization equals tokenizing the whole rendered text.
    example = encode_sft({"messages": CONV, "system": SYSTEM}, tok, get_template("chatml"), 4096)
    whole = tok(EXPECTED["chatml"], add_special_tokens=False)["input_ids"]
    assert example.input_ids == whole[:-1]  # the trailing newline after the last turn is not trained on


# A Llama 3 chat template in Jinja (written here), to check span finding on a template whose
# stop token is not followed by a newline.
LLAMA3_JINJA = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def test_tokenizer_template_finds_spans_of_other_templates(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>"]})
    tok.chat_template = LLAMA3_JINJA
    ours = get_template("llama3").render(CONV, SYSTEM)
    assert get_template("tokenizer", tok).render(CONV, SYSTEM) == ours


def _label_runs(example) -> list[list[int]]:
    runs, current = [], []
    for tok_id, label in zip(example.input_ids, example.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == tok_id
            current.append(tok_id)
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_label_masks_token_by_token(name, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = get_template(name, tok)
    segments = template.render(CONV, SYSTEM, eos_token=tok.eos_token)
    example = encode_sft({"messages": CONV, "system": SYSTEM}, tok, template, 4096)
    # Every token is labelled exactly when it belongs to an assistant segment.
    expected = []
    for seg in segments:
        ids = tok(seg.text, add_special_tokens=False)["input_ids"]
        expected += [(i if seg.is_assistant else IGNORE_INDEX) for i in ids]
    expected = expected[: len(example.input_ids)]
    assert example.labels == expected
    # Both replies are trained, each ending with the template's stop string.
    stop = "<|im_end|>" if name == "tokenizer" else template.stop or tok.eos_token
    decoded = [tok.decode(run) for run in _label_runs(example)]
    assert decoded == ["Hello!" + stop, "2 plus 3 is 5." + stop]
    # The prompt tokens decode back to the rest of the rendered text.
    assert tok.decode(example.input_ids) == "".join(s.text for s in segments).rstrip("\n")


@pytest.mark.parametrize("name", ["chatml", "qwen", "llama3"])
def test_tool_call_turns_are_trained(name, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = get_template(name)
    example = encode_sft({"messages": TOOL_CONV, "tools": json.dumps([TOOL])}, tok, template, 4096)
    runs = [tok.decode(r) for r in _label_runs(example)]
    assert len(runs) == 2 and "get_weather" in runs[0] and runs[1] == "It is 21 degrees." + template.stop
    assert '{"temp": 21}' not in "".join(runs)  # tool results are prompt


def test_generation_prompt():
    assert get_template("chatml").render_generation_prompt(CONV[:1]) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert get_template("llama3").render_generation_prompt(CONV[:1]).endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_tokenizer_template_without_turn_end_gets_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    template = get_template("tokenizer", tok)
    assert template.stop is None
    segments = template.render(CONV, SYSTEM)
    assert [s.text for s in segments if s.is_assistant] == ["Hello!<|endoftext|>", "2 plus 3 is 5.<|endoftext|>"]
    assert segments[0].text == "system: Be brief.\nuser: Hi there\nassistant: "
