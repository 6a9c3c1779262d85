"""LLM backends behind one interface: OpenAI-compatible HTTP, vLLM, local transformers.

`make_backend(spec)` accepts a config mapping (`{"kind": "http", "base_url": ..., "model": ...}`)
or a short string:
  local:PATH                          transformers generate in a Ray Data actor pool
  vllm:MODEL                          Ray Data LLM vLLM engine (GPU)
  http:MODEL@http://host:port/v1      OpenAI-compatible server via Ray Data LLM
  PATH (an existing directory)        same as local:PATH
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.options import check_keys
from synth.backends.base import (Backend, BackendUnavailable, ChatRequest, Completion, GenerationStats,
                                 SamplingParams)


def parse_backend_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        if "kind" not in spec:
            raise ValueError(f"backend config {spec!r} needs a 'kind' (local, http or vllm)")
        return dict(spec)
    spec = str(spec)
    if spec.startswith("local:"):
        return {"kind": "local", "model": spec[len("local:"):]}
    if spec.startswith("vllm:"):
        return {"kind": "vllm", "model": spec[len("vllm:"):]}
    if spec.startswith("http:") and not spec.startswith("http://"):
        model, sep, url = spec[len("http:"):].partition("@")
        if not sep or not model or not url:
            raise ValueError(f"backend {spec!r}: expected http:MODEL@http://host:port/v1")
        return {"kind": "http", "model": model, "base_url": url}
    if Path(spec).is_dir():
        return {"kind": "local", "model": spec}
    raise ValueError(f"backend {spec!r}: expected local:PATH, vllm:MODEL, http:MODEL@URL or a model directory")


def make_backend(spec: str | dict[str, Any], **defaults: Any) -> Backend:
    """Build a backend from a spec; `defaults` (e.g. from the job config) fill unset settings."""
    config = parse_backend_spec(spec)
    kind = config.pop("kind")
    if kind == "local":
        from synth.backends.local import LocalBackend
        cls = LocalBackend
    elif kind == "http":
        from synth.backends.http import HttpBackend
        cls = HttpBackend
    elif kind == "vllm":
        from synth.backends.vllm import VllmBackend
        cls = VllmBackend
    else:
        raise ValueError(f"unknown backend kind {kind!r}: expected local, http or vllm")
    import inspect
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    check_keys(config, accepted, f"{kind} backend")
    # Job-wide defaults apply only where this kind of backend has the setting.
    merged = {k: v for k, v in defaults.items() if k in accepted and v is not None}
    merged.update(config)
    return cls(**merged)


__all__ = ["Backend", "BackendUnavailable", "ChatRequest", "Completion", "GenerationStats", "SamplingParams",
           "make_backend", "parse_backend_spec"]
