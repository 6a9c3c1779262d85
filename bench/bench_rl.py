"""raymill's RL stages vs TRL's GRPOTrainer, and where an RL step's time goes -> bench/results/rl_vs_trl.json + bench/RESULTS.md.

    .venv/bin/python bench/bench_rl.py [--rounds 2] [--steps 20] [--ppo-steps 16] [--warmup 4]

1. GRPO step time, raymill/TRL. Both sides train bench/bench_train.py's ~9.6M-parameter Llama
   (fully: the reference is a frozen copy on both) on the same prompt file
   (bench.peers.common.write_rl_prompts) against the same rule reward (train.rl.default's
   target-word share; TRL gets it as a reward function), with the settings of
   bench/peers/common.py: G completions per prompt, prompts_per_step prompts per step (one
   generation batch, one optimizer step per rollout), max_new_tokens, beta (k3 KL in the loss),
   fp32, 2 torch threads, plain HF generate. raymill: `jobs/train.py --stage grpo` (embedded Ray,
   Ray Train, one worker); TRL: bench/peers/trl_grpo_bench.py.
2. Time shares of raymill's grpo and ppo steps: rollout (generate + decode), score (reward),
   update (policy epochs) from the loop's metrics.jsonl (rollout_s, score_s, update_s); the rest of
   the step (old/reference log-probs, critic values, advantages, metrics) is not timed by the loop
   and is reported as the residual `logprob_and_other`. TRL's shares come from the peer's phase clocks.

Runs alternate raymill, TRL, raymill, TRL (then the ppo runs) so both sides see the same
machine load; each is its own process. Per run: steady state (from step `--warmup` on, from
each side's per-step clock: metrics.jsonl time_s / the peer's steps.jsonl) and end to end
(process start to exit: Ray start-up, prompt tokenization, model load, final save included).
On a shared machine read the ratios and medians, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_train_vs_trl import load1, machine, read_jsonl, run_process, step_records, versions  # noqa: E402
from bench.peers.common import (  # noqa: E402
    RL_BETA, RL_LEARNING_RATE, RL_MAX_NEW_TOKENS, RL_NUM_GENERATIONS, RL_PROMPTS_PER_STEP, TORCH_THREADS,
    add_output_arguments, bench_model_path, write_rl_prompts,
)

PY = sys.executable
# Phase keys per side: raymill's loop writes these per step; the TRL peer logs its own clocks.
RAYMILL_PHASES = ("rollout_s", "score_s", "update_s")


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def steady_clock(steps: list[dict], warmup: int) -> dict:
    """Seconds per step from the record of step `warmup` to the last one (its mean and median)."""
    if len(steps) < warmup + 2:
        raise RuntimeError(f"{len(steps)} step records; the steady state needs more than warmup + 1 = {warmup + 1}")
    first, last = steps[warmup], steps[-1]
    n = last["step"] - first["step"]
    deltas = [b["time_s"] - a["time_s"] for a, b in zip(steps[warmup:], steps[warmup + 1:])]
    return {"s_per_step": (last["time_s"] - first["time_s"]) / n, "median_s_per_step": statistics.median(deltas),
            "steps_measured": n, "step_s": [round(d, 3) for d in deltas]}


def shares(phase_means: dict[str, float], step_s: float) -> dict[str, float]:
    """Each phase's share of the mean step, plus the untimed rest of the step."""
    out = {name: value / step_s for name, value in phase_means.items()}
    out["logprob_and_other"] = 1.0 - sum(out.values())
    return {k: round(v, 3) for k, v in out.items()}


def raymill_cmd(stage: str, model: Path, prompts: Path, run_dir: Path, steps: int, settings: dict) -> list[str]:
    options = [f"data_options.max_new_tokens={settings['max_new_tokens']}"]
    if stage == "grpo":
        # kl_estimator k3, KL in the loss, importance-weighted, 1 epoch x 1 minibatch: the grpo stage's defaults.
        options += [f"data_options.num_generations={settings['num_generations']}",
                    f"data_options.prompts_per_step={settings['prompts_per_step']}",
                    f"data_options.kl_coef={settings['beta']}"]
    else:
        # ppo: one sample per prompt, so as many prompts as grpo has completions (the same rollouts per
        # step); GAE with a separate critic, KL (k1) in the reward, 2 epochs x 2 minibatches (the defaults).
        options += [f"data_options.prompts_per_step={settings['prompts_per_step'] * settings['num_generations']}"]
    return [PY, "jobs/train.py", "--stage", stage, "--model", str(model), "--data", str(prompts), "--output",
            str(run_dir), "--max-steps", str(steps), f"learning_rate={settings['learning_rate']}",
            "lr_scheduler=linear", "warmup_ratio=0.0", "save_steps=100000", f"torch_threads={TORCH_THREADS}",
            "overwrite_output=true", "dtype=fp32", *options]


