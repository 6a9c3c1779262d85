"""The one interface every LLM backend implements.

A request is a chat conversation with an id; a backend draws `n` completions per
request and returns one `Completion` per (request, sample). Every backend runs on
Ray Data, so `generate_dataset` is the core: it maps a dataset of requests to a
dataset of completions. `generate` is the list-in / list-out convenience the
self-instruct loop uses between rounds.

Requests are expanded to one row per sample *before* they reach a backend, because
not every OpenAI-compatible server honours `n` (transformers serve ignores it), and a
per-sample seed keeps sampling reproducible where the server supports seeds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any
from schemas.options import from_mapping

# Columns of the dataset a backend consumes and produces.
REQUEST_COLUMNS = ("request_id", "sample_index", "messages_json", "seed")
RESULT_COLUMNS = ("request_id", "sample_index", "text", "finish_reason", "prompt_tokens",
                  "completion_tokens", "error")

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_ERROR = "error"


class BackendUnavailable(RuntimeError):
    """The backend cannot serve requests (server unreachable, model missing): raised before any work."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # keep the k most likely tokens per step; 0 = no cut (each backend's "off")
    max_tokens: int = 256
    n: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"sampling.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"sampling.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"sampling.top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")

    @classmethod
    def from_config(cls, config: dict | None) -> "SamplingParams":
        return from_mapping(cls, config, "sampling")


@dataclass(frozen=True)
class ChatRequest:
    request_id: str
    messages: list[dict[str, str]]


@dataclass
class Completion:
    request_id: str
    sample_index: int
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class GenerationStats:
    """Per-call counts a job copies into its card (how many calls failed after retries)."""
    requests: int = 0
    completions: int = 0
    errors: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_examples: list[str] = field(default_factory=list)

    def add(self, completions: list[Completion]) -> None:
        for c in completions:
            self.completions += 1
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens
            if c.error is not None:
                self.errors += 1
                if len(self.error_examples) < 5:
                    self.error_examples.append(c.error[:300])
            elif c.finish_reason == FINISH_LENGTH:
                self.truncated += 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_seed(base_seed: int, request_id: str, sample_index: int) -> int:
    """A stable 31-bit seed per (request, sample), so a resumed run draws the same samples."""
    digest = hashlib.blake2b(f"{base_seed}:{request_id}:{sample_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def expand_requests(requests: list[ChatRequest], params: SamplingParams) -> list[dict[str, Any]]:
    """One row per (request, sample); messages travel as JSON so Arrow never re-types them."""
    seen: set[str] = set()
    rows = []
    for r in requests:
        if r.request_id in seen:
            raise ValueError(f"duplicate request_id {r.request_id!r} in one generate() call")
        seen.add(r.request_id)
        if not r.messages or r.messages[-1].get("role") != "user":
            raise ValueError(f"request {r.request_id!r}: messages must end with a user turn")
        payload = json.dumps(r.messages, ensure_ascii=False)
        for i in range(params.n):
            rows.append({"request_id": r.request_id, "sample_index": i, "messages_json": payload,
                         "seed": sample_seed(params.seed, r.request_id, i)})
    return rows


def completion_from_row(row: dict[str, Any]) -> Completion:
    error = row.get("error")
    return Completion(
        request_id=str(row["request_id"]), sample_index=int(row["sample_index"]),
        text=row.get("text") or "", finish_reason=row.get("finish_reason") or FINISH_ERROR,
        prompt_tokens=int(row.get("prompt_tokens") or 0), completion_tokens=int(row.get("completion_tokens") or 0),
        error=error if error else None,
    )


class Backend:
    """Subclasses implement `generate_dataset` (Ray Data in, Ray Data out) and `check_ready`."""

    kind: str = "backend"

    @property
    def identity(self) -> str:
        """A name for cards and the `judge` column; never contains secrets."""
        raise NotImplementedError

    def check_ready(self) -> None:
        """Raise BackendUnavailable before any work when the backend cannot serve."""

    def generate_dataset(self, requests, params: SamplingParams):  # pragma: no cover - interface
        """Map a Ray dataset with REQUEST_COLUMNS to one with RESULT_COLUMNS."""
        raise NotImplementedError

    def generate(self, requests: list[ChatRequest], params: SamplingParams) -> list[Completion]:
        """Draw `params.n` completions for every request; results sorted by (request order, sample)."""
        import ray.data

        rows = expand_requests(requests, params)
        if not rows:
            return []
        ds = ray.data.from_items(rows)
        out = [completion_from_row(r) for r in self.generate_dataset(ds, params).take_all()]
        order = {r.request_id: i for i, r in enumerate(requests)}
        out.sort(key=lambda c: (order[c.request_id], c.sample_index))
        if len(out) != len(rows):
            raise RuntimeError(f"{self.identity}: {len(rows)} samples requested, {len(out)} came back")
        return out
