"""Local transformers `generate` in a Ray Data actor pool (CPU runs, the tiny model, no vLLM).

Each actor loads the model once; batches are left-padded so every row's new tokens
start at the same position. Ray Data LLM has no plain-transformers engine, which is
why this one is ours.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synth.backends.base import FINISH_LENGTH, FINISH_STOP, Backend, BackendUnavailable, SamplingParams


class _TransformersGenerator:
    """Actor-pool UDF: one model per actor, one `generate` call per batch."""

    def __init__(self, model_path: str, params: dict[str, Any], dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)  # actors share the node's cores; one thread each avoids oversubscription
        self.torch = torch
        self.params = SamplingParams(**params)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else [self.tokenizer.eos_token_id]
        self.stop_ids = {int(e) for e in eos if e is not None}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        prompts = [self.tokenizer.apply_chat_template(json.loads(m), tokenize=False, add_generation_prompt=True)
                   for m in batch["messages_json"]]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        # One seed per batch (the first row's): rows of a batch share one sampling stream.
        torch.manual_seed(int(batch["seed"][0]))
        greedy = self.params.temperature == 0
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=self.params.max_tokens, do_sample=not greedy,
                temperature=None if greedy else self.params.temperature,
                top_p=None if greedy else self.params.top_p,
                # 0 switches the cut off; None would fall back to generation_config's top_k (50 by default).
                top_k=None if greedy else self.params.top_k,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        texts, reasons, n_new = [], [], []
        for ids in new:
            stop_at = next((i for i, t in enumerate(ids) if t in self.stop_ids), None)
            kept = ids if stop_at is None else ids[:stop_at]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
            reasons.append(FINISH_STOP if stop_at is not None else FINISH_LENGTH)
            n_new.append(len(kept) + (1 if stop_at is not None else 0))
        n = len(texts)
        return {
            "request_id": batch["request_id"], "sample_index": batch["sample_index"],
            "text": np.array(texts, dtype=object), "finish_reason": np.array(reasons, dtype=object),
            "prompt_tokens": enc["attention_mask"].sum(dim=1).numpy().astype(np.int64),
            "completion_tokens": np.array(n_new, dtype=np.int64),
            "error": np.array([None] * n, dtype=object),
        }


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, model: str, batch_size: int = 8, concurrency: int = 1, num_cpus: float = 1,
                 dtype: str = "float32"):
        self.model = str(model)
        self.batch_size, self.concurrency, self.num_cpus, self.dtype = batch_size, concurrency, num_cpus, dtype

    @property
    def identity(self) -> str:
        return f"local:{self.model}"

    def check_ready(self) -> None:
        path = Path(self.model)
        if not (path / "config.json").exists():
            raise BackendUnavailable(f"local backend: {self.model} is not a model directory (no config.json)")

    def generate_dataset(self, requests, params: SamplingParams):
        from dataclasses import asdict

        from ray.data import ActorPoolStrategy

        return requests.map_batches(
            _TransformersGenerator, batch_size=self.batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=self.concurrency), num_cpus=self.num_cpus,
            fn_constructor_kwargs={"model_path": self.model, "params": asdict(params), "dtype": self.dtype},
        )
