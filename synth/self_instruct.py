"""Self-Instruct: grow an instruction set from seed tasks with an LLM, round by round.

One round: propose new instructions from prompts that mix human seeds and accepted
machine instructions (6 + 2 by default) -> surface filters and ROUGE-L novelty ->
classification detection -> instance generation (output-first for classification)
-> instance post-filters. Each round is committed to a checkpoint, so a killed run
resumes at the next round. Every dropped item is kept with its reason and raw text.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from schemas.funnel import StageCount
from schemas.options import check_keys
from synth.backends import Backend, ChatRequest, Completion, GenerationStats, SamplingParams
from synth.checkpoint import RoundCheckpoint
from synth.filters import FilterConfig, TRUNCATED, instance_rules, instruction_rule, novelty_rule
from synth.prompts import (ParseError, parse_classify, parse_instances, parse_proposals, render_classify,
                           render_instances, render_propose)
from synth.rouge import InstructionPool, is_cjk_text
from synth.seeds import SeedTask

log = logging.getLogger(__name__)

HTTP_ERROR = "http_error"
UNPARSEABLE = "unparseable"
NO_VALID_INSTANCES = "no_valid_instances"
STAGES = ("generate", "instruction_filter", "classify", "instances", "instance_filter")


@dataclass
class SelfInstructConfig:
    num_instructions: int = 100
    lang: str = "auto"                 # en / zh / auto (from the seed instructions)
    num_human: int = 6                 # human seeds shown per proposal prompt
    num_machine: int = 2               # accepted machine instructions shown per prompt
    new_per_prompt: int = 8            # how many new tasks a prompt asks for
    prompts_per_round: int = 8
    max_rounds: int = 100
    max_instances: int = 3
    classify_examples: int = 6
    instance_examples: int = 2
    seed: int = 0
    propose_sampling: dict = field(default_factory=lambda: {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512})
    classify_sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 8})
    instance_sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 384})
    filters: FilterConfig = field(default_factory=FilterConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SelfInstructConfig":
        d = dict(d)
        check_keys(d, cls.__dataclass_fields__, "self_instruct")
        if isinstance(d.get("filters"), dict):
            d["filters"] = FilterConfig(**d["filters"])
        cfg = cls(**d)
        if cfg.lang not in ("auto", "en", "zh"):
            raise ValueError(f"self-instruct: lang must be auto, en or zh, got {cfg.lang!r}")
        return cfg


@dataclass
class RoundResult:
    accepted: list[dict] = field(default_factory=list)   # one row per kept instance
    rejected: list[dict] = field(default_factory=list)   # one row per dropped item
    counts: dict[str, dict] = field(default_factory=dict)


def detect_lang(seeds: list[SeedTask]) -> str:
    cjk = sum(is_cjk_text(s.instruction) for s in seeds)
    return "zh" if cjk * 2 > len(seeds) else "en"


class _Counter:
    def __init__(self) -> None:
        self.stages = {s: {"rows_in": 0, "kept": 0, "dropped": {}, "seconds": 0.0} for s in STAGES}
        self._t = time.monotonic()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to `stage` (model calls dominate each step)."""
        now = time.monotonic()
        self.stages[stage]["seconds"] += now - self._t
        self._t = now

    def add(self, stage: str, reason: str | None) -> None:
        s = self.stages[stage]
        s["rows_in"] += 1
        if reason is None:
            s["kept"] += 1
        else:
            s["dropped"][reason] = s["dropped"].get(reason, 0) + 1


