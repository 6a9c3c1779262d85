"""LLaMA-Factory SFT on the side-by-side setup of issue 17 -> bench/results/llamafactory_sft.json (+ bench/RESULTS.md).

    .venv/bin/python bench/peers/llamafactory_sft_bench.py [--steps 60] [--venv /tmp/raymill-llamafactory-venv]

LLaMA-Factory runs in its own venv outside the repo (built here on first use with
`pip install llamafactory`; it resolves its own torch, torchvision and torchaudio, so it
cannot share raymill's torch 2.13.0). Same model (bench/bench_train.py's ~9.6M Llama),
same conversations (bench/peers/common.py: write_sft_data, registered as a sharegpt-style
`messages` dataset in a dataset_info.json), cutoff 1024, packing with neat_packing (rows
packed by LLaMA-Factory's greedy knapsack, one block-diagonal attention mask per row),
batch 1, lr 1e-4, linear schedule, fp32, no gradient checkpointing (LLaMA-Factory turns it
on unless `disable_gradient_checkpointing`), sdpa attention, 2 torch threads, full
finetuning, the `chatml` template, one run each of:

- `cli`: `llamafactory-cli train CONFIG.yaml`, untouched: end to end is process start to
  exit; its trainer_log.jsonl gives a step clock with whole-second resolution only.
- `clock`: the same YAML through `llamafactory.train.tuner.run_exp` (what the CLI's
  `train` command calls) with one extra TrainerCallback that keeps the per-step clock of
  bench/peers/common.py (the TRL peer's) and a forward pre-hook that counts each step's
  non-pad input tokens (LLaMA-Factory pads every packed row to cutoff_len + 1).

Steady state is steps 10..last from that clock, computed as bench/bench_train_vs_trl.py does.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = Path("/tmp/raymill-llamafactory-venv")
DATASET = "raymill_seed_sft"
TORCH_THREADS = 2  # bench/peers/common.py's TORCH_THREADS (the child must not import raymill)


# ---------------------------------------------------------------- child: runs in LLaMA-Factory's venv
def child_main(config_path: str, clock_path: str) -> None:
    """run_exp on the YAML with a step clock and a token counter (LLaMA-Factory's venv)."""
    import torch
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    torch.set_num_threads(TORCH_THREADS)
    import yaml

    args = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    out = Path(clock_path)
    out.unlink(missing_ok=True)

    class StepClock(TrainerCallback):
        """The TRL peer's clock (one JSON line per log event), plus cumulative non-pad tokens."""

        def __init__(self):
            self.started = time.time()
            self.tokens = 0
            self.pad_id = None
            self.forward_rows = 0

        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
            tok = processing_class or kwargs.get("tokenizer")
            self.pad_id = getattr(tok, "pad_token_id", None)

            def count(module, a, kw):
                ids = kw.get("input_ids") if kw.get("input_ids") is not None else (a[0] if a else None)
                if ids is not None and module.training:
                    self.tokens += int((ids != self.pad_id).sum()) if self.pad_id is not None else ids.numel()
                    self.forward_rows += int(ids.shape[0])

            model.register_forward_pre_hook(count, with_kwargs=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            record = {"step": state.global_step, "time_s": round(time.time() - self.started, 3),
                      "num_tokens": self.tokens, "forward_rows": self.forward_rows}
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    run_exp(args, callbacks=[StepClock()])


def child_versions() -> None:
    import importlib.metadata as md

    import torch

    out = {"torch": torch.__version__, "torch_threads_default": torch.get_num_threads()}
    for name in ("llamafactory", "transformers", "datasets", "accelerate", "peft", "trl", "torchaudio", "torchvision"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    print(json.dumps(out))


# ---------------------------------------------------------------- parent: raymill's venv
def ensure_venv(venv: Path, log: Path) -> float:
    """Build LLaMA-Factory's venv on first use; seconds it took (0 when it was there)."""
    if (venv / "bin" / "llamafactory-cli").exists():
        return 0.0
    start = time.perf_counter()
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    with log.open("w", encoding="utf-8") as f:
        subprocess.run([str(venv / "bin" / "pip"), "install", "llamafactory"], check=True, stdout=f,
                       stderr=subprocess.STDOUT)
    return round(time.perf_counter() - start, 1)


def write_dataset(work: Path) -> Path:
    from bench.peers.common import write_sft_data

    data_dir = work / "data"
    write_sft_data(data_dir / "sft.jsonl")
    # LLaMA-Factory's sharegpt formatting with OpenAI-style messages (role/content tags).
    info = {DATASET: {"file_name": "sft.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant", "system_tag": "system"}}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return data_dir


def write_config(path: Path, model: Path, data_dir: Path, out_dir: Path, steps: int, cutoff: int) -> Path:
    import yaml

    config = {
        "model_name_or_path": str(model), "flash_attn": "sdpa",
        "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": DATASET, "dataset_dir": str(data_dir), "template": "chatml", "cutoff_len": cutoff,
        "packing": True, "neat_packing": True, "overwrite_cache": True, "train_on_prompt": False,
        "output_dir": str(out_dir), "overwrite_output_dir": True, "logging_steps": 1, "save_strategy": "no",
        "plot_loss": False, "report_to": "none", "disable_tqdm": True,
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 1.0e-4,
        "lr_scheduler_type": "linear", "warmup_steps": 0, "max_steps": steps, "seed": 42,
        "bf16": False, "fp16": False, "disable_gradient_checkpointing": True, "optim": "adamw_torch",
        "dataloader_num_workers": 0, "use_cpu": True,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_timed(cmd: list[str], log: Path, env: dict) -> dict:
    from bench.bench_train_vs_trl import load1

    before = load1()
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, cwd=str(log.parent), stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}; log {log}:\n"
                           + log.read_text(encoding="utf-8", errors="replace")[-4000:])
    return {"wall_s": round(wall, 3), "load_before": before, "load_after": load1()}


def trainer_log_steady(path: Path, warmup: int) -> dict | None:
    """Steady state from LLaMA-Factory's own trainer_log.jsonl (elapsed_time is H:MM:SS)."""
    from bench.bench_train_vs_trl import read_jsonl

    rows = [r for r in read_jsonl(path) if "elapsed_time" in r and "current_steps" in r]
    if len(rows) <= warmup:
        return None

    def seconds(text: str) -> int:
        parts = [int(p) for p in text.split(":")]
        total = 0
        for p in parts:
            total = total * 60 + p
        return total

    first, last = rows[warmup], rows[-1]
    n = last["current_steps"] - first["current_steps"]
    return {"s_per_step": (seconds(last["elapsed_time"]) - seconds(first["elapsed_time"])) / n,
            "steps_measured": n, "resolution_s": 1}


def packed_rows(log: Path) -> dict:
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"dropped_lengthy_examples": text.count("Dropped lengthy example")}


def markdown_section(result: dict, label_masks: dict | None = None) -> str:
    v = result["versions"]["llamafactory_venv"]
    lines = [f"\n## LLaMA-Factory SFT peer ({result['date'][:16].replace('T', ' ')} UTC, `bench/peers/llamafactory_sft_bench.py`)\n",
             (f"Machine: {result['machine']}; LLaMA-Factory {v.get('llamafactory')} in its own venv: torch {v.get('torch')}, "
             f"transformers {v.get('transformers')}, datasets {v.get('datasets')}, torchaudio {v.get('torchaudio')} "
             f"(raymill's venv: torch {result['versions']['raymill_venv']['torch']}, transformers "
             f"{result['versions']['raymill_venv']['transformers']}). Load average before/after: "
             f"{[round(x, 2) for x in result['loadavg_before']]} / {[round(x, 2) for x in result['loadavg_after']]} "
             f"(shared 2-core machine). Setup: bench model, the seed tasks as chat messages (sharegpt `messages` in a "
             f"dataset_info.json), template chatml, cutoff {result['setup']['cutoff_len']}, packing + neat_packing, batch 1, "
             f"lr 1e-4 linear, fp32, no gradient checkpointing, sdpa, {result['setup']['torch_threads']} torch threads, "
             f"{result['setup']['steps']} steps, full finetuning; steady state = steps {result['warmup_steps']}..last, "
             f"end to end = process start to exit.\n"),
             "| run | steady state | end to end | tokens/step | wall s | first loss | load before/after |",
             "|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        st = run.get("steady")
        st_text = (f"{st['tokens_per_s']:.0f} tok/s (median step {st['median_tokens_per_s']:.0f}; "
                   f"{st['s_per_step']:.3f} s/step)" if st else
                   (f"{run['trainer_log_steady']['s_per_step']:.2f} s/step (trainer_log, 1 s resolution)"
                    if run.get("trainer_log_steady") else "-"))
        e2e = run.get("end_to_end")
        lines.append(f"| {run['run']} | {st_text} | {e2e['tokens_per_s']:.0f} tok/s | "
                     f"{st['tokens_per_step']:.0f} | {run['wall_s']:.1f} | {run.get('first_loss')} | "
                     f"{run['load_before']}/{run['load_after']} |" if st and e2e else
                     f"| {run['run']} | {st_text} | {e2e['tokens_per_s']:.0f} tok/s | - | {run['wall_s']:.1f} | "
                     f"{run.get('first_loss')} | {run['load_before']}/{run['load_after']} |" if e2e else
                     f"| {run['run']} | {st_text} | - | - | {run['wall_s']:.1f} | {run.get('first_loss')} | "
                     f"{run['load_before']}/{run['load_after']} |")
    lines.append("")
    lines.append("- tokens = non-pad input tokens (LLaMA-Factory pads each packed row to cutoff_len + 1 = "
                 f"{result['setup']['cutoff_len'] + 1}), counted by a forward pre-hook in the `clock` run.")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-versions":
        return child_versions()

    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--venv", default=str(DEFAULT_VENV))
    parser.add_argument("--work", default=None, help="default: a new temporary directory")
    parser.add_argument("--runs", default="cli,clock")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "llamafactory_sft.json"))
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"), dest="results_md")
    args = parser.parse_args()

    import tempfile

    from bench.bench_train_vs_trl import (
        WARMUP_STEPS,
        load1,
        machine,
        read_jsonl,
        steady,
        step_records,
    )
    from bench.peers.common import bench_model_path

    venv = Path(args.venv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-llamafactory-"))
    work.mkdir(parents=True, exist_ok=True)
    build_s = ensure_venv(venv, work / "pip-install.log")
    py = str(venv / "bin" / "python")
    env = {**os.environ, "OMP_NUM_THREADS": str(TORCH_THREADS), "MKL_NUM_THREADS": str(TORCH_THREADS),
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
           "DISABLE_VERSION_CHECK": "1", "HF_DATASETS_CACHE": str(work / "hf-datasets-cache")}
    env.pop("PYTHONPATH", None)
    lf_versions = json.loads(subprocess.run([py, __file__, "--child-versions"], env=env, check=True,
                                            capture_output=True, text=True).stdout.strip().splitlines()[-1])
    import torch
    import transformers

    model = bench_model_path()
    data_dir = write_dataset(work)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "load_before": load1(), "loadavg_before": list(os.getloadavg()),
              "work_dir": str(work), "venv": str(venv), "venv_build_s": build_s, "warmup_steps": WARMUP_STEPS,
              "versions": {"llamafactory_venv": lf_versions,
                           "raymill_venv": {"torch": torch.__version__, "transformers": transformers.__version__}},
              "setup": {"model": str(model), "template": "chatml", "cutoff_len": args.cutoff, "packing": "neat_packing",
                        "batch": 1, "lr": 1e-4, "scheduler": "linear", "dtype": "fp32", "gradient_checkpointing": False,
                        "attn": "sdpa", "torch_threads": TORCH_THREADS, "steps": args.steps, "finetuning": "full"},
              "runs": []}
    for kind in [r.strip() for r in args.runs.split(",") if r.strip()]:
        out_dir = work / f"lf-{kind}"
        config = write_config(work / f"lf-{kind}.yaml", model, data_dir, out_dir, args.steps, args.cutoff)
        if kind == "cli":
            cmd = [str(venv / "bin" / "llamafactory-cli"), "train", str(config)]
        else:
            cmd = [py, __file__, "--child", str(config), str(work / f"lf-{kind}-steps.jsonl")]
        proc = run_timed(cmd, work / f"lf-{kind}.log", env)
        run = {"run": kind, "cmd": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), **proc,
               **packed_rows(work / f"lf-{kind}.log")}
        run["trainer_log_steady"] = trainer_log_steady(out_dir / "trainer_log.jsonl", WARMUP_STEPS)
        state = out_dir / "trainer_state.json"
        if state.exists():
            hist = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
            losses = [h for h in hist if "loss" in h]
            run["first_loss"] = losses[0]["loss"] if losses else None
            run["steps"] = json.loads(state.read_text(encoding="utf-8")).get("global_step")
            run["train_runtime_s"] = next((h.get("train_runtime") for h in hist if "train_runtime" in h), None)
        if kind == "clock":
            steps_ = step_records(read_jsonl(work / f"lf-{kind}-steps.jsonl"))
            run["steady"] = steady(steps_, "num_tokens")
            run["tokens"] = steps_[-1]["num_tokens"]
            run["first_loss"] = steps_[0]["loss"]
            run["steps"] = len(steps_)
            run["forward_rows"] = steps_[-1]["forward_rows"]
            run["end_to_end"] = {"tokens_per_s": run["tokens"] / run["wall_s"], "wall_s": run["wall_s"]}
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    # The CLI run consumed the same rows in the same order (same seed), so its token count is the clock run's.
    clock = next((r for r in result["runs"] if r["run"] == "clock"), None)
    for run in result["runs"]:
        if run["run"] == "cli" and clock:
            run["end_to_end"] = {"tokens_per_s": clock["tokens"] / run["wall_s"], "wall_s": run["wall_s"],
                                 "tokens_from": "clock run (same seed, same rows)"}
    result["load_after"] = load1()
    result["loadavg_after"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.results_md:
        with Path(args.results_md).open("a", encoding="utf-8") as f:
            f.write(markdown_section(result))
    print(json.dumps({r["run"]: {k: r.get(k) for k in ("steady", "end_to_end", "trainer_log_steady")}
                      for r in result["runs"]}, indent=2))


if __name__ == "__main__":
    main()
