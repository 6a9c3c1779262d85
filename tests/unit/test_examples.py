"""Every examples/*.yaml parses and passes its job's checks before Ray starts, as written
(embedded defaults and the tiny model), and examples/README.md explains each one."""
from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common import deep_merge, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRAIN = sorted(p for p in EXAMPLES.glob("*.yaml") if p.stem.split("_")[0] in ("pt", "sft", "rm", "dpo", "ppo", "grpo"))
CURATE = sorted(EXAMPLES.glob("curate_*.yaml"))
SYNTH = sorted(EXAMPLES.glob("synth_*.yaml"))


def test_every_example_is_checked_and_documented():
    every = sorted(EXAMPLES.glob("*.yaml"))
    assert every and sorted(TRAIN + CURATE + SYNTH) == every
    # A stage and mode each: pt, sft full / freeze / lora / qlora, rm, dpo, ppo, grpo, curate x2, synth x2.
    assert {p.stem for p in every} >= {"pt", "sft", "sft_freeze", "sft_lora", "sft_qlora", "rm", "dpo", "ppo", "grpo",
                                       "curate_small", "curate_cluster", "synth_instructions", "synth_preferences"}
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in every:
        assert f"examples/{path.name}" in readme, f"examples/README.md does not explain {path.name}"


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_train_example_parses_and_preflights(path):
    from train.args import parse_train_config
    from train.launcher import preflight

    cfg = parse_train_config(load_config(path))
    preflight(cfg)
    stage, _, mode = path.stem.partition("_")
    assert cfg.launch.stage == stage
    assert cfg.finetuning.finetuning_type == (mode or {"sft": "full", "pt": "full", "rm": "full",
                                                       "dpo": "lora", "ppo": "lora", "grpo": "lora"}[stage])
    assert cfg.model.model == "tiny" and not cfg.data.data  # runnable as written on the embedded defaults


@pytest.mark.parametrize("path", CURATE, ids=lambda p: p.stem)
def test_curate_example_parses(path):
    from curate.config import default_config, parse_config

    config = parse_config(load_config(path, defaults=default_config()))
    assert config.input is None  # as written: the embedded sample crawl; the README shows --input
    assert config.enabled("dedup")


@pytest.mark.parametrize("path", SYNTH, ids=lambda p: p.stem)
def test_synth_example_validates_like_the_job(path):
    """What jobs/synth.py checks before it starts Ray: sections, the command's settings, every
    sampling block, and the backend settings against a backend of each kind."""
    from jobs.synth import DEFAULTS
    from synth.backends import SamplingParams, make_backend
    from synth.preferences import PreferenceConfig
    from synth.self_instruct import SelfInstructConfig
    from synth.tiny_defaults import TINY_SELF_INSTRUCT

    raw = load_config(path)
    assert set(raw) <= set(DEFAULTS), f"unknown sections {sorted(set(raw) - set(DEFAULTS))}"
    config = load_config(path, defaults=DEFAULTS)
    if path.stem == "synth_instructions":
        si = SelfInstructConfig.from_dict(deep_merge(TINY_SELF_INSTRUCT, config["self_instruct"]))
        for block in (si.propose_sampling, si.classify_sampling, si.instance_sampling):
            SamplingParams.from_config(block)
        assert SamplingParams.from_config(si.propose_sampling).top_k == 50
    else:
        prefs = PreferenceConfig(**config["preferences"])
        assert SamplingParams.from_config({**prefs.sampling, "n": prefs.n}).n == prefs.n
    for spec in ("local:/models/x", "http:m@http://localhost:8000/v1"):
        make_backend(spec, **config["backend"])
