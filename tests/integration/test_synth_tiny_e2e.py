"""End-to-end synthesis on local Ray with the tiny model (local transformers backend).

A random tiny model produces almost nothing that parses, so the model here is the tiny
Llama trained for ~20 s on the embedded seed tasks rendered in the generation formats
(`synth.tiny_defaults`). Its generations are real and imperfect: the pipeline has to keep
some and reject some, each with a reason, from what the model actually wrote.
"""
from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from schemas.dataset_io import read_parquet_dir
from schemas.funnel import read_accounting
from synth.backends import make_backend
from synth.output import write_dataset
from synth.preferences import PreferenceConfig, build_preferences
from synth.prompt_sources import load_prompts
from synth.run_instructions import run_instructions
from synth.scoring import RewardModelScorer
from synth.self_instruct import SelfInstructConfig
from synth.tiny_defaults import (TINY_SAMPLING, TINY_SELF_INSTRUCT, default_prompts_file, default_seeds_file,
                                 format_model_path, reward_model_path)

REASONS = {"http_error", "unparseable", "no_valid_instances", "too_short", "too_long", "blacklisted_word",
           "starts_with_non_letter", "rouge_l_too_similar", "empty_output", "identical_input_output",
           "truncated_output", "conflicting_outputs", "duplicate_instance"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """RAYMILL_CACHE when set (reused across sessions, keyed by version), else this session's tmp."""
    return os.environ.get("RAYMILL_CACHE") or tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def seeds(cache):
    return default_seeds_file(cache)


@pytest.fixture(scope="module")
def format_model(seeds, cache):
    return format_model_path(seeds, cache)


def check_funnel(out, rows):
    stages, run = read_accounting(out)
    for s in stages:
        s.check()
    assert stages[-1].kept == rows
    assert (out / "card" / "card.md").exists() and (out / "card" / "card.arrow").exists()
    return stages, run


@pytest.mark.slow
def test_self_instruct_with_the_tiny_model_keeps_some_and_rejects_some(ray_session, seeds, format_model, tmp_path):
    cfg = SelfInstructConfig.from_dict({**TINY_SELF_INSTRUCT, "num_instructions": 12, "max_rounds": 2})
    backend = make_backend(f"local:{format_model}", batch_size=8)
    out = run_instructions(seeds, backend, tmp_path / "si", cfg)

    kept = read_parquet_dir(out / "data", "sft").to_pylist()  # validates the SFT schema
    dropped = pq.read_table(out / "dropped").to_pylist()
    assert kept and dropped
    for row in kept:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][1]["content"] == row["output"] and row["output"].strip()
        assert row["instruction"] and row["instruction"][0].isalpha()
        assert row["rouge_to_nearest"] <= 0.7 and len(row["most_similar"]) == 3
        assert row["most_similar_rouge_l"][0] == pytest.approx(row["rouge_to_nearest"], abs=1e-4)
    for d in dropped:
        assert d["drop_reason"] in REASONS and d["drop_stage"] and d["text"]
        if d["drop_reason"] == "unparseable":
            assert d["raw_text"].strip()  # what the model wrote is kept for inspection
    stages, run = check_funnel(out, len(kept))
    assert run["generation"]["completions"] > 0 and run["generation"]["errors"] == 0
    assert sum(sum(s.dropped.values()) for s in stages) == len(dropped)
    card = (out / "card" / "card.md").read_text()
    assert "## Drop reasons" in card and dropped[0]["drop_reason"] in card


@pytest.mark.slow
def test_preferences_with_tiny_policy_and_reward_model(ray_session, seeds, format_model, cache, tmp_path):
    rm_path = reward_model_path(seeds, cache)
    prompts = load_prompts(default_prompts_file(seeds, cache), limit=12)
    policy = make_backend(f"local:{format_model}", batch_size=8)
    scorer = RewardModelScorer(rm_path, batch_size=8)
    cfg = PreferenceConfig(n=3, sampling=dict(TINY_SAMPLING), seed=1)
    rows, dropped, stages, run = build_preferences(prompts, policy, scorer, cfg)
    out = write_dataset(tmp_path / "pref", "preference", rows, dropped, stages,
                        {**run, "job": "test", "models": [policy.identity, scorer.identity]})

    table = read_parquet_dir(out / "data", "preference").to_pylist()
    assert table
    for r in table:
        assert r["chosen_score"] > r["rejected_score"]
        assert r["margin"] == pytest.approx(r["chosen_score"] - r["rejected_score"])
        assert r["judge"] == scorer.identity and r["chosen"].strip() != r["rejected"].strip()
        assert r["prompt"][-1]["role"] == "user"
    stages, _ = check_funnel(out, len(table))
    assert stages[0].rows_in == 12 * 3  # every sample accounted for

    # The tiny reward model learned something real: a seed's own answer beats another seed's.
    from train.reward_model import load_reward_model
    from synth.seeds import load_seeds

    rm = load_reward_model(rm_path)
    tasks = load_seeds(seeds)
    convs = [[{"role": "user", "content": t.instruction + (f"\n\n{t.instances[0].input}" if t.instances[0].input else "")}]
             for t in tasks]
    own = rm.score_responses(convs, [t.instances[0].output for t in tasks])
    other = rm.score_responses(convs, [tasks[(i + 7) % len(tasks)].instances[0].output for i in range(len(tasks))])
    assert sum(a > b for a, b in zip(own, other)) >= 0.8 * len(tasks)


@pytest.mark.slow
def test_jobs_run_on_their_embedded_defaults(ray_session, format_model, cache, tmp_path, monkeypatch):
    """`jobs/synth.py instructions` and `best-of-n` with no inputs: embedded seeds, tiny model, tiny RM."""
    import jobs.synth as job

    monkeypatch.setenv("RAYMILL_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    job.main(["instructions", "--num", "4", "self_instruct.max_rounds=1"])
    out = tmp_path / "output" / "synth" / "instructions"
    kept = read_parquet_dir(out / "data", "sft").num_rows
    _, run = check_funnel(out, kept)
    assert run["models"] == [f"local:{format_model}"]
    assert run["config"]["self_instruct"]["num_human"] == TINY_SELF_INSTRUCT["num_human"]  # the tiny profile
    assert run["config"]["self_instruct"]["num_instructions"] == 4
    assert not (out.parent / ".instructions.checkpoint").exists()

    job.main(["best-of-n", "--limit", "6", "--n", "2"])
    out = tmp_path / "output" / "synth" / "best-of-n"
    rows = read_parquet_dir(out / "data", "sft").to_pylist()
    _, run = check_funnel(out, len(rows))
    assert rows and all(r["scorer"].startswith("reward_model:") and r["messages"][-1]["role"] == "assistant"
                        for r in rows)
    assert len({r["prompt_id"] for r in rows}) == len(rows) <= 6
