"""The self-instruct loop with a rule-based backend: every drop reason, accounting, resumption.

The backend implements the real `Backend` interface and answers each of the three
prompt kinds by fixed rules, so which instruction is kept and why is known exactly.
"""
from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from schemas.funnel import read_accounting
from synth.backends import Backend, Completion
from synth.run_instructions import run_instructions
from synth.self_instruct import SelfInstructConfig

TOPICS = ["volcano", "bicycle", "library", "orchestra", "glacier", "market", "tax", "poem", "garden", "robot",
          "river", "castle", "recipe", "budget", "planet", "museum", "harbor", "desert", "chess", "violin"]
VERBS = ["Explain", "Describe", "Summarize", "Compare", "List", "Classify", "Plan", "Rewrite"]


class RuleBackend(Backend):
    identity = "rule:self-instruct"

    def __init__(self):
        self.calls = 0

    def generate(self, requests, params):
        self.calls += 1
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            rng = random.Random(f"{r.request_id}:{params.seed}")
            if "Continue the list" in text:
                verb = "Classify" if r.request_id.endswith("p000") else rng.choice(VERBS[:5])
                items = [f"{verb} how a {rng.choice(TOPICS)} and a {rng.choice(TOPICS)} "
                         f"differ for {rng.choice(TOPICS)} {rng.randint(0, 9999)} lovers.",
                         "Describe the image in one line.", "Hi.", "- Bullet that starts with a dash here.",
                         "Is there anything I can eat for a breakfast that doesn't include eggs?",
                         f"{rng.choice(VERBS)} the {rng.choice(TOPICS)} carefully for"]
                reply = "\n".join(f"Task {9 + i}: {x}" for i, x in enumerate(items))
                out.append(Completion(r.request_id, 0, reply, "length"))  # last task is cut off
            elif text.rstrip().endswith("Classification:"):
                task = text.rstrip().rsplit("Task:", 1)[1]
                out.append(Completion(r.request_id, 0, "Yes" if task.strip().startswith("Classify") else "No", "stop"))
            else:
                task = text.rstrip().rsplit("Task:", 1)[1]
                if "Compare" in task:
                    reply = "Here are some thoughts but no examples."
                elif task.strip().startswith("Classify"):
                    reply = ("Class label: Yes\nInput: a small one\nClass label: No\nInput: a small one\n"
                             "Class label: Maybe\nInput: cut")
                else:
                    reply = "Input: <none>\nOutput: First answer.\nInput: same\nOutput: same\nInput: x\nOutput: partial"
                out.append(Completion(r.request_id, 0, reply, "length"))
        return out


class FlakyBackend(RuleBackend):
    """Fails every proposal request of round 1 as if retries were exhausted."""

    def generate(self, requests, params):
        out = super().generate(requests, params)
        return [Completion(c.request_id, c.sample_index, "", "error", error="HTTP 503 after 3 retries")
                if c.request_id.startswith("r00001-p") else c for c in out]


SEEDS = [
    {"id": "s0", "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
     "instances": [{"input": "", "output": "Yes, oatmeal with nuts."}], "is_classification": False},
    {"id": "s1", "instruction": "Classify the sentiment of the sentence as positive or negative.",
     "instances": [{"input": "I love it.", "output": "Positive"}], "is_classification": True},
    {"id": "s2", "instruction": "What is the relation between the given pairs?",
     "instances": [{"input": "Night : Day", "output": "Opposites."}], "is_classification": False},
]


@pytest.fixture
def seeds_file(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in SEEDS) + "\n", encoding="utf-8")
    return path


def config(num=6):
    return SelfInstructConfig.from_dict({"num_instructions": num, "prompts_per_round": 3, "num_human": 2,
                                         "num_machine": 1, "max_rounds": 10})


def read(out):
    return pq.read_table(out / "data").to_pylist(), pq.read_table(out / "dropped").to_pylist()


