"""raymill vs TRL training throughput, side by side in one run -> bench/results/train_vs_trl.json + bench/RESULTS.md.

    .venv/bin/python bench/bench_train_vs_trl.py [--rounds 2] [--sft-steps 60] [--dpo-steps 30] [--stages sft,dpo]

The setup of issue 17: bench/bench_train.py's ~9.6M-parameter Llama, the 350 Self-Instruct
seed tasks (en + zh) as chat messages (bench/peers/common.py), fp32, 2 torch threads.
- SFT: rows packed to 1,024 tokens, batch 1, lr 1e-4, `--sft-steps` steps.
  raymill: `jobs/train.py --stage sft` (embedded Ray, Ray Train, the token cache: the whole
  data path); TRL: bench/peers/trl_sft_bench.py (SFTTrainer, packing_strategy bfd).
- DPO: 330 pairs (chosen = the task's output, rejected = the next task's), batch 4, max
  length 512, beta 0.1, sigmoid, `--dpo-steps` steps. raymill: `jobs/train.py --stage dpo`
  (full finetuning, so the reference is a frozen copy, as TRL's); TRL: bench/peers/trl_dpo_bench.py.
Runs alternate (raymill, TRL, raymill, TRL, ...) so both sides see the same machine load;
each is its own process. Reported per run: steady state (from step WARMUP_STEPS on, from the
per-step clock each side logs: raymill's metrics.jsonl, the peer's steps.jsonl) and end to
end (process start to exit, Ray start-up and tokenization included). The data files are
written fresh into a new directory, so raymill's first SFT run tokenizes into the token
cache and its later runs must read it (data_stats.json says which, and how long it took).
On a shared machine read the ratios, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers.common import (  # noqa: E402
    TORCH_THREADS, add_output_arguments, bench_model_path, write_dpo_data, write_sft_data,
)

WARMUP_STEPS = 10  # steps excluded from the steady state (allocator warm-up, Ray start-up activity)
PY = sys.executable


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_process(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run one trainer process; wall time from start to exit and the load average around it."""
    before = load1()
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}; log {log}:\n{tail}")
    return {"wall_s": round(wall, 3), "load_before": before, "load_after": load1()}


def step_records(records: list[dict]) -> list[dict]:
    """One record per optimizer step (the per-step log lines), in step order."""
    # raymill's per-step lines carry train_runtime too (include_num_input_tokens_seen); the
    # end-of-training summary line is the one with train_loss.
    by_step = {r["step"]: r for r in records if "loss" in r and "train_loss" not in r}
    return [by_step[s] for s in sorted(by_step)]


def steady(steps: list[dict], token_key: str | None) -> dict:
    """Seconds per step (and tokens/s) from step WARMUP_STEPS to the last step."""
    first, last = steps[WARMUP_STEPS], steps[-1]
    n = last["step"] - first["step"]
    seconds = last["time_s"] - first["time_s"]
    out = {"s_per_step": seconds / n, "steps_measured": n}
    if token_key:
        tokens = last[token_key] - first[token_key]
        out.update(tokens_per_s=tokens / seconds, tokens_per_step=tokens / n)
    deltas = [b["time_s"] - a["time_s"] for a, b in zip(steps[WARMUP_STEPS:], steps[WARMUP_STEPS + 1:])]
    # The median step is what a load spike from another process on a shared machine moves least.
    out["median_s_per_step"] = statistics.median(deltas)
    if token_key:
        out["median_tokens_per_s"] = out["tokens_per_step"] / out["median_s_per_step"]
    return out


def raymill_cmd(stage: str, model: Path, data: Path, run_dir: Path, steps: int, config: Path) -> list[str]:
    common = ["learning_rate=1e-4", "lr_scheduler=linear", "logging_steps=1", "save_steps=100000",
              f"torch_threads={TORCH_THREADS}", "overwrite_output=true", "dtype=fp32"]
    if stage == "sft":
        extra = ["cutoff_len=1024", "per_device_batch_size=1", "packing=true"]
    else:
        extra = ["cutoff_len=512", "per_device_batch_size=4"]
    return [PY, "jobs/train.py", "--config", str(config), "--stage", stage, "--model", str(model), "--data", str(data),
            "--output", str(run_dir), "--max-steps", str(steps), *common, *extra]