class SelfInstruct:
    def __init__(self, seeds: list[SeedTask], backend: Backend, config: SelfInstructConfig):
        self.seeds, self.backend, self.cfg = seeds, backend, config
        self.lang = config.lang if config.lang != "auto" else detect_lang(seeds)
        self.stats = GenerationStats()

    # -- one round ------------------------------------------------------------------------
    def run_round(self, round_index: int, machine: list[dict], pool: InstructionPool) -> RoundResult:
        cfg, rng = self.cfg, random.Random(f"{self.cfg.seed}:{round_index}")
        res, count = RoundResult(), _Counter()

        def reject(stage: str, reason: str, item_id: str, text: str, raw: str = "", **extra: Any) -> None:
            count.add(stage, reason)
            res.rejected.append({"id": item_id, "text": text, "drop_reason": reason, "drop_stage": stage,
                                 "raw_text": raw, "round": round_index, **extra})

        # 1. propose
        requests = []
        for p in range(cfg.prompts_per_round):
            examples = self._pick_examples(rng, machine)
            requests.append(ChatRequest(f"r{round_index:05d}-p{p:03d}", [
                {"role": "user", "content": render_propose(examples, self.lang, cfg.new_per_prompt)}]))
        candidates: list[tuple[str, str, str]] = []  # (id, instruction, raw generation)
        for c in self._generate(requests, cfg.propose_sampling):
            if c.error:
                reject("generate", HTTP_ERROR, c.request_id, c.error, c.error)
                continue
            try:
                items = parse_proposals(c.text)
            except ParseError as exc:
                reject("generate", UNPARSEABLE, c.request_id, c.text, c.text, detail=str(exc))
                continue
            count.add("generate", None)
            for k, text in enumerate(items):
                cid = f"{c.request_id}-i{k:02d}"
                if k == len(items) - 1 and c.finish_reason == "length":
                    reject("instruction_filter", TRUNCATED, cid, text, c.text)
                else:
                    candidates.append((cid, text, c.text))

        count.lap("generate")

        # 2. filter: surface rules, then ROUGE-L against seeds, machine tasks and this round's keepers
        kept: list[dict] = []
        for cid, text, raw in candidates:
            reason = instruction_rule(text, cfg.filters)
            if reason:
                reject("instruction_filter", reason, cid, text, raw)
                continue
            reason, near = novelty_rule(text, pool, cfg.filters)
            extra = {"rouge_to_nearest": near.best, "most_similar": near.texts, "most_similar_rouge_l": near.scores}
            if reason:
                reject("instruction_filter", reason, cid, text, raw, **extra)
                continue
            count.add("instruction_filter", None)
            pool.add(text)
            kept.append({"instruction_id": cid, "instruction": text, **extra})

        count.lap("instruction_filter")

        # 3. classification detection
        requests = [ChatRequest(k["instruction_id"], [{"role": "user", "content": render_classify(
            k["instruction"], self._classify_examples(rng), self.lang)}]) for k in kept]
        by_id = {k["instruction_id"]: k for k in kept}
        classified = []
        for c in self._generate(requests, cfg.classify_sampling):
            item = by_id[c.request_id]
            if c.error:
                reject("classify", HTTP_ERROR, c.request_id, item["instruction"], c.error)
                continue
            try:
                item["is_classification"] = parse_classify(c.text)
            except ParseError as exc:
                reject("classify", UNPARSEABLE, c.request_id, item["instruction"], c.text, detail=str(exc))
                continue
            count.add("classify", None)
            classified.append(item)

        count.lap("classify")

        # 4. instances: output-first for classification tasks, input-first otherwise
        requests = []
        for item in classified:
            examples = self._instance_examples(rng, item["is_classification"])
            requests.append(ChatRequest(item["instruction_id"], [{"role": "user", "content": render_instances(
                item["instruction"], examples, self.lang, item["is_classification"], cfg.max_instances)}]))
        for c in self._generate(requests, cfg.instance_sampling):
            item = by_id[c.request_id]
            if c.error:
                reject("instances", HTTP_ERROR, c.request_id, item["instruction"], c.error)
                continue
            try:
                parsed = parse_instances(c.text, item["is_classification"])[: cfg.max_instances]
            except ParseError as exc:
                reject("instances", UNPARSEABLE, c.request_id, item["instruction"], c.text, detail=str(exc))
                continue
            reasons = instance_rules([p.as_dict() for p in parsed], c.finish_reason)
            good = 0
            for j, (inst, reason) in enumerate(zip(parsed, reasons)):
                iid = f"{c.request_id}-x{j}"
                if reason:
                    reject("instance_filter", reason, iid, item["instruction"], c.text,
                           input=inst.input, output=inst.output)
                    continue
                count.add("instance_filter", None)
                good += 1
                res.accepted.append({"id": iid, **item, "input": inst.input, "output": inst.output,
                                     "round": round_index, "lang": self.lang})
            if good:
                count.add("instances", None)
            else:
                reject("instances", NO_VALID_INSTANCES, c.request_id, item["instruction"], c.text)
        count.lap("instances")  # instance generation and its post-filters
        res.counts = count.stages
        return res

    def _generate(self, requests: list[ChatRequest], sampling: dict) -> list[Completion]:
        if not requests:
            return []
        out = self.backend.generate(requests, SamplingParams.from_config({"seed": self.cfg.seed, **sampling}))
        self.stats.requests += len(requests)
        self.stats.add(out)
        return out

    def _pick_examples(self, rng: random.Random, machine: list[dict]) -> list[str]:
        m = rng.sample([x["instruction"] for x in machine], min(self.cfg.num_machine, len(machine)))
        h = rng.sample([s.instruction for s in self.seeds],
                       min(len(self.seeds), self.cfg.num_human + self.cfg.num_machine - len(m)))
        examples = h + m
        rng.shuffle(examples)
        return examples

    def _classify_examples(self, rng: random.Random) -> list[tuple[str, bool]]:
        k = self.cfg.classify_examples
        yes = [s for s in self.seeds if s.is_classification]
        no = [s for s in self.seeds if not s.is_classification]
        picked = rng.sample(yes, min(len(yes), k // 2)) + rng.sample(no, min(len(no), k - min(len(yes), k // 2)))
        rng.shuffle(picked)
        return [(s.instruction, s.is_classification) for s in picked]

    def _instance_examples(self, rng: random.Random, classification: bool) -> list[tuple[str, list[tuple[str, str]]]]:
        same = [s for s in self.seeds if s.is_classification == classification] or self.seeds
        picked = rng.sample(same, min(len(same), self.cfg.instance_examples))
        return [(s.instruction, [(i.input, i.output) for i in s.instances[: self.cfg.max_instances]]) for s in picked]

    # -- the loop -----------------------------------------------------------------------------
    def run(self, checkpoint_dir: str | Path, after_round: Callable[[int], None] | None = None
            ) -> tuple[list[dict], list[dict], list[StageCount], dict]:
        """Run rounds until `num_instructions` are accepted; resume from `checkpoint_dir`."""
        fingerprint = {"config": asdict(self.cfg), "lang": self.lang, "backend": self.backend.identity,
                       "seeds": [s.id for s in self.seeds]}
        ckpt = RoundCheckpoint(checkpoint_dir, fingerprint)
        accepted, rejected = ckpt.load("accepted"), ckpt.load("rejected")
        if ckpt.next_round:
            log.info("resuming self-instruct at round %d (%d instances kept so far)", ckpt.next_round, len(accepted))
        machine = _unique_instructions(accepted)
        pool = InstructionPool([s.instruction for s in self.seeds] + [m["instruction"] for m in machine])
        r = ckpt.next_round
        while len(machine) < self.cfg.num_instructions and r < self.cfg.max_rounds:
            t0 = time.monotonic()
            res = self.run_round(r, machine, pool)
            ckpt.commit(r, {"accepted": res.accepted, "rejected": res.rejected},
                        {"counts": res.counts, "seconds": time.monotonic() - t0, "stats": self.stats.as_dict()})
            self.stats = GenerationStats()
            accepted += res.accepted
            rejected += res.rejected
            machine = _unique_instructions(accepted)
            # Pool = seeds + accepted instructions, the same set a resumed run rebuilds.
            pool = InstructionPool([s.instruction for s in self.seeds] + [m["instruction"] for m in machine])
            log.info("round %d: %d instructions kept in total", r, len(machine))
            if after_round:
                after_round(r)
            r += 1
        if len(machine) < self.cfg.num_instructions:
            log.warning("stopped after %d rounds with %d of %d instructions", r, len(machine), self.cfg.num_instructions)
        stages, totals = _sum_counts(ckpt.rounds)
        run = {"rounds": len(ckpt.rounds), "lang": self.lang, "backend": self.backend.identity,
               "instructions_kept": len(machine), "generation": totals}
        return accepted, rejected, stages, run


def _unique_instructions(accepted: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for row in accepted:
        seen.setdefault(row["instruction_id"], row)
    return list(seen.values())


def _sum_counts(rounds: list[dict]) -> tuple[list[StageCount], dict]:
    stages = {s: StageCount(s, 0, 0, {}, 0.0) for s in STAGES}
    totals: dict[str, Any] = {"requests": 0, "completions": 0, "errors": 0, "truncated": 0,
                              "prompt_tokens": 0, "completion_tokens": 0, "error_examples": []}
    for r in rounds:
        for name, c in r["counts"].items():
            s = stages[name]
            s.rows_in += c["rows_in"]
            s.kept += c["kept"]
            for reason, n in c["dropped"].items():
                s.dropped[reason] = s.dropped.get(reason, 0) + n
            s.seconds += c.get("seconds", 0.0)
        for k, v in r.get("stats", {}).items():
            if k == "error_examples":
                totals[k] = (totals[k] + v)[:5]
            else:
                totals[k] += v
    return list(stages.values()), totals
