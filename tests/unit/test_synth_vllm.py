"""The vLLM backend's row mapping (always) and its clear refusal where vLLM is absent.

Generation itself needs vLLM and a GPU: tests/integration/test_synth_vllm.py runs it there.
"""
from __future__ import annotations

import json

import pytest

from synth.backends import BackendUnavailable, ChatRequest, SamplingParams, make_backend
from synth.backends.base import expand_requests
from synth.backends.vllm import _postprocess, _preprocess, vllm_available


def test_rows_map_to_engine_requests_and_back():
    params = SamplingParams(temperature=0.5, top_p=0.9, max_tokens=8, n=2, seed=3)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    rows = expand_requests([ChatRequest("q1", messages)], params)
    assert [r["sample_index"] for r in rows] == [0, 1] and rows[0]["seed"] != rows[1]["seed"]
    engine_row = _preprocess(rows[1], params={"temperature": 0.5, "top_p": 0.9, "max_tokens": 8})
    assert engine_row["messages"] == messages
    assert engine_row["sampling_params"] == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 8, "seed": rows[1]["seed"]}
    json.dumps(engine_row)  # plain data: it crosses Ray Data stages

    # The engine does not report why it stopped; all max_tokens used means cut off.
    stage_out = {**rows[1], "generated_text": "Blue.", "num_input_tokens": 12, "num_generated_tokens": 3}
    done = _postprocess(stage_out, max_tokens=8)
    assert done == {"request_id": "q1", "sample_index": 1, "text": "Blue.", "finish_reason": "stop",
                    "prompt_tokens": 12, "completion_tokens": 3, "error": None}
    assert _postprocess({**stage_out, "num_generated_tokens": 8}, max_tokens=8)["finish_reason"] == "length"


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_without_vllm_the_backend_refuses_before_any_work():
    backend = make_backend("vllm:Qwen/Qwen2.5-0.5B-Instruct", concurrency=1)
    assert backend.identity == "vllm:Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(BackendUnavailable, match="vllm package is not installed"):
        backend.check_ready()
