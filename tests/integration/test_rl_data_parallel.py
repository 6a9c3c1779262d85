"""Data-parallel RL: 2 Ray Train workers (gloo process group, each on half the batch) take the
same first update as 1 worker on the whole batch.

The rollout is fixed (the same token ids for both runs, built here with a seeded RNG), because
sampling draws differ by rank by design. Everything after it is the production path: the
workers run `train.rl.stage.train_loop` (run_in_ray_worker -> run_rl -> RLLoop) under a
TorchTrainer, score with a reward function, compute advantages (PPO: GAE whitened over the
batch; GRPO: group baselines), take one AdamW step on all-reduced gradients and save the
checkpoint. The two halves have very different response lengths (long on rank 0, short on
rank 1), so a token mean over each worker's own tokens would give rank 1's tokens about
twice the weight and the gradients would differ by tens of percent; see
RLLoop._tokens_per_worker.

Tolerances (float32, different reduction orders and thread counts):
- gradients of the update (after the all-reduce and clipping): relative L2 error < 1e-4
  (observed about 1e-7; with per-worker token means it is 0.2 to 0.3 for ppo);
- the AdamW step of the backbone weights: relative L2 error of the update < 1e-3, and every
  weight within 2e-2 × lr. Adam's first step is lr · g / (|g| + eps), about lr · sign(g):
  float noise matters only for gradient entries near zero, where it reached 5.8e-3 × lr
  (ppo); a wrong weighting flips signs and gives differences up to 2 × lr. The step itself moves the actor by about lr, which is checked
  too, so equality is not the trivial "nothing moved".
One optimizer step per RL step (ppo_epochs = num_minibatches = 1): with minibatches, each
worker draws its minibatches from its own rows, so their union is a different subset than
one worker's minibatch of the whole batch (the same objective, not the same step).
"""
from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Iterator

import pytest
import torch

from train.args import parse_train_config
from train.rl.default import default_prompts
from train.rl.loop import RLLoop
from train.rl.prompts import tokenize_prompts

pytestmark = pytest.mark.slow

REWARD = "tests.integration.test_rl_data_parallel:letter_e_reward"
LEARNING_RATE = 1e-3
MAX_NEW_TOKENS = 8
GRADIENTS_FILE = "first_update_gradients.pt"


def letter_e_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Any deterministic text score serves; this one varies between the random responses."""
    return [response.count("e") / (len(response) + 1) for response in responses]


# ---------------------------------------------------------------- the fixed rollout
def fixed_rollout_spec(tokenizer, prompt_rows: list[dict], num_generations: int, seed: int = 0) -> dict:
    """G responses to each prompt as plain lists (picklable into the Ray workers). The first
    half of the prompts (rank 0's) gets long responses, the second half (rank 1's) short ones."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    prompt_ids, responses_ids, prompt_texts, prompt_messages, responses = [], [], [], [], []
    for index, row in enumerate(prompt_rows):
        short = index >= len(prompt_rows) // 2
        for _ in range(num_generations):
            length = rng.randint(1, 3) if short else rng.randint(5, MAX_NEW_TOKENS)
            content = [rng.choice(ordinary) for _ in range(length)]
            # A response shorter than the budget ends with its EOS (a real token of the mask), then padding.
            ids = content if length == MAX_NEW_TOKENS else content + [tokenizer.eos_token_id]
            ids = ids + [tokenizer.pad_token_id] * (MAX_NEW_TOKENS - len(ids))
            prompt_ids.append(row["prompt_ids"])
            responses_ids.append(ids)
            prompt_texts.append(row["prompt_text"])
            prompt_messages.append(row.get("prompt_messages"))
            responses.append(tokenizer.decode(content, skip_special_tokens=True))
    return {"prompt_ids": prompt_ids, "response_ids": responses_ids, "prompt_texts": prompt_texts,
            "prompt_messages": prompt_messages, "responses": responses, "num_generations": num_generations}