def run_raymill(stage: str, model: Path, data: Path, work: Path, tag: str, steps: int, env: dict,
                dpo_padding_free: str = "auto") -> dict:
    run_dir = work / f"raymill-{stage}-{tag}"
    config = work / f"raymill-{stage}.yaml"
    # DPO: no held-out pairs, so both sides train on all the pairs and evaluate nothing.
    options = ("data_options:\n  eval_fraction: 0.0\n  beta: 0.1\n  loss_type: sigmoid\n"
               f"  padding_free: '{dpo_padding_free}'\n") if stage == "dpo" else "{}\n"
    config.write_text(options, encoding="utf-8")
    proc = run_process(raymill_cmd(stage, model, data, run_dir, steps, config), work / f"raymill-{stage}-{tag}.log", env)
    steps_ = step_records(read_jsonl(run_dir / "metrics.jsonl"))
    stats = json.loads((run_dir / "data_stats.json").read_text(encoding="utf-8"))
    out = {"side": "raymill", "tag": tag, **proc, "steps": len(steps_),
           "steady": steady(steps_, "num_input_tokens_seen" if stage == "sft" else None),
           "first_loss": steps_[0]["loss"]}
    if stage == "sft":
        out["tokens"] = steps_[-1]["num_input_tokens_seen"]
        out["data"] = {k: stats.get(k) for k in ("tokenized_cache", "cache_reused", "tokenize_seconds", "sequences",
                                                 "tokens", "records")}
    else:
        out["data"] = {k: stats.get(k) for k in ("rows_in", "kept", "train_pairs")}
        # input_ids positions a step computes: 2B x longest when padded, the real tokens when packed.
        out["positions_per_step"] = steps_[-1]["num_input_tokens_seen"] / steps_[-1]["step"]
    return out


def run_trl(stage: str, model: Path, data: Path, work: Path, tag: str, steps: int) -> dict:
    out_dir = work / f"trl-{stage}-{tag}"
    script = REPO / "bench" / "peers" / f"trl_{stage}_bench.py"
    cmd = [PY, str(script), "--data", str(data), "--out", str(out_dir), "--model", str(model), "--steps", str(steps)]
    proc = run_process(cmd, work / f"trl-{stage}-{tag}.log")
    steps_ = step_records(read_jsonl(out_dir / "steps.jsonl"))
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    out = {"side": "trl", "tag": tag, **proc, "steps": len(steps_),
           "steady": steady(steps_, "num_tokens" if stage == "sft" else None), "first_loss": steps_[0]["loss"],
           "peer": summary}
    if stage == "sft":
        out["tokens"] = steps_[-1]["num_tokens"]
    else:
        out["positions_per_step"] = summary.get("positions_per_step")
    return out


def end_to_end(run: dict, stage: str) -> dict:
    if stage == "sft":
        return {"tokens_per_s": run["tokens"] / run["wall_s"], "wall_s": run["wall_s"]}
    return {"s_per_step": run["wall_s"] / run["steps"], "wall_s": run["wall_s"]}


def compare(stage: str, runs: list[dict]) -> dict:
    """Per round raymill/TRL ratios (steady state and end to end), then their medians."""
    rounds = []
    mine = [r for r in runs if r["side"] == "raymill"]
    peer = [r for r in runs if r["side"] == "trl"]
    for a, b in zip(mine, peer):
        if stage == "sft":
            row = {"steady_tokens_per_s_ratio": a["steady"]["tokens_per_s"] / b["steady"]["tokens_per_s"],
                   "median_step_tokens_per_s_ratio": (a["steady"]["tokens_per_step"] / a["steady"]["median_s_per_step"])
                   / (b["steady"]["tokens_per_step"] / b["steady"]["median_s_per_step"]),
                   "e2e_tokens_per_s_ratio": end_to_end(a, stage)["tokens_per_s"] / end_to_end(b, stage)["tokens_per_s"]}
        else:
            row = {"steady_s_per_step_ratio": a["steady"]["s_per_step"] / b["steady"]["s_per_step"],
                   "median_s_per_step_ratio": a["steady"]["median_s_per_step"] / b["steady"]["median_s_per_step"],
                   "e2e_s_per_step_ratio": end_to_end(a, stage)["s_per_step"] / end_to_end(b, stage)["s_per_step"]}
        rounds.append({k: round(v, 3) for k, v in row.items()})
    med = {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]} if rounds else {}
    return {"rounds": rounds, "median": med}


