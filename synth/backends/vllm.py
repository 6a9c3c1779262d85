"""vLLM on GPU nodes through Ray Data LLM's `vLLMEngineProcessorConfig` (optional dependency).

Install vLLM on the GPU nodes (`pip install vllm`); the processor then runs chat
templating, tokenization, the engine and detokenization as Ray Data stages, one engine
per `concurrency` replica. vLLM does not report a finish reason through Ray Data, so a
completion that used all `max_tokens` is marked `length`.
"""
from __future__ import annotations

import json
from functools import partial
from typing import Any

from synth.backends.base import FINISH_LENGTH, FINISH_STOP, Backend, BackendUnavailable, SamplingParams


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def _preprocess(row: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    sampling = {"temperature": params["temperature"], "top_p": params["top_p"],
                "max_tokens": params["max_tokens"], "seed": int(row["seed"])}
    if params.get("top_k"):  # vLLM's own default is no cut; only a set top_k is sent
        sampling["top_k"] = int(params["top_k"])
    return {"messages": json.loads(row["messages_json"]), "sampling_params": sampling}


def _postprocess(row: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    n = int(row.get("num_generated_tokens") or 0)
    return {"request_id": row["request_id"], "sample_index": int(row["sample_index"]),
            "text": row.get("generated_text") or "", "finish_reason": FINISH_LENGTH if n >= max_tokens else FINISH_STOP,
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": n, "error": None}


class VllmBackend(Backend):
    kind = "vllm"

    def __init__(self, model: str, concurrency: int = 1, batch_size: int = 32, engine_kwargs: dict | None = None,
                 accelerator_type: str | None = None):
        self.model, self.concurrency, self.batch_size = model, concurrency, batch_size
        self.engine_kwargs = engine_kwargs or {}
        self.accelerator_type = accelerator_type

    @property
    def identity(self) -> str:
        return f"vllm:{self.model}"

    def check_ready(self) -> None:
        if not vllm_available():
            raise BackendUnavailable("vllm backend: the vllm package is not installed here (pip install vllm on GPU nodes)")

    def generate_dataset(self, requests, params: SamplingParams):
        from dataclasses import asdict

        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        config = vLLMEngineProcessorConfig(
            model_source=self.model, engine_kwargs=self.engine_kwargs, concurrency=self.concurrency,
            batch_size=self.batch_size, accelerator_type=self.accelerator_type,
            chat_template_stage=True, tokenize_stage=True, detokenize_stage=True,
        )
        processor = build_processor(config, preprocess=partial(_preprocess, params=asdict(params)),
                                    postprocess=partial(_postprocess, max_tokens=params.max_tokens))
        return processor(requests)
