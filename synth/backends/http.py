"""OpenAI-compatible `/v1/chat/completions` through Ray Data LLM's HTTP processor.

`HttpRequestProcessorConfig` + `build_processor` already give us an actor pool of
senders, a QPS limit and retries with exponential backoff on 429/408/502/503/504 —
we configure them. The API key comes only from an environment variable; it goes into
the request headers and nowhere else (not `identity`, not the card, not logs).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from functools import partial
from typing import Any, AsyncIterator

from synth.backends.base import FINISH_ERROR, Backend, BackendUnavailable, SamplingParams


def _make_tolerant_udf():
    """Ray's HttpRequestUDF raises once a request has used up its retries, which fails the
    whole Ray Data job. A synthesis run must instead count the failure and go on, so this
    subclass calls the stock UDF one row at a time (the stock UDF awaits its requests one
    after another anyway) and turns a final failure into an error response for that row.
    Retries, backoff and QPS pacing stay the stock code's."""
    from ray.llm._internal.batch.stages.http_request_stage import HttpRequestUDF

    class TolerantHttpRequestUDF(HttpRequestUDF):
        async def udf(self, batch: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
            for row in batch:
                try:
                    async for out in super().udf([row]):
                        yield out
                except Exception as exc:  # noqa: BLE001 - any failure of one row is that row's error
                    message = str(exc).split("Full Traceback")[0].strip()
                    # The stock message embeds the request payload; keep only the cause.
                    if "Previous Exception:" in message:
                        message = "retries exhausted: " + message.split("Previous Exception:", 1)[1].strip()
                    yield {self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN],
                           "http_response": {"error": {"message": f"{type(exc).__name__}: {message}"[:500]}}}

    return TolerantHttpRequestUDF


def _preprocess(row: dict[str, Any], model: str, params: dict[str, Any], send_seed: bool) -> dict[str, Any]:
    payload = {"model": model, "messages": json.loads(row["messages_json"]),
               "temperature": params["temperature"], "top_p": params["top_p"], "max_tokens": params["max_tokens"]}
    if params.get("top_k"):
        # Not an OpenAI parameter: vLLM, SGLang and transformers serve read it; plain OpenAI
        # servers reject unknown keys, so it is sent only when set.
        payload["top_k"] = int(params["top_k"])
    if send_seed:
        payload["seed"] = int(row["seed"])
    return {"payload": payload}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    resp = row.get("http_response") or {}
    out = {"request_id": row["request_id"], "sample_index": int(row["sample_index"]), "text": "",
           "finish_reason": FINISH_ERROR, "prompt_tokens": 0, "completion_tokens": 0, "error": None}
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not choices:
        # A server error answered with a JSON body (e.g. a 500 with {"error": ...}) lands here too.
        err = resp.get("error") if isinstance(resp, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
        out["error"] = str(msg or f"response without choices: {json.dumps(resp)[:200]}")
        return out
    choice = choices[0]
    message = choice.get("message") or {}
    usage = resp.get("usage") or {}
    out.update(text=message.get("content") or "", finish_reason=choice.get("finish_reason") or "stop",
               prompt_tokens=int(usage.get("prompt_tokens") or 0),
               completion_tokens=int(usage.get("completion_tokens") or 0))
    return out


class HttpBackend(Backend):
    kind = "http"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 1, batch_size: int = 16, qps: int | None = None, max_retries: int = 3,
                 base_retry_wait_s: float = 1.0, send_seed: bool = True, ready_timeout_s: float = 10.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"http backend: base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency, self.batch_size, self.qps = concurrency, batch_size, qps
        self.max_retries, self.base_retry_wait_s = max_retries, base_retry_wait_s
        self.send_seed, self.ready_timeout_s = send_seed, ready_timeout_s

    def __repr__(self) -> str:  # never show headers
        return f"HttpBackend({self.identity!r})"

    @property
    def identity(self) -> str:
        return f"http:{self.model}@{self.base_url}"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check_ready(self) -> None:
        """GET /models: fails fast with one clear line instead of N retried requests."""
        req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.ready_timeout_s) as resp:
                body = json.loads(resp.read().decode("utf-8") or "{}")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise BackendUnavailable(f"{self.identity}: server refused the credentials (HTTP {exc.code}); "
                                         f"set the API key in the environment variable {self.api_key_env}") from None
            if exc.code == 404:  # some servers have no /models; reaching them is enough
                return
            raise BackendUnavailable(f"{self.identity}: server answered HTTP {exc.code} at {self.base_url}/models") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"cannot reach the OpenAI-compatible server at {self.base_url} "
                                     f"({reason}); is it running?") from None
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if models and self.model not in models:
            raise BackendUnavailable(f"{self.identity}: server does not list model {self.model!r}; it serves {models}")

    def build_processor(self, params: SamplingParams):
        from dataclasses import asdict

        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        config = HttpRequestProcessorConfig(
            url=f"{self.base_url}/chat/completions", headers=self._headers(), qps=self.qps,
            max_retries=self.max_retries, base_retry_wait_time_in_s=self.base_retry_wait_s,
            concurrency=self.concurrency, batch_size=self.batch_size,
        )
        processor = build_processor(
            config, preprocess=partial(_preprocess, model=self.model, params=asdict(params), send_seed=self.send_seed),
            postprocess=_postprocess,
        )
        processor.get_stage_by_name("HttpRequestStage").fn = _make_tolerant_udf()
        return processor

    def generate_dataset(self, requests, params: SamplingParams):
        return self.build_processor(params)(requests)