@contextlib.contextmanager
def fixed_rollout(spec: dict) -> Iterator[None]:
    """RLLoop takes its rank's contiguous share of the fixed rollout instead of sampling, and
    rank 0 saves the gradients of its update (the all-reduced, clipped ones the step used)."""
    from train.rl.reward_sources import RolloutTexts
    from train.rl.rollout import RolloutBatch, left_pad, response_mask

    original_rollout, original_update = RLLoop.rollout, RLLoop.update

    def rollout(self: RLLoop, prompt_rows: list[dict]):
        share = len(spec["prompt_ids"]) // self.world_size
        rows = range(self.rank * share, (self.rank + 1) * share)
        prompt_ids, prompt_mask = left_pad([spec["prompt_ids"][i] for i in rows], self.tokenizer.pad_token_id)
        response_ids = torch.tensor([spec["response_ids"][i] for i in rows], dtype=torch.long)
        batch = RolloutBatch(prompt_ids, prompt_mask, response_ids, response_mask(response_ids, self.eos_ids),
                             prompt_index=[i // spec["num_generations"] for i in range(share)])
        messages = [spec["prompt_messages"][i] for i in rows]
        texts = RolloutTexts(prompts=[spec["prompt_texts"][i] for i in rows],
                             prompt_messages=[json.loads(m) if m else None for m in messages],
                             responses=[spec["responses"][i] for i in rows])
        return batch, texts

    def update(self: RLLoop, *args, **kwargs):
        metrics = original_update(self, *args, **kwargs)
        if self.rank == 0 and self.step == 0 and not self.cfg.launch.deepspeed:  # ZeRO keeps no p.grad
            gradients = {f"{module}.{name}": p.grad.detach().clone()
                         for module, m in self.models.trainable_modules().items()
                         for name, p in m.named_parameters() if p.grad is not None}
            torch.save(gradients, self.run_dir / GRADIENTS_FILE)
        return metrics

    RLLoop.rollout, RLLoop.update = rollout, update
    try:
        yield
    finally:
        RLLoop.rollout, RLLoop.update = original_rollout, original_update


def fixed_rollout_train_loop(loop_config: dict) -> None:
    """The RL stages' Ray Train worker body, with the rollout fixed."""
    from train.rl.stage import train_loop

    with fixed_rollout(loop_config["fixed_rollout"]):
        train_loop(loop_config)


# ---------------------------------------------------------------- the two runs
def _config(tiny_model_dir, stage: str, prompts_per_worker: int, options: dict, run_dir: Path, workers: int,
            deepspeed: str | None = None):
    return parse_train_config({
        "model": str(tiny_model_dir), "stage": stage, "output": str(run_dir), "num_workers": workers,
        **({"deepspeed": deepspeed} if deepspeed else {}),
        "max_steps": 1, "save_steps": 1, "learning_rate": LEARNING_RATE, "lr_scheduler": "constant",
        "warmup_ratio": 0.0, "cpus_per_worker": 0.5,
        "data_options": {"prompts_per_step": prompts_per_worker, "max_new_tokens": MAX_NEW_TOKENS,
                         "ppo_epochs": 1, "num_minibatches": 1, "reward_function": [REWARD], **options}})


def _one_worker(tiny_model_dir, stage, prompts, spec, options, run_dir: Path) -> Path:
    from train.rl.stage import run_rl

    torch.set_num_threads(2)
    cfg = _config(tiny_model_dir, stage, len(prompts), options, run_dir, workers=1)
    with fixed_rollout(spec):
        run_rl(cfg, lambda: prompts, run_dir, max_steps=1)
    return run_dir


def _two_ray_workers(ray_session, tiny_model_dir, stage, prompts, spec, options, run_dir: Path,
                     deepspeed: str | None = None) -> Path:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.launcher import worker_resources

    cfg = _config(tiny_model_dir, stage, len(prompts) // 2, options, run_dir, workers=2, deepspeed=deepspeed)
    run_dir.mkdir(parents=True)
    trainer = TorchTrainer(
        train_loop_per_worker=fixed_rollout_train_loop,
        train_loop_config={"train": cfg.to_dict(), "max_steps": 1, "run_dir": str(run_dir), "resume_checkpoint": None,
                           "fixed_rollout": spec},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker=worker_resources(cfg)),
        run_config=RunConfig(name="rl_dp", storage_path=str(run_dir / "ray")),
        datasets={"train": ray_session.data.from_items(prompts)},
    )
    trainer.fit()
    return run_dir


def _saved(run_dir: Path) -> tuple[dict, dict]:
    """(weights after the first update by module, gradients of that update)."""
    checkpoint = run_dir / "hf" / "rank0" / "checkpoint-1" / "checkpoint"
    weights = torch.load(checkpoint / "trainable.pt")
    flat = {f"{module}.{name}": t for module, tensors in weights.items() for name, t in tensors.items()}
    return flat, torch.load(run_dir / GRADIENTS_FILE)


CASES = {
    # GAE with a separate critic: token means in the policy, value and entropy terms; advantages whitened globally.
    "ppo": (8, {"entropy_coef": 0.01}),
    # Group baselines on each worker (a prompt's G samples stay together), the k3 KL in the loss.
    "grpo": (2, {"num_generations": 4}),
}


@pytest.mark.parametrize("stage", sorted(CASES))
def test_two_workers_take_the_first_update_of_one_worker(ray_session, tiny_model_dir, tmp_path, stage):

    from train.model_loading import load_tokenizer

    prompts_per_worker, options = CASES[stage]
    tokenizer = load_tokenizer(_config(tiny_model_dir, stage, 1, options, tmp_path, 1).model)
    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts(2 * prompts_per_worker, seed=3)],
                                  tokenizer, 200)
    spec = fixed_rollout_spec(tokenizer, prompts, options.get("num_generations", 1))
    single_weights, single_gradients = _saved(_one_worker(tiny_model_dir, stage, prompts, spec, options,
                                                          tmp_path / "one"))
    dual_weights, dual_gradients = _saved(_two_ray_workers(ray_session, tiny_model_dir, stage, prompts, spec,
                                                           options, tmp_path / "two"))

    assert sorted(dual_gradients) == sorted(single_gradients)
    g1 = torch.cat([single_gradients[k].flatten() for k in sorted(single_gradients)])
    g2 = torch.cat([dual_gradients[k].flatten() for k in sorted(single_gradients)])
    gradient_error = ((g2 - g1).norm() / g1.norm()).item()

    assert sorted(dual_weights) == sorted(single_weights)
    weight_error, update_error, moved = _first_update_errors(tiny_model_dir, single_weights, dual_weights)
    print(f"{stage}: gradient relative error {gradient_error:.2e}, update relative error {update_error:.2e}, "
          f"max weight difference {weight_error / LEARNING_RATE:.2e} x lr, moved up to {moved / LEARNING_RATE:.2f} x lr")
    assert g1.norm() > 0
    assert moved > 0.5 * LEARNING_RATE, "the first update did not move the actor: nothing was compared"
    assert gradient_error < 1e-4, f"2 workers' gradient differs from 1 worker's by {gradient_error:.2e} (relative)"
    assert update_error < 1e-3, f"2 workers' update differs from 1 worker's by {update_error:.2e} (relative)"
    assert weight_error < 2e-2 * LEARNING_RATE, f"weights differ by up to {weight_error:.2e}"


