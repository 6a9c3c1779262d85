"""A run stopped hard and resumed from its checkpoint continues exactly where it was:
the same rewards, KL and losses step for step as an uninterrupted run (the adaptive KL
coefficient, the running reward statistics and the prompt position come back from the
checkpoint; sampling randomness is a function of the step), and metrics.jsonl holds
every step once."""
from __future__ import annotations

import json

import pytest
import torch

from train.args import parse_train_config
from train.rl.default import default_prompts
from train.rl.loop import NonFiniteRLError, RLLoop
from train.rl.options import rl_options
from train.rl.prompts import tokenize_prompts


class HardStop(Exception):
    pass


def _loop(tiny_model_dir, run_dir, stage="ppo", steps=6, **options) -> RLLoop:
    torch.set_num_threads(2)
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": stage, "max_steps": steps, "save_steps": 3,
                              "learning_rate": 5e-3, "data_options": {
                                  "prompts_per_step": 4, "max_new_tokens": 6, "target_kl": 0.01,
                                  "normalize_reward": True, "reward_clip": 3.0, "critic": "shared", **options}})
    from train.model_loading import load_tokenizer

    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts(24)], load_tokenizer(cfg.model), 200)
    return RLLoop(cfg, rl_options(cfg.data.data_options, stage), prompts, run_dir, steps)


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_hard_stop_continues_the_curves(tiny_model_dir, tmp_path):
    _loop(tiny_model_dir, tmp_path / "whole").run()
    whole = _records(tmp_path / "whole")

    stopped = _loop(tiny_model_dir, tmp_path / "cut")
    original_step = stopped.run_step

    def step_then_die():
        if stopped.step == 5:  # steps 4 and 5 are logged after the step-3 checkpoint, then the process dies
            raise HardStop
        return original_step()

    stopped.run_step = step_then_die
    with pytest.raises(HardStop):
        stopped.run()
    assert [r["step"] for r in _records(tmp_path / "cut")] == [1, 2, 3, 4, 5]

    checkpoint = tmp_path / "cut" / "hf" / "rank0" / "checkpoint-3" / "checkpoint"
    resumed = _loop(tiny_model_dir, tmp_path / "cut")
    resumed.run(resume_from=str(checkpoint))
    cut = _records(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole, cut):
        for key in ("reward_mean", "kl", "loss", "kl_coef", "score_mean", "value_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert whole[-1]["kl_coef"] != whole[0]["kl_coef"]  # the adaptive controller moved, and its state came back


def test_a_raising_reward_function_names_the_function_and_the_prompt(tiny_model_dir, tmp_path):
    loop = _loop(tiny_model_dir, tmp_path, stage="grpo", reward_function=["tests.unit.test_rl_resume:picky_reward"],
                 normalize_reward=False, target_kl=None)
    with pytest.raises(ValueError, match=r"step 1: reward function tests.unit.test_rl_resume:picky_reward raised "
                                         r"KeyError: .*\(prompt: '.*river"):
        loop.run()


def picky_reward(prompts: list[str], responses: list[str]) -> list[float]:
    if any("river" in p for p in prompts):
        raise KeyError("no rivers")
    return [0.0] * len(prompts)


def nan_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("nan")] + [0.0] * (len(prompts) - 1)


def test_a_nan_reward_stops_with_the_step_and_the_prompt(tiny_model_dir, tmp_path):
    loop = _loop(tiny_model_dir, tmp_path, stage="grpo", reward_function=["tests.unit.test_rl_resume:nan_reward"],
                 normalize_reward=False, target_kl=None)
    with pytest.raises(ValueError, match=r"step 1: .*nan_reward returned nan \(prompt: "):
        loop.run()


_INF_STATE: dict = {}


def inf_on_the_second_call(prompts: list[str], responses: list[str]) -> list[float]:
    """Finite scores at step 1; at step 2 the last response gets the value in _INF_STATE["bad"]."""
    _INF_STATE["calls"] = _INF_STATE.get("calls", 0) + 1
    scores = [0.5] * len(prompts)
    if _INF_STATE["calls"] == 2:
        scores[-1] = _INF_STATE["bad"]
        _INF_STATE["prompt"] = prompts[-1]
    return scores


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_an_infinite_reward_stops_with_its_step_and_its_own_prompt(tiny_model_dir, tmp_path, bad):
    from train.rl.reward_sources import _short

    _INF_STATE.clear()
    _INF_STATE["bad"] = bad
    loop = _loop(tiny_model_dir, tmp_path, stage="grpo", normalize_reward=False, target_kl=None,
                 reward_function=["tests.unit.test_rl_resume:inf_on_the_second_call"])
    with pytest.raises(ValueError) as caught:
        loop.run()
    # The step it happened at, the function, the value, and the prompt of the bad sample (not merely the first).
    assert str(caught.value) == (f"step 2: tests.unit.test_rl_resume:inf_on_the_second_call returned {bad} "
                                 f"(prompt: {_short(_INF_STATE['prompt'])!r})")
    assert loop.step == 1  # nothing was trained on the bad step


def test_a_nan_loss_stops_with_the_step_the_prompt_and_the_last_checkpoint(tiny_model_dir, tmp_path):
    loop = _loop(tiny_model_dir, tmp_path, stage="grpo", steps=5, normalize_reward=False, target_kl=None)
    original = loop.run_step

    def poisoned():
        if loop.step == 3:  # after the step-3 checkpoint, the weights go bad
            with torch.no_grad():
                next(loop.models.actor.parameters()).fill_(float("nan"))
        return original()

    loop.run_step = poisoned
    with pytest.raises(NonFiniteRLError, match=r"non-finite at step 4 \(prompt: .*last good checkpoint is .*checkpoint-3"):
        loop.run()
