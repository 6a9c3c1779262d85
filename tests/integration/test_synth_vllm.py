"""The vLLM backend generating with the tiny model through Ray Data LLM (needs vLLM and a GPU)."""
from __future__ import annotations

import pytest

from synth.backends import ChatRequest, SamplingParams, make_backend
from synth.backends.vllm import vllm_available


def _gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available() or not _gpu(), reason="needs the vllm package and a GPU")
def test_vllm_backend_generates_with_the_tiny_model(ray_session, tiny_model_dir):
    backend = make_backend({"kind": "vllm", "model": str(tiny_model_dir), "batch_size": 4,
                            "engine_kwargs": {"max_model_len": 512, "enforce_eager": True}})
    backend.check_ready()
    requests = [ChatRequest(f"q{i}", [{"role": "user", "content": f"Say something about {i}."}]) for i in range(3)]
    out = backend.generate(requests, SamplingParams(n=2, max_tokens=6, temperature=0.8, seed=1))
    assert [(c.request_id, c.sample_index) for c in out] == [(r.request_id, i) for r in requests for i in range(2)]
    assert all(c.ok and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 6 for c in out)
    assert all(c.finish_reason in ("stop", "length") for c in out)
