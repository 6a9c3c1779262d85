"""A tiny model that speaks the self-instruct prompt formats, for CPU tests and demos.

A randomly initialised tiny model produces almost nothing that parses, so an
end-to-end run would only exercise the `unparseable` path. This trains the tiny
Llama of `train.tiny` for a few seconds on the seed tasks rendered exactly as the
pipeline renders its prompts, with the seed data as the answers; its generations
then parse and get kept or rejected by the real filters.
"""
from __future__ import annotations

import random
from pathlib import Path

from synth.prompts import format_instances, render_classify, render_instances, render_propose
from synth.seeds import SeedTask


def format_examples(seeds: list[SeedTask], lang: str, n: int, num_examples: int = 4, num_new: int = 2,
                    seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, answer) pairs for the three prompt kinds and plain answers, answers taken from the seeds."""
    rng = random.Random(seed)
    t = "任务{i}：{text}" if lang == "zh" else "Task {i}: {text}"
    out = []
    cls_yes = [s for s in seeds if s.is_classification]
    cls_no = [s for s in seeds if not s.is_classification]
    for k in range(n):
        # Instance answers are the longest format to learn: they get two of every five examples.
        # Kind 3 (answer a task directly) makes the same model usable as a tiny policy.
        kind = (0, 1, 2, 2, 3)[k % 5]
        if kind == 3:
            target = rng.choice(seeds)
            inst = rng.choice(target.instances)
            prompt = target.instruction + (f"\n\n{inst.input}" if inst.input.strip() else "")
            answer = inst.output
        elif kind == 0:
            picked = rng.sample(seeds, num_examples + num_new)
            shown, new = picked[:num_examples], picked[num_examples:]
            prompt = render_propose([s.instruction for s in shown], lang, num_new)
            answer = "\n".join(t.format(i=num_examples + 1 + j, text=" ".join(s.instruction.split()))
                               for j, s in enumerate(new))
        elif kind == 1:
            shots = rng.sample(cls_yes, 1) + rng.sample(cls_no, 1)
            target = rng.choice(cls_yes if rng.random() < 0.5 else cls_no)
            prompt = render_classify(target.instruction, [(s.instruction, s.is_classification) for s in shots], lang)
            answer = ("是" if target.is_classification else "否") if lang == "zh" else (
                "Yes" if target.is_classification else "No")
        else:
            target = rng.choice(seeds)
            pool = [s for s in seeds if s.is_classification == target.is_classification and s is not target]
            shots = rng.sample(pool, 1)
            prompt = render_instances(target.instruction, [(s.instruction, [(i.input, i.output) for i in s.instances])
                                                           for s in shots], lang, target.is_classification, 2)
            answer = format_instances([(i.input, i.output) for i in target.instances], lang, target.is_classification)
        out.append((prompt, answer))
    return out


def short_seeds(seeds: list[SeedTask], max_chars: int = 160, limit: int = 60) -> list[SeedTask]:
    """Seeds whose instruction and first instance are short: cheap prompts for CPU tests."""
    def size(s: SeedTask) -> int:
        return len(s.instruction) + len(s.instances[0].input) + len(s.instances[0].output)
    small = [s for s in seeds if size(s) <= max_chars]
    yes = [s for s in small if s.is_classification][: limit // 4]
    no = [s for s in small if not s.is_classification][: limit - len(yes)]
    return yes + no


def train_format_model(seeds: list[SeedTask], out_dir: str | Path, lang: str = "en", steps: int = 150,
                       batch_size: int = 8, lr: float = 5e-3, max_length: int = 192, seed: int = 0,
                       num_examples: int = 3, num_new: int = 2) -> Path:
    """Build a tiny tokenizer+model on the rendered prompts and train it briefly (seconds on CPU)."""
    import torch

    from train.tiny import save_tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    examples = format_examples(seeds, lang, n=max(300, steps * batch_size // 4), num_examples=num_examples,
                               num_new=num_new, seed=seed)
    out_dir = Path(out_dir)
    save_tiny(out_dir, texts=[p + "\n" + a for p, a in examples], vocab_size=1024)
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    encoded = []
    for prompt, answer in examples:
        msgs = [{"role": "user", "content": prompt}]
        head = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = head + answer + "<|im_end|>\n"
        p_ids = tok(head, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        if len(ids) > max_length:  # keep the answer; cut the oldest prompt tokens
            cut = len(ids) - max_length
            ids, n_prompt = ids[cut:], max(0, len(p_ids) - cut)
        else:
            n_prompt = len(p_ids)
        encoded.append((ids, n_prompt))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.05, 1 - s / steps))
    model.train()
    for _ in range(steps):
        batch = rng.sample(encoded, batch_size)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), tok.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for b, (ids, n_prompt) in enumerate(batch):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            labels[b, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            mask[b, :len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out_dir)
    (out_dir / "format_train_loss.txt").write_text(f"{loss.item():.4f}\n", encoding="utf-8")
    return out_dir
