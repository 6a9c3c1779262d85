"""Where a rollout's scores come from, and how several are combined and normalised.

A source scores N (prompt, response) pairs at once and returns N floats:
- FunctionReward: a Python `module:function(prompts, responses) -> list[float]` (rule or
  verifiable rewards: exact-match answers, format checks);
- ModelReward:    a reward model from `--stage rm` (the scalar head at the last real token),
  scoring the conversation re-tokenized from text with its own tokenizer and template;
- AdapterReward:  the reward LoRA adapter on the actor's backbone (train.rl.models).
`CombinedReward` sums the sources with weights (Llama 2 combined helpfulness and safety
models this way) and refuses NaN / inf / failing scores with an error naming the prompt.
`RunningMoments` keeps the running mean/std used to normalise the combined score.
"""
from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

log = logging.getLogger(__name__)


class RewardSourceError(ValueError):
    """A reward source failed or returned something that is not one finite number per sample."""


@dataclass
class RolloutTexts:
    """What a text-level reward source sees: the prompt as text and as messages (or None for
    raw-text prompts), and the decoded response (without its EOS token)."""

    prompts: list[str]
    prompt_messages: list[list[dict] | None]
    responses: list[str]


class RewardSource(Protocol):
    name: str

    def __call__(self, texts: RolloutTexts, batch) -> list[float]: ...


def _short(text: str, limit: int = 80) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


def load_function(spec: str) -> Callable:
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardSourceError(f"reward_function {spec!r}: cannot import module {module_name!r}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RewardSourceError(f"reward_function {spec!r}: module {module_name!r} has no function {function_name!r}")
    return function


class FunctionReward:
    def __init__(self, spec: str):
        self.name = spec
        self.function = load_function(spec)

    def __call__(self, texts: RolloutTexts, batch=None) -> list[float]:
        try:
            scores = self.function(texts.prompts, texts.responses)
        except Exception as exc:  # noqa: BLE001 — any failure of user code becomes one clear line
            prompt = self._failing_prompt(texts)
            raise RewardSourceError(f"reward function {self.name} raised {type(exc).__name__}: {exc} "
                                    f"(prompt: {_short(prompt)!r})") from exc
        return check_scores(self.name, scores, texts)

    def _failing_prompt(self, texts: RolloutTexts) -> str:
        """Call the function one pair at a time to find the prompt it fails on."""
        for prompt, response in zip(texts.prompts, texts.responses):
            try:
                self.function([prompt], [response])
            except Exception:  # noqa: BLE001
                return prompt
        return texts.prompts[0] if texts.prompts else ""


class ModelReward:
    """A reward model directory saved by `--stage rm` (train.reward_model.load_reward_model)."""

    def __init__(self, path: str, policy_tokenizer, device: str | None = None):
        from train.reward_model import load_reward_model

        self.name = f"reward_model:{path}"
        self.model = load_reward_model(path, device=device)
        if self.model.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            log.info("reward model %s has a different tokenizer than the policy: responses are re-tokenized "
                     "from text for it", path)

    def __call__(self, texts: RolloutTexts, batch=None) -> list[float]:
        conversations, plain, empty = [], [], []
        for i, (prompt, messages, response) in enumerate(zip(texts.prompts, texts.prompt_messages, texts.responses)):
            if not response.strip():
                # A policy that stops at once says nothing; the reward model's tokenization refuses an
                # empty assistant turn (train.reward_model), so such a sample gets the step's lowest score.
                empty.append(i)
            elif messages is None:
                plain.append(prompt + response)
            else:
                conversations.append(list(messages) + [{"role": "assistant", "content": response}])
        if conversations and plain:
            raise RewardSourceError(f"{self.name}: a step mixes chat and raw-text prompts")
        scored = [float(s) for s in self.model.score(conversations or plain)] if conversations or plain else []
        lowest = min(scored) if scored else 0.0
        values, empty_rows = iter(scored), set(empty)
        scores = [lowest if i in empty_rows else next(values) for i in range(len(texts.responses))]
        return check_scores(self.name, scores, texts)


class AdapterReward:
    def __init__(self, models):
        self.name = "reward_adapter"
        self.models = models

    def __call__(self, texts: RolloutTexts, batch) -> list[float]:
        return check_scores(self.name, self.models.adapter_rewards(batch).tolist(), texts)


def check_scores(name: str, scores, texts: RolloutTexts) -> list[float]:
    """One finite float per response, or an error naming the source and the first bad prompt."""
    if isinstance(scores, torch.Tensor):
        scores = scores.tolist()
    try:
        scores = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise RewardSourceError(f"{name} must return a list of numbers, got {type(scores).__name__}") from None
    if len(scores) != len(texts.responses):
        raise RewardSourceError(f"{name} returned {len(scores)} scores for {len(texts.responses)} responses")
    for score, prompt in zip(scores, texts.prompts):
        if not math.isfinite(score):
            raise RewardSourceError(f"{name} returned {score} (prompt: {_short(prompt)!r})")
    return scores


class CombinedReward:
    """Σ_k w_k · score_k; also keeps each source's mean for the metrics."""

    def __init__(self, sources: Sequence[RewardSource], weights: Sequence[float] | None = None):
        if not sources:
            raise ValueError("no reward source")
        self.sources = list(sources)
        self.weights = list(weights) if weights else [1.0] * len(self.sources)
        self.last_means: dict[str, float] = {}

    def __call__(self, texts: RolloutTexts, batch) -> torch.Tensor:
        total = torch.zeros(len(texts.responses))
        self.last_means = {}
        for source, weight in zip(self.sources, self.weights):
            scores = torch.tensor(source(texts, batch), dtype=torch.float32)
            self.last_means[source.name] = scores.mean().item()
            total += weight * scores
        return total


class RunningMoments:
    """Running mean and variance of all scores seen (Chan et al.'s parallel update), merged
    over the data-parallel workers so every worker normalises with the same numbers."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def update(self, values: torch.Tensor, all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        values = values.double().flatten()
        stats = torch.stack([values.new_tensor(values.numel()), values.sum(), (values ** 2).sum()])
        if all_reduce is not None:
            stats = all_reduce(stats)
        n, total, squares = stats.tolist()
        if n == 0:
            return
        batch_mean = total / n
        batch_m2 = max(squares - n * batch_mean ** 2, 0.0)
        delta = batch_mean - self.mean
        combined = self.count + n
        self.mean += delta * n / combined
        self.m2 += batch_m2 + delta ** 2 * self.count * n / combined
        self.count = combined

    def normalize(self, values: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        out = (values - self.mean) / max(self.std, 1e-6)
        return out.clamp(-clip, clip) if clip else out

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])


def build_reward(options, models, policy_tokenizer, device: str | None = None) -> CombinedReward:
    """The options' sources in their documented order; none given = the built-in rule reward."""
    from train.rl.default import DEFAULT_REWARD_FUNCTION

    sources: list[RewardSource] = [ModelReward(p, policy_tokenizer, device) for p in options.reward_model]
    if options.reward_adapter:
        sources.append(AdapterReward(models))
    sources += [FunctionReward(spec) for spec in options.reward_function]
    if not sources:
        log.info("no reward source given: using the built-in rule reward %s", DEFAULT_REWARD_FUNCTION)
        sources = [FunctionReward(DEFAULT_REWARD_FUNCTION)]
    return CombinedReward(sources, options.reward_weights or None)
