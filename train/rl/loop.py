"""The one RL loop: rollout → score → advantages → policy epochs in minibatches.

    for step in steps:
        prompts   = the next prompts of this worker's shard (a deterministic order: resumable)
        rollout   = G sampled responses per prompt                    (train.rl.rollout)
        scores    = weighted reward sources, optionally normalised    (train.rl.reward_sources)
        old/ref   = log-probs of the sampling policy and the reference; values of the critic
        adv       = the estimator's advantages (KL in the reward, or later in the loss)
        for epoch, minibatch: clipped surrogate (+ value, entropy, KL, ptx) → all-reduced grads → step
        KL controller update; metrics; samples; checkpoint every save_steps

Every worker rolls out its own prompts; the G samples of a prompt stay on one worker, so
group baselines need no communication. Batch-wide statistics (whitening, REINFORCE++'s
normalisation, running reward moments, metrics) are all-reduced so every worker uses the
same numbers, and gradients are averaged before each optimizer step. Token means in the loss
divide by the token count of the whole minibatch over all workers (not the worker's own), so
N workers take the same update as one worker on their joint batch.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from train.args import TrainConfig
from train.rl import advantages as adv
from train.distributed import all_reduce_mean, all_reduce_sum, global_whiten, world
from train.rl.kl_control import KLController
from train.rl.objective import aggregate, clipped_value_loss, explained_variance, kl_estimate, policy_objective, ptx_loss
from train.rl.optimizer_steps import build_steps
from train.rl.options import RLOptions
from train.rl.reward_sources import RolloutTexts, RunningMoments
from train.rl.rollout import RolloutBatch, SamplingSettings, eos_token_ids, sample_responses

log = logging.getLogger(__name__)

STATE_FILE = "rl_state.json"
WEIGHTS_FILE = "trainable.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
PLOTTED = (("reward_mean", "reward"), ("reward_std", "reward std"), ("kl", "KL to reference (per token)"),
           ("entropy", "entropy"), ("clip_fraction", "clip fraction"), ("value_loss", "value loss"),
           ("explained_variance", "explained variance"), ("response_length", "response tokens"),
           ("rollout_s", "rollout seconds"), ("update_s", "update seconds"), ("kl_coef", "KL coefficient"))


class NonFiniteRLError(RuntimeError):
    """A NaN/inf appeared in the loss or in the log-probs; training stopped at the last good checkpoint."""


@dataclass
class PromptCursor:
    """Which prompts a step takes: epoch after epoch over this worker's prompts, each epoch in
    its own seeded order. The position alone restores it, so resuming needs no replay."""

    count: int
    seed: int
    position: int = 0

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            epoch, offset = divmod(self.position, self.count)
            order = list(range(self.count))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            out.append(order[offset])
            self.position += 1
        return out


def total_steps(cfg: TrainConfig, options: RLOptions, prompts_per_worker: int) -> int:
    if cfg.training.max_steps > 0:
        return cfg.training.max_steps
    return max(1, math.ceil(prompts_per_worker * cfg.training.num_train_epochs / options.prompts_per_step))


class RLLoop:
    def __init__(self, cfg: TrainConfig, options: RLOptions, prompts: list[dict], run_dir: str | Path,
                 steps: int, report: Callable[[dict, str | None], None] | None = None):
        from train.model_loading import load_tokenizer
        from train.rl.models import build_models
        from train.rl.reward_sources import build_reward

        self.cfg, self.options, self.prompts = cfg, options, prompts
        self.run_dir = Path(run_dir)
        self.rank, self.world_size = world()
        self.steps, self.report = steps, report
        torch.manual_seed(cfg.training.seed)  # the same value-head init on every worker
        self.tokenizer = load_tokenizer(cfg.model)
        self.models = build_models(cfg, options)
        self.device = next(self.models.actor.parameters()).device
        self.reward = build_reward(options, self.models, self.tokenizer, device=str(self.device))
        self.sampling = SamplingSettings(options.max_new_tokens, options.temperature, options.top_p, options.top_k)
        self.eos_ids = eos_token_ids(self.models.actor, self.tokenizer)
        self.kl = KLController(options.kl_coef, options.target_kl, options.kl_horizon)
        self.moments = RunningMoments()
        self.cursor = PromptCursor(len(prompts), cfg.training.seed + 7919 * self.rank)
        self.step = 0
        # Bumped whenever the policy's weights change (an optimizer step, a checkpoint load): the
        # vLLM engine reloads them only when it differs from the version it last received.
        self.weights_version = 0
        self.vllm = self._vllm_engine() if options.rollout_engine == "vllm" else None
        self.optimizer_steps = build_steps(cfg, self.models.trainable_modules(), options.critic_lr_ratio, steps,
                                       options.rollouts_per_step // options.num_minibatches, self.world_size)
        self.ptx_batches = self._ptx_stream() if options.ptx_coef > 0 else None

    # ------------------------------------------------------------ setup
    def _vllm_engine(self):
        from train.rl.vllm_rollout import VLLMRollout

        return VLLMRollout(self.cfg, self.options, self.eos_ids, self.tokenizer.pad_token_id,
                           seed=self.cfg.training.seed + self.rank)

    def _ptx_stream(self) -> Iterable[torch.Tensor]:
        """Blocks of pretraining text for PPO-ptx, cycled forever."""
        from train.formats import iter_raw_rows, load_dataset_spec

        spec = load_dataset_spec(self.options.ptx_data)
        width = min(self.cfg.data.cutoff_len, 256)
        ids: list[int] = []
        for row in iter_raw_rows(spec):
            text = row.get("text") if isinstance(row, dict) else None
            if text:
                ids += self.tokenizer(str(text), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        blocks = [ids[i:i + width] for i in range(0, len(ids) - width + 1, width)]
        if not blocks:
            raise ValueError(f"data_options.ptx_data {self.options.ptx_data!r} holds no text (rows need a `text` field "
                             f"with at least {width} tokens in all)")
        rng = random.Random(self.cfg.training.seed + self.rank)
        while True:
            rng.shuffle(blocks)
            for start in range(0, len(blocks) - self.options.ptx_batch_size + 1, self.options.ptx_batch_size):
                yield torch.tensor(blocks[start:start + self.options.ptx_batch_size], device=self.device)
            if len(blocks) < self.options.ptx_batch_size:
                yield torch.tensor(blocks, device=self.device)

    # ------------------------------------------------------------ one step
    def rollout(self, prompt_rows: list[dict]) -> tuple[RolloutBatch, RolloutTexts]:
        prompts = [r["prompt_ids"] for r in prompt_rows]
        if self.vllm is not None:
            self.vllm.push_weights(self.models.actor, self.weights_version)
            batch = self.vllm.sample(prompts, self.options.num_generations, self.sampling, seed=self._sampling_seed(),
                                     device=self.device)
        else:
            batch = sample_responses(self.models.actor, prompts, self.options.num_generations, self.sampling,
                                     self.eos_ids, self.tokenizer.pad_token_id)
        responses = []
        for ids, mask in zip(batch.response_ids.tolist(), batch.response_mask.tolist()):
            tokens = [t for t, m in zip(ids, mask) if m and t not in self.eos_ids]
            responses.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        rows = [prompt_rows[i] for i in batch.prompt_index]
        texts = RolloutTexts(prompts=[r["prompt_text"] for r in rows], responses=responses,
                             prompt_messages=[json.loads(r["prompt_messages"]) if r.get("prompt_messages") else None
                                              for r in rows])
        return batch, texts

    def score(self, texts: RolloutTexts, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw combined scores, scores the advantages use: normalised and clipped as asked)."""
        raw = self.reward(texts, batch)
        scores = raw
        if self.options.normalize_reward:
            self.moments.update(raw, all_reduce_sum)
            scores = self.moments.normalize(raw, self.options.reward_clip)
        elif self.options.reward_clip:
            scores = raw.clamp(-self.options.reward_clip, self.options.reward_clip)
        return raw, scores.to(self.device)

    def advantages(self, scores: torch.Tensor, kl_tokens: torch.Tensor, mask: torch.Tensor,
                   values: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(per-token advantages, critic returns or None)."""
        o = self.options
        beta = self.kl.value if o.kl_placement == "reward" else 0.0
        if o.advantage == "gae":
            rewards = adv.token_rewards(scores, kl_tokens, mask, beta)
            advantages, returns = adv.gae(rewards, values, mask, o.gamma, o.lam)
            if o.whiten_advantages:
                advantages = global_whiten(advantages, mask)
            return advantages, returns
        if o.advantage == "reinforce_pp":
            returns = adv.discounted_returns(adv.token_rewards(scores, kl_tokens, mask, beta), mask, o.gamma)
            return global_whiten(returns, mask), None
        sequence_scores = scores - beta * (kl_tokens * mask).sum(1)
        if o.advantage == "rloo":
            per_sequence = adv.leave_one_out(sequence_scores, o.num_generations)
        else:
            per_sequence = adv.group_relative(sequence_scores, o.num_generations, scale_by_std=o.advantage == "grpo")
        return adv.broadcast_to_tokens(per_sequence, mask), None

    def update(self, batch: RolloutBatch, old_logps, ref_logps, advantages, old_values, returns,
               prompt_texts: list[str]) -> tuple[dict[str, float], torch.Tensor | None]:
        """The policy epochs over one rollout: (mean metrics of the optimizer steps, the log-probs
        the update's own forward gave when `old_logps` is None (single pass), else None)."""
        o = self.options
        mask = batch.response_mask.float()
        n = len(batch)
        # Single pass: the old log-probs are this forward's own, detached; they come back for the KL metric.
        pass_logps = torch.zeros_like(mask) if old_logps is None else None
        size = n // o.num_minibatches
        sums: dict[str, float] = {}
        updates = 0
        generator = torch.Generator().manual_seed(self.cfg.training.seed + self.step)
        for _ in range(o.ppo_epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, size):
                rows = order[start:start + size]
                mb, m = batch.select(rows), mask[rows]
                num_tokens = self._tokens_per_worker(m)
                # The entropy is a metric unless it is in the loss: then it needs no autograd graph.
                out, shared_values = self.models.policy(mb, o.temperature, with_entropy=True,
                                                        entropy_grad=bool(o.entropy_coef))
                if pass_logps is not None:
                    pass_logps[rows] = out.logps.detach().float()
                terms = policy_objective(
                    out.logps, old_logps[rows] if old_logps is not None else out.logps.detach(), advantages[rows], m,
                    aggregation=o.aggregation(),
                    clip_low=o.clip_range, clip_high=o.clip_range_high,
                    ref_logps=ref_logps[rows] if o.kl_placement == "loss" else None,
                    kl_coef_in_loss=self.kl.value if o.kl_placement == "loss" else 0.0, kl_estimator=o.kl_estimator,
                    kl_importance_weighted=o.kl_importance_weighted, entropy=out.entropy,
                    entropy_coef=o.entropy_coef, max_tokens=o.max_new_tokens, num_tokens=num_tokens)
                loss = terms.loss
                metrics = {"policy_loss": terms.policy.item(), "clip_fraction": terms.clip_fraction.item(),
                           "entropy": terms.entropy.item(), "approx_kl_old": terms.approx_kl_old.item()}
                if self.models.critic_mode:
                    values = shared_values if shared_values is not None else self.models.values(mb)
                    per_token, value_clipped = clipped_value_loss(values, old_values[rows], returns[rows], o.value_clip)
                    value_loss = aggregate(per_token, m, "token_mean", num_tokens=num_tokens)
                    loss = loss + o.vf_coef * value_loss
                    metrics["value_loss"] = value_loss.item()
                    metrics["value_clip_fraction"] = adv.masked_mean(value_clipped, m).item()
                if self.ptx_batches is not None:
                    text = next(self.ptx_batches)
                    ptx = ptx_loss(self.models.actor(input_ids=text, use_cache=False).logits, text)
                    loss = loss + o.ptx_coef * ptx
                    metrics["ptx_loss"] = ptx.item()
                self._stop_if_not_finite(loss, out.logps, m, [prompt_texts[i] for i in rows.tolist()])
                self.optimizer_steps.step(loss)
                self.weights_version += 1
                metrics["loss"] = loss.item()
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        self.optimizer_steps.end_rl_step()
        return {k: v / updates for k, v in sums.items()}, pass_logps

    def _tokens_per_worker(self, mask: torch.Tensor) -> float | None:
        """The token-mean denominator of this minibatch: its real tokens over every worker / world size.

        Each worker's loss is Σ its tokens / this, so the mean of the workers' gradients (what
        average_gradients makes) is the gradient of Σ all tokens / all tokens: the same update as
        one worker on the whole batch. Each worker's own token count instead would weigh a token
        by 1 / (its worker's count): workers with short responses would count more.
        None in a single process (the mask's own count is the whole batch's)."""
        if self.world_size == 1:
            return None
        total = all_reduce_sum(mask.detach().sum().reshape(1).double()).item()
        return total / self.world_size

    def _stop_if_not_finite(self, loss, logps, mask, prompts: list[str]) -> None:
        bad_rows = (~torch.isfinite(logps) & mask.bool()).any(dim=1)
        local_bad = (not math.isfinite(loss.item())) or bool(bad_rows.any())
        # Every worker must stop together, or the others would wait in the next all-reduce forever.
        if all_reduce_sum(torch.tensor([float(local_bad)])).item() == 0:
            return
        prompt = prompts[int(bad_rows.nonzero()[0])] if bad_rows.any() else (prompts[0] if prompts else "")
        what = f"loss became {loss.item()}" if local_bad else "another worker's loss became non-finite"
        raise self._non_finite(what, prompt)

    def _non_finite(self, what: str, prompt: str) -> NonFiniteRLError:
        from train.worker import _latest_checkpoint

        last = _latest_checkpoint(str(self.run_dir / "hf" / "rank0"))
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
        return NonFiniteRLError(f"{what} at step {self.step + 1} (prompt: {prompt[:80]!r}); training stopped and "
                                f"{where}. Lower learning_rate or check the reward.")

    def _sampling_seed(self) -> int:
        return (self.cfg.training.seed * 1_000_003 + self.step) * 64 + self.rank

    def run_step(self) -> dict[str, float]:
        o = self.options
        prompt_rows = [self.prompts[i] for i in self.cursor.take(o.prompts_per_step)]
        # Sampling randomness is a function of (seed, step, rank): a resumed run draws the same
        # responses the uninterrupted run would have, with no RNG state to carry in checkpoints.
        torch.manual_seed(self._sampling_seed())
        started = time.perf_counter()
        try:
            batch, texts = self.rollout(prompt_rows)
        except RuntimeError as exc:
            if "inf" not in str(exc) and "nan" not in str(exc):
                raise
            # Sampling from a policy whose weights went non-finite (torch.multinomial refuses NaN probabilities).
            raise self._non_finite("the policy's probabilities became non-finite", prompt_rows[0]["prompt_text"]) from exc
        rollout_s = time.perf_counter() - started
        try:
            raw, scores = self.score(texts, batch)
        except ValueError as exc:
            raise type(exc)(f"step {self.step + 1}: {exc}") from exc
        score_s = time.perf_counter() - started - rollout_s
        mask = batch.response_mask.float()
        # One pass in one minibatch, no critic and no KL in the reward (GRPO's default): π_old is the
        # policy the update's own forward runs, so that forward gives the old log-probs (detached)
        # and the separate no-grad pass is skipped (as TRL's GRPOTrainer does); same loss and gradient.
        single_pass = (o.ppo_epochs == 1 and o.num_minibatches == 1 and not self.models.critic_mode
                       and (o.kl_placement == "loss" or self.kl.value == 0.0))
        with torch.no_grad():
            ref_logps = self.models.reference_logps(batch, o.temperature)
            values, old_logps = None, None
            if not single_pass:
                old, shared_values = self.models.policy(batch, o.temperature)
                old_logps = old.logps
                if self.models.critic_mode:
                    values = shared_values if shared_values is not None else self.models.values(batch)
            # With single_pass the KL's weight in the advantages is 0, so they need no old log-probs.
            kl_tokens = kl_estimate(old_logps, ref_logps, o.kl_estimator) * mask if old_logps is not None \
                else torch.zeros_like(mask)
            advantages, returns = self.advantages(scores, kl_tokens, mask, values)
        update_started = time.perf_counter()
        update, pass_logps = self.update(batch, old_logps, ref_logps, advantages, values, returns, texts.prompts)
        update_s = time.perf_counter() - update_started
        if pass_logps is not None:
            kl_tokens = kl_estimate(pass_logps, ref_logps, o.kl_estimator) * mask

        lengths = mask.sum(1)
        sequence_kl = (kl_tokens.sum(1)).mean()
        local = {
            "reward_mean": raw.mean().item(), "reward_sq": (raw ** 2).mean().item(),
            "score_mean": scores.mean().item(), "kl": adv.masked_mean(kl_tokens, mask).item(),
            "kl_sequence": sequence_kl.item(), "response_length": lengths.mean().item(),
            "advantage_mean": adv.masked_mean(advantages, mask).item(), "rollout_s": rollout_s, "score_s": score_s,
            "update_s": update_s, **update,
        }
        if returns is not None:
            local["explained_variance"] = explained_variance(values, returns, mask)
        for name, value in self.reward.last_means.items():
            local[f"reward/{name}"] = value
        metrics = self._mean_over_workers(local)
        metrics["reward_std"] = math.sqrt(max(metrics.pop("reward_sq") - metrics["reward_mean"] ** 2, 0.0))
        metrics["kl_coef"] = self.kl.value
        metrics["learning_rate"] = self.optimizer_steps.learning_rate
        self.kl.update(metrics["kl_sequence"], len(batch) * self.world_size)
        self.step += 1
        if self.rank == 0 and (self.step % o.sample_every == 0 or self.step == 1):
            self._write_samples(texts, raw)
        return metrics

    def _mean_over_workers(self, values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        tensor = all_reduce_mean(torch.tensor([values[k] for k in keys], dtype=torch.float64))
        return dict(zip(keys, tensor.tolist()))

    # ------------------------------------------------------------ outputs, checkpoints
    def _append(self, name: str, record: dict) -> None:
        path = self.run_dir / name
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=float) + "\n")

    def _write_samples(self, texts: RolloutTexts, raw: torch.Tensor) -> None:
        for i in range(min(self.options.num_samples_logged, len(texts.responses))):
            self._append(SAMPLES_FILE, {"step": self.step, "prompt": texts.prompts[i], "response": texts.responses[i],
                                        "reward": raw[i].item()})

    def _trim_outputs(self) -> None:
        """After a resume, drop records of steps past the checkpoint (the stopped run's tail), so
        every step appears once and the curves continue without a jump."""
        for name in (METRICS_FILE, SAMPLES_FILE):
            path = self.run_dir / name
            if self.rank != 0 or not path.exists():
                continue
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            tmp.replace(path)

    def state(self) -> dict:
        return {"global_step": self.step, "prompt_position": self.cursor.position, "kl_controller": self.kl.state_dict(),
                "reward_moments": self.moments.state_dict(), "advantage": self.options.advantage}

    def save_checkpoint(self) -> Path:
        """Checkpoint directory `hf/rank0/checkpoint-<step>/checkpoint/` (the layout the launcher's resume
        looks for: trainer_state.json with global_step). Every rank saves its own cursor position."""
        from schemas.dataset_io import write_json

        root = self.run_dir / "hf" / f"rank{self.rank}" / f"checkpoint-{self.step}"
        target = root / "checkpoint"
        target.mkdir(parents=True, exist_ok=True)
        write_json(self.state(), target / f"rl_state_rank{self.rank}.json")
        self.optimizer_steps.save(target, self.rank)  # a collective under DeepSpeed: every rank calls it
        if self.rank == 0:
            weights = {name: {k: p.detach().cpu() for k, p in m.named_parameters() if p.requires_grad}
                       for name, m in self.models.trainable_modules().items()}
            torch.save(weights, target / WEIGHTS_FILE)
            write_json(self.state(), target / STATE_FILE)
            write_json({"global_step": self.step}, target / "trainer_state.json")
        return root

    def load_checkpoint(self, directory: str | Path) -> None:
        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        rank_state = directory / f"rl_state_rank{self.rank}.json"
        if rank_state.exists():  # written by rank 0 only when Ray merged just its files
            state = {**state, **json.loads(rank_state.read_text(encoding="utf-8"))}
        weights = torch.load(directory / WEIGHTS_FILE, map_location=self.device)
        for name, module in self.models.trainable_modules().items():
            saved = weights.get(name, {})
            own = dict(module.named_parameters())
            missing = [k for k, p in own.items() if p.requires_grad and k not in saved]
            if missing:
                raise ValueError(f"checkpoint {directory} does not fit the {name} model (missing {missing[0]})")
            with torch.no_grad():
                for key, value in saved.items():
                    own[key].copy_(value)
        # After the weights: under DeepSpeed the engine restores its own copy of them (ZeRO's fp32 partitions).
        self.optimizer_steps.load(directory, self.device)
        self.weights_version += 1
        self.step = int(state["global_step"])
        self.cursor.position = int(state.get("prompt_position", self.step * self.options.prompts_per_step))
        self.kl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["reward_moments"])
        log.info("resumed at step %d (KL coefficient %.4g, %d prompts consumed)", self.step, self.kl.value,
                 self.cursor.position)

    def run(self, resume_from: str | None = None) -> dict:
        if resume_from:
            self.load_checkpoint(resume_from)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._trim_outputs()
        started = time.time()
        first, metrics = None, {}
        while self.step < self.steps:
            metrics = self.run_step()
            first = first or metrics
            if self.rank == 0:
                self._append(METRICS_FILE, {"step": self.step, "time_s": round(time.time() - started, 3), **metrics})
            if self.step % self.cfg.training.save_steps == 0 or self.step == self.steps:
                root = self.save_checkpoint()
                if self.report is not None:
                    self.report({"step": self.step, **{k: v for k, v in metrics.items() if "/" not in k}}, str(root))
        if self.rank == 0:
            self.save_model()
            self.plot()
        return {"global_step": self.step, "first_reward_mean": (first or {}).get("reward_mean"),
                "last_reward_mean": metrics.get("reward_mean"), "last_kl": metrics.get("kl"),
                "kl_coef": self.kl.value}

    def save_model(self) -> None:
        actor = self.models.actor
        path = self.run_dir / "model"
        if self.models.reward_head is not None:
            actor.save_pretrained(str(path), selected_adapters=["default"])
        else:
            actor.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    def plot(self) -> list[str]:
        from train.run_outputs import plot_series, read_metrics

        records = read_metrics(self.run_dir / METRICS_FILE)
        written = []
        for key, label in PLOTTED:
            if plot_series(records, key, self.run_dir / f"{key}.png", label):
                written.append(f"{key}.png")
        return written
