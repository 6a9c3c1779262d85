"""The tiny-model kit builds a tokenizer + Llama model that load through the real Auto* path."""
from __future__ import annotations

import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from train.tiny import save_tiny, tiny_model_path


def test_build_save_load_and_generate(tmp_path):
    start = time.perf_counter()
    path = save_tiny(tmp_path / "tiny")
    assert time.perf_counter() - start < 60
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
    text = "The model measures the results today."
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level BPE is lossless
    assert tok.decode(tok("今天天气很好。")["input_ids"]) == "今天天气很好。"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert torch.equal(out[0, : ids["input_ids"].shape[1]], ids["input_ids"][0])


def test_tiny_model_path_is_cached(tmp_path):
    first = tiny_model_path(tmp_path)
    mtime = (first / "config.json").stat().st_mtime
    assert tiny_model_path(tmp_path) == first
    assert (first / "config.json").stat().st_mtime == mtime