def _first_update_errors(tiny_model_dir, reference: dict, other: dict) -> tuple[float, float, float]:
    """(largest weight difference, relative difference of the first update, largest weight move in
    `reference`): the update of every backbone weight (actor, and the separate critic of ppo)
    measured from the saved tiny model."""
    from safetensors.torch import load_file

    weight_error = max((other[k] - reference[k]).abs().max().item() for k in reference)
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    start = {k: initial[k.split(".", 1)[1]] for k in reference
             if k.split(".", 1)[0] in ("actor", "critic") and k.split(".", 1)[1] in initial}
    step1 = torch.cat([(reference[k] - start[k]).flatten() for k in sorted(start)])
    step2 = torch.cat([(other[k] - start[k]).flatten() for k in sorted(start)])
    return weight_error, ((step2 - step1).norm() / step1.norm()).item(), step1.abs().max().item()


@pytest.mark.parametrize("stage", sorted(CASES))
def test_two_zero2_workers_take_the_first_update_of_one_plain_worker(ray_session, tiny_model_dir, tmp_path, stage):
    """`--deepspeed zero2`: DeepSpeed's engine reduce-scatters and averages the gradients instead of
    the loop's all-reduce, and each worker steps only its partition of AdamW's state; the weights
    after the first update match one plain worker's (tolerances as above). The gradients
    themselves stay inside the engine's partitions, so only the weights are compared."""

    from train.model_loading import load_tokenizer

    prompts_per_worker, options = CASES[stage]
    tokenizer = load_tokenizer(_config(tiny_model_dir, stage, 1, options, tmp_path, 1).model)
    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts(2 * prompts_per_worker, seed=3)],
                                  tokenizer, 200)
    spec = fixed_rollout_spec(tokenizer, prompts, options.get("num_generations", 1))
    single_weights, _ = _saved(_one_worker(tiny_model_dir, stage, prompts, spec, options, tmp_path / "one"))
    zero_dir = _two_ray_workers(ray_session, tiny_model_dir, stage, prompts, spec, {**options}, tmp_path / "zero2",
                                deepspeed="zero2")
    checkpoint = zero_dir / "hf" / "rank0" / "checkpoint-1" / "checkpoint"
    flat = torch.load(checkpoint / "trainable.pt")
    zero_weights = {f"{module}.{name}": t for module, tensors in flat.items() for name, t in tensors.items()}
    assert sorted(zero_weights) == sorted(single_weights)
    for rank in (0, 1):  # each worker wrote its own ZeRO partition of the optimizer state
        assert (zero_dir / "hf" / f"rank{rank}" / "checkpoint-1" / "checkpoint" / "deepspeed"
                / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file()
    weight_error, update_error, moved = _first_update_errors(tiny_model_dir, single_weights, zero_weights)
    print(f"{stage} zero2: update relative error {update_error:.2e}, max weight difference "
          f"{weight_error / LEARNING_RATE:.2e} x lr")
    assert moved > 0.5 * LEARNING_RATE
    assert update_error < 1e-3, f"2 ZeRO-2 workers' update differs from 1 worker's by {update_error:.2e} (relative)"
    assert weight_error < 2e-2 * LEARNING_RATE, f"weights differ by up to {weight_error:.2e}"
