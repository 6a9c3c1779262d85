"""What the side-by-side training benchmark's runners share: the data files, the model, a step clock.

Every runner (raymill's jobs/train.py and each peer trainer) trains the same model on
the same records, so the only thing that differs is the trainer. The data are the 350
Self-Instruct seed tasks (English + Chinese) from ../shared/data/self_instruct:
- SFT: one conversation per task instance, {"messages": [user, assistant]};
- DPO: TRL's conversational preference format, chosen = the task's own output,
  rejected = the next task's output (a pair with two equal outputs is skipped), the
  first N_PAIRS pairs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RAYMILL_SHARED_DATA", REPO.parent / "shared" / "data"))
SEED_FILES = ("seed_tasks.jsonl", "zh_seed_tasks.jsonl")
N_PAIRS = 330
TORCH_THREADS = 2


def seed_tasks() -> list[dict]:
    """(prompt, output) of every seed task instance, English then Chinese, in file order."""
    out = []
    for name in SEED_FILES:
        path = SHARED / "self_instruct" / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (set RAYMILL_SHARED_DATA to the shared data folder)")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            task = json.loads(line)
            for k, inst in enumerate(task["instances"]):
                prompt = task["instruction"] + (("\n\n" + inst["input"]) if inst.get("input") else "")
                out.append({"id": f"{task['id']}-{name[:2]}-{k}", "prompt": prompt, "output": inst["output"]})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_sft_data(path: Path) -> Path:
    rows = [{"id": t["id"], "messages": [{"role": "user", "content": t["prompt"]},
                                         {"role": "assistant", "content": t["output"]}]} for t in seed_tasks()]
    return write_jsonl(path, rows)


def write_dpo_data(path: Path, n_pairs: int = N_PAIRS) -> Path:
    tasks = seed_tasks()
    rows = []
    for i, task in enumerate(tasks):
        other = tasks[(i + 1) % len(tasks)]["output"]
        if other.strip() == task["output"].strip():
            continue
        rows.append({"id": task["id"], "prompt": [{"role": "user", "content": task["prompt"]}],
                     "chosen": [{"role": "assistant", "content": task["output"]}],
                     "rejected": [{"role": "assistant", "content": other}]})
        if len(rows) == n_pairs:
            break
    return write_jsonl(path, rows)


def bench_model_path() -> Path:
    """The ~9.6M-parameter Llama of bench/bench_train.py (built once in $RAYMILL_CACHE)."""
    import sys

    sys.path.insert(0, str(REPO))
    from bench.bench_train import bench_model
    from train.tiny import default_cache_dir

    return bench_model(Path(default_cache_dir()))


def add_output_arguments(parser, results_json: str) -> None:
    """--out, --results-md and --raymill-root, as every side-by-side bench takes them."""
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / results_json))
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"), dest="results_md",
                        help="markdown file the table is appended to ('' = none)")
    parser.add_argument("--raymill-root", default=None, dest="raymill_root",
                        help="run raymill from another checkout of the code (PYTHONPATH), e.g. for a before/after")


def load_peer_model(model: str | None):
    """(model path, tokenizer, model) as every TRL peer loads them: the bench model unless one is
    given, fp32 weights, SDPA, TORCH_THREADS torch threads (raymill's bench settings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(TORCH_THREADS)
    model_path = model or str(bench_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return model_path, tokenizer, AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa",
                                                                      dtype=torch.float32)


def step_clock_callback(path: Path):
    """A TrainerCallback that appends one JSON line per log event ({step, time_s, logs}), the
    same clock raymill's MetricsJsonlCallback keeps, so both sides' step times are read alike."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.started = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            record = {"step": state.global_step, "time_s": round(time.time() - self.started, 3)}
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return StepClock()


def torch_versions() -> dict:
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import trl

        out["trl"] = trl.__version__
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------- RL (GRPO) side by side
# bench/bench_rl.py runs raymill's `--stage grpo` and bench/peers/trl_grpo_bench.py (TRL's
# GRPOTrainer) with these settings; both read them from here so the two sides cannot drift.
RL_NUM_GENERATIONS = 4      # G: samples per prompt (raymill's grpo default)
RL_PROMPTS_PER_STEP = 8     # prompts per optimizer step: 8 x 4 = 32 completions per step
RL_MAX_NEW_TOKENS = 64      # the untrained bench model rarely samples EOS, so most completions are this long
RL_BETA = 0.04              # KL coefficient in the loss (k3), raymill's grpo default; TRL's default is 0 (no reference)
RL_CLIP_EPSILON = 0.2
RL_LEARNING_RATE = 1e-5
RL_PROMPT_ROWS = 400        # more than steps x prompts_per_step of any planned run: no prompt repeats


def write_rl_prompts(path: Path, n: int = RL_PROMPT_ROWS, key: str = "prompt") -> Path:
    """raymill's embedded RL prompts (train.rl.default.default_prompts): short, near-uniform lengths,
    so the order each side draws them in barely changes a step's cost; they are the prompts the
    rule reward (say "the") was written for. key="prompt": {id, prompt: [user message]}, TRL's
    conversational prompt format; key="messages": the same user messages as {id, messages}, the
    form raymill's `--data` preflight accepts (it sniffs a file's format from its keys and does
    not know a bare `prompt` column, although train/rl/prompts.py reads one)."""
    import sys

    sys.path.insert(0, str(REPO))
    from train.rl.default import default_prompts

    rows = [{"id": r["id"], key: r["prompt"]} for r in default_prompts(n)]
    return write_jsonl(path, rows)


def rl_rule_reward(prompts: list, completions: list, **_: object) -> list[float]:
    """raymill's built-in rule reward (train.rl.default.target_word_reward) as a TRL reward function.

    TRL passes conversational completions as [{"role": "assistant", "content": text}] lists
    (decoded with skip_special_tokens, as raymill decodes its responses); raymill's function
    takes plain texts, so only the content is handed on.
    """
    from train.rl.default import target_word_reward

    texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
    return target_word_reward([str(p) for p in prompts], texts)