def run_raymill(stage: str, model: Path, prompts: Path, work: Path, tag: str, steps: int, warmup: int,
                settings: dict, env: dict) -> dict:
    run_dir = work / f"raymill-{stage}-{tag}"
    proc = run_process(raymill_cmd(stage, model, prompts, run_dir, steps, settings), work / f"raymill-{stage}-{tag}.log",
                       env)
    records = sorted(read_jsonl(run_dir / "metrics.jsonl"), key=lambda r: r["step"])
    clock = steady_clock(records, warmup)
    measured = records[warmup + 1:]  # record k holds the phases of the step that ends at its time_s
    phases = {name: mean([r[name] for r in measured]) for name in RAYMILL_PHASES}
    return {"side": "raymill", "stage": stage, "tag": tag, **proc, "steps": len(records), "steady": clock,
            "phase_means_s": {k: round(v, 4) for k, v in phases.items()},
            "shares": shares(phases, mean([r["time_s"] - p["time_s"] for p, r in zip(records[warmup:], measured)])),
            "response_length": round(mean([r["response_length"] for r in measured]), 2),
            "reward_mean": round(mean([r["reward_mean"] for r in records]), 4)}


def run_trl(model: Path, prompts: Path, work: Path, tag: str, steps: int, warmup: int, settings: dict) -> dict:
    out_dir = work / f"trl-grpo-{tag}"
    cmd = [PY, str(REPO / "bench" / "peers" / "trl_grpo_bench.py"), "--data", str(prompts), "--out", str(out_dir),
           "--model", str(model), "--steps", str(steps), "--num-generations", str(settings["num_generations"]),
           "--prompts-per-step", str(settings["prompts_per_step"]), "--max-new-tokens", str(settings["max_new_tokens"]),
           "--beta", str(settings["beta"]), "--learning-rate", str(settings["learning_rate"])]
    proc = run_process(cmd, work / f"trl-grpo-{tag}.log")
    records = step_records(read_jsonl(out_dir / "steps.jsonl"))
    clock = steady_clock(records, warmup)
    measured = records[warmup + 1:]
    generate = mean([r["bench/generate_s"] for r in measured])
    score = mean([r["bench/score_s"] for r in measured])
    # generate_and_score also holds the reference log-probs and advantages (no old log-probs: with
    # num_iterations 1 TRL takes π_old as the detached current log-probs); the update is the rest.
    step_s = mean([r["time_s"] - p["time_s"] for p, r in zip(records[warmup:], measured)])
    logprob = mean([r["bench/generate_and_score_s"] for r in measured]) - generate - score
    update = step_s - generate - score - logprob
    phases = {"rollout_s": generate, "score_s": score, "update_s": update}
    out_shares = shares(phases, step_s)  # its logprob_and_other is the reference log-prob share
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    return {"side": "trl", "stage": "grpo", "tag": tag, **proc, "steps": len(records), "steady": clock,
            "phase_means_s": {"rollout_s": round(generate, 4), "score_s": round(score, 4),
                              "logprob_s": round(logprob, 4), "update_and_other_s": round(update, 4)},
            "shares": out_shares, "response_length": round(mean([r["completions/mean_length"] for r in measured]), 2),
            "reward_mean": round(mean([r["reward"] for r in records]), 4), "peer": summary}


def e2e_s_per_step(run: dict) -> float:
    return run["wall_s"] / run["steps"]


def compare(runs: list[dict]) -> dict:
    """Per round raymill/TRL ratios of the grpo runs, then their medians (below 1: raymill is faster)."""
    mine = [r for r in runs if r["side"] == "raymill" and r["stage"] == "grpo"]
    peer = [r for r in runs if r["side"] == "trl"]
    rounds = []
    for a, b in zip(mine, peer):
        rounds.append({"steady_s_per_step_ratio": round(a["steady"]["s_per_step"] / b["steady"]["s_per_step"], 3),
                       "median_s_per_step_ratio": round(a["steady"]["median_s_per_step"]
                                                        / b["steady"]["median_s_per_step"], 3),
                       "e2e_s_per_step_ratio": round(e2e_s_per_step(a) / e2e_s_per_step(b), 3),
                       "wall_ratio": round(a["wall_s"] / b["wall_s"], 3)})
    med = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]} if rounds else {}
    return {"rounds": rounds, "median": med}


