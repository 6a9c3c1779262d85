"""Sampling `top_k` reaches every backend: local transformers, vLLM (Ray Data LLM) and HTTP."""
from __future__ import annotations

import json

import pytest

from synth.backends import ChatRequest, SamplingParams
from synth.backends.base import expand_requests

MESSAGES = [{"role": "user", "content": "Write one sentence about the city."}]


def _row(params: SamplingParams) -> dict:
    return expand_requests([ChatRequest("q1", MESSAGES)], params)[0]


def test_top_k_is_a_checked_sampling_setting():
    assert SamplingParams.from_config({"top_k": 5}).top_k == 5
    assert SamplingParams().top_k == 0  # 0 = no top-k cut, every backend's "off"
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=-2)


def test_vllm_engine_request_carries_top_k_only_when_set():
    from dataclasses import asdict

    from synth.backends.vllm import _preprocess

    on = SamplingParams(top_k=7, seed=1)
    assert _preprocess(_row(on), params=asdict(on))["sampling_params"]["top_k"] == 7
    off = SamplingParams(seed=1)
    assert "top_k" not in _preprocess(_row(off), params=asdict(off))["sampling_params"]


def test_http_payload_carries_top_k_only_when_set():
    from dataclasses import asdict

    from synth.backends.http import _preprocess

    on = SamplingParams(top_k=3)
    payload = _preprocess(_row(on), model="m", params=asdict(on), send_seed=False)["payload"]
    assert payload["top_k"] == 3
    json.dumps(payload)
    off = SamplingParams()
    # Plain OpenAI servers reject unknown keys: an unset top_k is not sent at all.
    assert "top_k" not in _preprocess(_row(off), model="m", params=asdict(off), send_seed=False)["payload"]


def test_local_backend_top_k_1_samples_the_greedy_answer(tiny_model_dir):
    """top_k=1 leaves one candidate per step, so hot sampling must equal greedy decoding;
    without top_k the same hot sampling drifts away from it."""
    import numpy as np

    from synth.backends.local import _TransformersGenerator

    rows = expand_requests([ChatRequest(f"q{i}", MESSAGES) for i in range(4)], SamplingParams(seed=5))
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    batch["seed"] = np.array([r["seed"] for r in rows])

    def texts(**params) -> list[str]:
        gen = _TransformersGenerator(str(tiny_model_dir), dict(max_tokens=12, seed=5, **params))
        return list(gen(batch)["text"])

    greedy = texts(temperature=0.0)
    assert texts(temperature=5.0, top_k=1) == greedy
    assert texts(temperature=5.0, top_k=0) != greedy