def test_every_reason_is_recorded_and_accounting_adds_up(tmp_path, seeds_file):
    out = run_instructions(seeds_file, FlakyBackend(), tmp_path / "si", config())
    kept, dropped = read(out)
    reasons = {(d["drop_stage"], d["drop_reason"]) for d in dropped}
    assert {("generate", "http_error"), ("instruction_filter", "truncated_output"),
            ("instruction_filter", "blacklisted_word"), ("instruction_filter", "too_short"),
            ("instruction_filter", "starts_with_non_letter"), ("instruction_filter", "rouge_l_too_similar"),
            ("instances", "unparseable"), ("instance_filter", "identical_input_output"),
            ("instance_filter", "truncated_output"), ("instance_filter", "conflicting_outputs"),
            ("instances", "no_valid_instances")} <= reasons
    unparseable = next(d for d in dropped if d["drop_reason"] == "unparseable")
    assert unparseable["raw_text"] == "Here are some thoughts but no examples."
    similar = next(d for d in dropped if d["drop_reason"] == "rouge_l_too_similar")
    assert similar["rouge_to_nearest"] > 0.7 and similar["most_similar"][0] == SEEDS[0]["instruction"]
    assert kept and all(r["rouge_to_nearest"] <= 0.7 and len(r["most_similar"]) == 3 for r in kept)
    assert all(r["messages"][0]["role"] == "user" and r["messages"][1]["content"] == r["output"] for r in kept)
    assert {r["output"] for r in kept} == {"First answer."}  # the only instance that survives the post-filters
    stages, run = read_accounting(out)
    for s in stages:
        s.check()
    assert stages[-1].kept == len(kept)
    assert run["generation"]["errors"] == 3 and run["instructions_kept"] >= 6
    assert (out / "card").is_dir() and (out / "_SUCCESS").exists()
    # The failed calls are counted where a reader looks: the accounting and the card.
    assert any(w.startswith("stage 'generate': 3 item(s) dropped") for w in run["warnings"])
    assert "| http_error | generate | 3 |" in (out / "card" / "card.md").read_text()
    assert all(s.seconds >= 0 for s in stages) and sum(s.seconds for s in stages) > 0


def test_interrupted_run_resumes_without_duplicates(tmp_path, seeds_file):
    class Stop(Exception):
        pass

    def stop_after_round_1(r):
        if r == 1:
            raise Stop

    ckpt = tmp_path / "ckpt"
    first = RuleBackend()
    with pytest.raises(Stop):
        run_instructions(seeds_file, first, tmp_path / "si", config(8), checkpoint_dir=ckpt,
                         after_round=stop_after_round_1)
    assert not (tmp_path / "si").exists()  # nothing half-written at the output path
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert [r["round"] for r in manifest["rounds"]] == [0, 1]
    before = pq.read_table(ckpt / "accepted-00000.parquet").to_pylist()

    resumed = RuleBackend()
    out = run_instructions(seeds_file, resumed, tmp_path / "si", config(8), checkpoint_dir=ckpt)
    kept, dropped = read(out)
    ids = [r["id"] for r in kept] + [d["id"] for d in dropped]
    assert len(ids) == len(set(ids))
    assert len({r["instruction"] for r in kept}) == len({r["instruction_id"] for r in kept})
    assert {r["id"] for r in before} <= {r["id"] for r in kept}
    assert min(r["round"] for r in kept) == 0
    assert not ckpt.exists()  # removed after a successful write

    # An uninterrupted run gives the same rows, and the two halves together made exactly its
    # backend calls: the resumed run redid no round.
    backend = RuleBackend()
    straight = run_instructions(seeds_file, backend, tmp_path / "straight", config(8))
    assert [r["id"] for r in read(straight)[0]] == [r["id"] for r in kept]
    assert [d["id"] for d in read(straight)[1]] == [d["id"] for d in dropped]
    assert backend.calls == first.calls + resumed.calls


KILLED_RUN = """
import os, signal, sys
import synth.checkpoint as checkpoint
from synth.run_instructions import run_instructions
from tests.unit.test_synth_self_instruct import RuleBackend, config

real_write_json = checkpoint.write_json

def write_json_then_die(obj, path):
    if len(obj["rounds"]) == 2:  # round 1's shards are on disk; its manifest entry never will be
        os.kill(os.getpid(), signal.SIGKILL)
    real_write_json(obj, path)

checkpoint.write_json = write_json_then_die
run_instructions(sys.argv[1], RuleBackend(), sys.argv[2], config(8), checkpoint_dir=sys.argv[3])
"""


def test_killed_run_resumes_without_duplicates(tmp_path, seeds_file):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(seeds_file), str(tmp_path / "si"), str(ckpt)],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert [r["round"] for r in manifest["rounds"]] == [0]
    assert (ckpt / "accepted-00001.parquet").exists()  # written, but never committed
    assert not (tmp_path / "si").exists()

    out = run_instructions(seeds_file, RuleBackend(), tmp_path / "si", config(8), checkpoint_dir=ckpt)
    kept, dropped = read(out)
    ids = [r["id"] for r in kept] + [d["id"] for d in dropped]
    assert len(ids) == len(set(ids))
    straight = run_instructions(seeds_file, RuleBackend(), tmp_path / "straight", config(8))
    assert [r["id"] for r in read(straight)[0]] == [r["id"] for r in kept]
    assert [d["id"] for d in read(straight)[1]] == [d["id"] for d in dropped]