def median_shares(runs: list[dict], side: str, stage: str) -> dict:
    picked = [r["shares"] for r in runs if r["side"] == side and r["stage"] == stage]
    return {k: round(statistics.median(s[k] for s in picked), 3) for k in picked[0]} if picked else {}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"\n## {result['date']} — raymill RL vs TRL GRPOTrainer, and RL step time shares (bench/bench_rl.py)\n",
             f"Machine: {result['machine']}; load average (1 min) before {result['load_before']}, after "
             f"{result['load_after']}; {result['versions']}; {TORCH_THREADS} torch threads, fp32. GRPO on both sides: "
             f"bench model (~9.6M Llama, full finetuning, frozen reference copy), {s['prompt_rows']} embedded RL "
             f"prompts, rule reward (target-word share), G={s['num_generations']}, {s['prompts_per_step']} prompts x "
             f"G = {s['prompts_per_step'] * s['num_generations']} completions and one optimizer step per rollout, "
             f"max_new_tokens {s['max_new_tokens']}, beta {s['beta']} (k3 in the loss), lr {s['learning_rate']}, "
             f"plain HF generate. ppo (raymill only): {s['prompts_per_step'] * s['num_generations']} prompts x 1 "
             f"sample, GAE + separate critic, 2 epochs x 2 minibatches. Steady state = steps {s['warmup']}..last; "
             f"end to end = process start to exit.\n",
             "| stage | run | side | steady s/step (median) | end to end s/step | wall s | rollout / score / "
             "logprob+other / update | response tokens | load before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        sh = run["shares"]
        lines.append(f"| {run['stage']} | {run['tag']} | {run['side']} | {run['steady']['s_per_step']:.3f} "
                     f"({run['steady']['median_s_per_step']:.3f}) | {e2e_s_per_step(run):.3f} | {run['wall_s']:.1f} | "
                     f"{sh['rollout_s']:.0%} / {sh['score_s']:.0%} / {sh['logprob_and_other']:.0%} / "
                     f"{sh['update_s']:.0%} | {run['response_length']:.1f} | "
                     f"{run['load_before']}/{run['load_after']} |")
    lines.append("")
    lines.append(f"- grpo raymill/TRL per round: {result['compare']['rounds']}; median: {result['compare']['median']}")
    for name, value in result["median_shares"].items():
        lines.append(f"- {name} time shares (median over runs): {value}")
    return "\n".join(lines) + "\n"


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="raymill/TRL grpo pairs (A B A B ...)")
    parser.add_argument("--steps", type=int, default=20, help="grpo steps per run")
    parser.add_argument("--ppo-runs", type=int, default=1, dest="ppo_runs", help="raymill ppo runs, after the grpo pairs")
    parser.add_argument("--ppo-steps", type=int, default=16, dest="ppo_steps")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the steady state")
    parser.add_argument("--num-generations", type=int, default=RL_NUM_GENERATIONS, dest="num_generations")
    parser.add_argument("--prompts-per-step", type=int, default=RL_PROMPTS_PER_STEP, dest="prompts_per_step")
    parser.add_argument("--max-new-tokens", type=int, default=RL_MAX_NEW_TOKENS, dest="max_new_tokens")
    parser.add_argument("--beta", type=float, default=RL_BETA)
    parser.add_argument("--learning-rate", type=float, default=RL_LEARNING_RATE, dest="learning_rate")
    add_output_arguments(parser, "rl_vs_trl.json")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    model = bench_model_path()
    # One prompt list in two files: the same user messages under TRL's `prompt` key and raymill's `messages`.
    trl_prompts = write_rl_prompts(work / "prompts-trl.jsonl", key="prompt")
    raymill_prompts = write_rl_prompts(work / "prompts-raymill.jsonl", key="messages")
    prompt_rows = sum(1 for line in trl_prompts.read_text(encoding="utf-8").splitlines() if line.strip())
    env = {"PYTHONPATH": args.raymill_root} if args.raymill_root else {}
    settings = {"num_generations": args.num_generations, "prompts_per_step": args.prompts_per_step,
                "max_new_tokens": args.max_new_tokens, "beta": args.beta, "learning_rate": args.learning_rate,
                "warmup": args.warmup, "grpo_steps": args.steps, "ppo_steps": args.ppo_steps,
                "prompt_rows": prompt_rows, "torch_threads": TORCH_THREADS, "dtype": "fp32"}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "versions": versions(), "load_before": load1(), "work_dir": str(work),
              "settings": settings, "raymill_root": args.raymill_root or str(REPO)}
    runs = []
    plan = [("grpo", side, f"r{i + 1}") for i in range(args.rounds) for side in ("raymill", "trl")]
    plan += [("ppo", "raymill", f"r{i + 1}") for i in range(args.ppo_runs)]
    for stage, side, tag in plan:
        if side == "trl":
            run = run_trl(model, trl_prompts, work, tag, args.steps, args.warmup, settings)
        else:
            steps = args.steps if stage == "grpo" else args.ppo_steps
            run = run_raymill(stage, model, raymill_prompts, work, tag, steps, args.warmup, settings, env)
        runs.append(run)
        # Written after every run, so a run stopped by a time limit still leaves what it measured.
        write_result(Path(args.out), {**result, "runs": runs, "complete": False})
        print(json.dumps({k: run[k] for k in ("stage", "side", "tag", "wall_s", "load_before", "load_after", "shares")}
                         | {"s_per_step": round(run["steady"]["s_per_step"], 3)}), flush=True)
    result["load_after"] = load1()
    result["runs"] = runs
    result["compare"] = compare(runs)
    result["median_shares"] = {f"{side}/{stage}": median_shares(runs, side, stage)
                               for side, stage in (("raymill", "grpo"), ("trl", "grpo"), ("raymill", "ppo"))
                               if any(r["side"] == side and r["stage"] == stage for r in runs)}
    result["complete"] = True
    write_result(Path(args.out), result)
    if args.results_md:
        md = Path(args.results_md)
        with md.open("a", encoding="utf-8") as f:
            f.write(markdown(result))
    print(json.dumps({"compare": result["compare"], "median_shares": result["median_shares"]}, indent=2))


if __name__ == "__main__":
    main()