def versions() -> dict:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}"


def markdown_rows(result: dict) -> str:
    lines = [f"\n## {result['date']} — raymill vs TRL training throughput (bench/bench_train_vs_trl.py)\n",
             f"Machine: {result['machine']}; load average (1 min) before {result['load_before']}, "
             f"after {result['load_after']}; {result['versions']}; {TORCH_THREADS} torch threads; "
             f"steady state = steps {WARMUP_STEPS}..last; end to end = process start to exit"
             f"{'; raymill dpo padding_free=' + result['dpo_padding_free'] if 'dpo' in result else ''}; positions/step ="
             " input_ids positions a DPO step computes (2B x longest padded, real tokens packed).\n",
             "| stage | run | side | steady state | end to end | wall s | load before/after |",
             "|---|---|---|---|---|---|---|"]
    for stage in ("sft", "dpo"):
        for run in result.get(stage, {}).get("runs", []):
            e2e = end_to_end(run, stage)
            if stage == "sft":
                st = (f"{run['steady']['tokens_per_s']:.0f} tok/s "
                      f"(median step {run['steady']['tokens_per_step'] / run['steady']['median_s_per_step']:.0f})")
                ee = f"{e2e['tokens_per_s']:.0f} tok/s"
            else:
                st = f"{run['steady']['s_per_step']:.3f} s/step (median {run['steady']['median_s_per_step']:.3f})"
                ee = f"{e2e['s_per_step']:.3f} s/step"
            note = ""
            if stage == "dpo" and run.get("positions_per_step"):
                note = f" ({run['positions_per_step']:.0f} positions/step)"
            if run["side"] == "raymill" and stage == "sft":
                d = run["data"]
                note = " (cache reused)" if d.get("cache_reused") else f" (tokenized {d.get('tokenize_seconds')} s)"
            lines.append(f"| {stage} | {run['tag']} | {run['side']}{note} | {st} | {ee} | {run['wall_s']:.1f} | "
                         f"{run['load_before']}/{run['load_after']} |")
    lines.append("")
    for stage in ("sft", "dpo"):
        if stage in result:
            lines.append(f"- {stage} raymill/TRL, median over rounds: {result[stage]['compare']['median']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="raymill/TRL pairs per stage (A B A B ...)")
    parser.add_argument("--sft-steps", type=int, default=60, dest="sft_steps")
    parser.add_argument("--dpo-steps", type=int, default=30, dest="dpo_steps")
    parser.add_argument("--stages", default="sft,dpo")
    parser.add_argument("--dpo-padding-free", default="auto", choices=["auto", "true", "false"], dest="dpo_padding_free",
                        help="raymill's data_options.padding_free (false: the padded batches TRL computes)")
    add_output_arguments(parser, "train_vs_trl.json")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    work = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    model = bench_model_path()
    env = {"PYTHONPATH": args.raymill_root} if args.raymill_root else {}
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "load_before": load1(), "work_dir": str(work), "warmup_steps": WARMUP_STEPS,
              "raymill_root": args.raymill_root or str(REPO), "dpo_padding_free": args.dpo_padding_free}
    for stage in stages:
        data = write_sft_data(work / "sft.jsonl") if stage == "sft" else write_dpo_data(work / "dpo.jsonl")
        steps = args.sft_steps if stage == "sft" else args.dpo_steps
        runs = []
        for i in range(args.rounds):
            for side in ("raymill", "trl"):
                tag = f"r{i + 1}"
                run = (run_raymill(stage, model, data, work, tag, steps, env, args.dpo_padding_free) if side == "raymill"
                       else run_trl(stage, model, data, work, tag, steps))
                runs.append(run)
                print(json.dumps({"stage": stage, "side": side, "tag": tag, "wall_s": run["wall_s"],
                                  "steady": run["steady"], "load": [run["load_before"], run["load_after"]]}), flush=True)
        result[stage] = {"runs": runs, "compare": compare(stage, runs)}
    result["load_after"] = load1()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.results_md:
        md = Path(args.results_md)
        if not md.exists():
            md.write_text("# Benchmark results\n\nTables appended by the bench scripts, newest last.\n", encoding="utf-8")
        with md.open("a", encoding="utf-8") as f:
            f.write(markdown_rows(result))
    print(json.dumps({s: result[s]["compare"] for s in stages}, indent=2))


if __name__ == "__main__":
    main()
