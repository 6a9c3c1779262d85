"""jobs/eval.py on local Ray: ppl, choice and rm through actor pools give the numbers the
in-process computations give, write their reports, and bad input fails before Ray starts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.unit.test_eval_choice import EXPECTED, train_letter_model, write_benchmark

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["The garden grows well today. " * 6, "A student explains the question with care.", "今天天气很好。",
         "Our team builds a simple plan before noon. " * 3]


def _eval(*argv: str) -> None:
    from jobs.eval import main

    main(list(argv))


def test_ppl_job_equals_in_process_scoring(ray_session, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.evaluation.ppl import score_documents, summarize

    data = tmp_path / "heldout.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "ppl"
    _eval("ppl", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out), "max_length=16", "stride=5",
          "batch_size=2", "num_cpus=1")
    result = json.loads((out / "results.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    direct = summarize(score_documents(model, AutoTokenizer.from_pretrained(tiny_model_dir), TEXTS, 16, 5))
    assert result["metrics"]["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-4)
    assert result["metrics"]["bits_per_byte"] == pytest.approx(direct["bits_per_byte"], rel=1e-4)
    assert result["metrics"]["documents"] == 4 and pq.read_table(out / "items.parquet").num_rows == 4
    assert "| perplexity |" in (out / "results.md").read_text() and "<table>" in (out / "index.html").read_text()


@pytest.mark.slow  # ~40 s on 2 busy cores: trains the letter model again
def test_choice_job_scores_the_letter_model(ray_session, tiny_model_dir, tmp_path):
    model = train_letter_model(tiny_model_dir, tmp_path / "letter_b")
    bench = write_benchmark(tmp_path / "bench")
    out = tmp_path / "choice"
    _eval("choice", "--model", str(model), "--data", str(bench), "--output", str(out), "batch_size=4")
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert {s: v["accuracy"] for s, v in metrics["per_subject"].items()} == EXPECTED
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["questions"] == 12
    assert "per subject" in (out / "results.md").read_text()


def test_rm_job_accuracy_and_margin(ray_session, tiny_model_dir, tmp_path):
    from train.evaluation.rm_eval import RewardEvalOptions, pair_scores, read_pairs, summarize
    from train.reward_model import build_reward_model, load_reward_model, save_reward_model

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm_dir = save_reward_model(build_reward_model(tiny_model_dir, tokenizer), tokenizer, tmp_path / "rm")
    pairs = [{"prompt": f"Say something about item {i}.", "chosen": f"Item {i} is useful and well made.",
              "rejected": f"item {i} bad"} for i in range(10)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in pairs) + "\n", encoding="utf-8")
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("\n".join(json.dumps({**p, "chosen": p["rejected"], "rejected": p["chosen"]}) for p in pairs) + "\n")
    _eval("rm", "--model", str(rm_dir), "--data", str(data), "--output", str(tmp_path / "a"), "batch_size=4")
    _eval("rm", "--model", str(rm_dir), "--data", str(swapped), "--output", str(tmp_path / "b"), "batch_size=4")
    a = json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["metrics"]
    direct = summarize(pair_scores(load_reward_model(rm_dir), read_pairs(RewardEvalOptions(data=[str(data)]))))
    assert a["accuracy"] == pytest.approx(direct["accuracy"]) and a["margin"] == pytest.approx(direct["margin"], abs=1e-5)
    assert a["ties"] == 0 and b["accuracy"] == pytest.approx(1 - a["accuracy"])  # swapping the pair flips every verdict
    assert b["margin"] == pytest.approx(-a["margin"], abs=1e-5)


@pytest.mark.parametrize("argv,message", [
    (["nope"], "unknown eval task 'nope'"),
    (["ppl", "--data", "/no/such/file.jsonl"], "/no/such/file.jsonl does not exist"),
    (["ppl", "--data", "{data}", "text_column=body"], "column 'body' not in"),
    (["ppl", "--data", "{data}", "strde=3"], "unknown option 'strde' (did you mean 'stride'?)"),
    (["choice", "--data", "{data}"], "no 'answer' column"),
    (["rm", "--data", "{data}"], "not a reward model"),
])
def test_bad_input_fails_in_one_line_before_ray(tiny_model_dir, tmp_path, argv, message):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "hello", "question": "q?", "A": "1", "B": "2"}) + "\n")
    argv = [a.replace("{data}", str(data)) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_model_dir)]
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "eval.py"), *argv], capture_output=True, text=True,
                         timeout=120, env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                           "HF_HUB_OFFLINE": "1", "RAYMILL_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and out.stderr.count("error:") == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Started a local Ray" not in out.stderr
