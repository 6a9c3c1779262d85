"""Embedded defaults, so `python jobs/synth.py instructions|preferences|best-of-n` runs with no arguments.

- seeds: `default_seeds.json`, 42 small seed tasks written for this project (12 classification);
- the generator and policy: the tiny model trained briefly on the seeds rendered in the
  self-instruct prompt formats (`synth.tiny_format`), so its output parses;
- the reward model: that tiny model with a scalar head, trained for a few seconds to
  prefer a seed's own answer over another seed's answer to the same prompt;
- prompts for sampling: the seed instructions with their first input.

Everything is built once and cached under RAYMILL_CACHE (default ~/.cache/raymill), keyed
by a version and a hash of the seed file, and written through an atomic directory so a
killed build leaves nothing half-made.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from schemas.dataset_io import atomic_output_dir, is_complete
from synth.seeds import SeedTask, load_seeds
from synth.tiny_format import short_seeds, train_format_model
from train.tiny import default_cache_dir

DEFAULTS_VERSION = 1  # bump when the seeds or the training recipes below change
FORMAT_STEPS = 450
RM_STEPS = 60

SEEDS_JSON = Path(__file__).with_name("default_seeds.json")

# Self-instruct settings sized for the tiny model: it was trained on prompts showing 3
# tasks and asking for 2 more, with short answers.
TINY_SELF_INSTRUCT = {
    "num_instructions": 24, "num_human": 3, "num_machine": 1, "new_per_prompt": 2, "prompts_per_round": 8,
    "max_rounds": 8, "classify_examples": 2, "instance_examples": 1,
    "propose_sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 64},
    "classify_sampling": {"temperature": 0.0, "max_tokens": 4},
    "instance_sampling": {"temperature": 0.0, "max_tokens": 96},
}
TINY_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 48}


def _cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()


def _digest(path: str | Path) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=6).hexdigest()


def default_seeds_file(cache_dir: str | Path | None = None) -> Path:
    """The embedded seed tasks as a JSONL file in the seed format (the job reads seeds from a file)."""
    rows = json.loads(SEEDS_JSON.read_text(encoding="utf-8"))
    directory = _cache(cache_dir) / f"synth-seeds-v{DEFAULTS_VERSION}-{_digest(SEEDS_JSON)}"
    if not is_complete(directory):
        with atomic_output_dir(directory) as tmp:
            (tmp / "seed_tasks.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                  encoding="utf-8")
    return directory / "seed_tasks.jsonl"


def format_model_path(seeds_file: str | Path, cache_dir: str | Path | None = None, steps: int = FORMAT_STEPS) -> Path:
    """The tiny model trained on `seeds_file` rendered in the generation formats (built once)."""
    seeds = short_seeds(load_seeds(seeds_file))
    if len(seeds) < 8 or not any(s.is_classification for s in seeds) or all(s.is_classification for s in seeds):
        raise ValueError(f"{seeds_file}: the tiny format model needs at least 8 short seed tasks with both "
                         "classification and other tasks")
    directory = _cache(cache_dir) / f"synth-format-v{DEFAULTS_VERSION}-{_digest(seeds_file)}-{steps}"
    if not is_complete(directory):
        lang = "zh" if sum(_is_cjk(s) for s in seeds) * 2 > len(seeds) else "en"
        with atomic_output_dir(directory) as tmp:
            train_format_model(seeds, tmp, lang=lang, steps=steps)
    return directory


def reward_model_path(seeds_file: str | Path, cache_dir: str | Path | None = None, steps: int = RM_STEPS) -> Path:
    """A tiny reward model on the format model's backbone (built once).

    Chosen = a seed's own answer, rejected = another seed's answer to the same prompt, so it
    learns "the answer fits the request": crude, but a real trained reward model whose
    scores mean something, loaded and served exactly like one from `jobs/train.py --stage rm`.
    """
    base = format_model_path(seeds_file, cache_dir)
    directory = _cache(cache_dir) / f"synth-rm-v{DEFAULTS_VERSION}-{_digest(seeds_file)}-{steps}"
    if not is_complete(directory):
        _train_reward_model(load_seeds(seeds_file), base, directory, steps)
    return directory


def default_prompts_file(seeds_file: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Seed instructions (+ first input) as a prompt JSONL, the shape `synth.prompt_sources` reads."""
    seeds = load_seeds(seeds_file)
    directory = _cache(cache_dir) / f"synth-prompts-v{DEFAULTS_VERSION}-{_digest(seeds_file)}"
    if not is_complete(directory):
        with atomic_output_dir(directory) as tmp:
            lines = [json.dumps({"id": f"prompt-{s.id}", "instruction": s.instruction, "input": s.instances[0].input},
                                ensure_ascii=False) + "\n" for s in seeds]
            (tmp / "prompts.jsonl").write_text("".join(lines), encoding="utf-8")
    return directory / "prompts.jsonl"


def _is_cjk(seed: SeedTask) -> bool:
    from synth.rouge import is_cjk_text

    return is_cjk_text(seed.instruction)


def _preference_rows(seeds: list[SeedTask], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task, other = rng.sample(seeds, 2)
        inst = rng.choice(task.instances)
        prompt = task.instruction + (f"\n\n{inst.input}" if inst.input.strip() else "")
        rejected = rng.choice(other.instances).output
        if rejected.strip() == inst.output.strip():
            continue
        rows.append({"id": f"seedpair-{i}", "prompt": [{"role": "user", "content": prompt, "tool_calls": None}],
                     "chosen": inst.output, "rejected": rejected, "source": "raymill.tiny_defaults"})
    return rows


def _train_reward_model(seeds: list[SeedTask], base: Path, out: Path, steps: int, batch_size: int = 8,
                        seed: int = 0) -> None:
    import torch
    from transformers import AutoTokenizer

    from schemas.validate import table_from_rows
    from train.losses import pairwise_rm_loss
    from train.preference_data import collate_pairs, tokenize_preferences
    from train.reward_model import build_reward_model, save_reward_model, sequence_rewards

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = build_reward_model(base, tokenizer)
    table = table_from_rows(_preference_rows(seeds, 512, seed), "preference")
    examples = tokenize_preferences(table, tokenizer, cutoff_len=160).examples
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = collate_pairs(rng.sample(examples, batch_size), tokenizer.pad_token_id)
        chosen, rejected = sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).chunk(2)
        loss = pairwise_rm_loss(chosen, rejected)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    save_reward_model(model, tokenizer, out, {"cutoff_len": 160, "trained_on": "seed answers vs other seeds' answers",
                                              "steps": steps, "final_loss": round(loss.item(), 4)})
