"""Bad options and inputs of every job: exit code 2, one `error:` line naming the key, no
traceback, and Ray never started (each case fails in the driver's preflight)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# (job, arguments, text the one error line must hold)
CASES = [
    ("train", ["--stage", "sft", "data_options.pack_windw=8"], "unknown option 'pack_windw' (did you mean 'pack_window'?)"),
    ("train", ["--stage", "dpo", "data_options.bta=0.1"], "unknown data_options ['bta']"),
    ("train", ["--stage", "sft", "--data", "missing-file.jsonl"], "missing-file.jsonl"),
    ("train", ["--stage", "sft", "learning_rat=1e-4"], "unknown training option 'learning_rat'"),
    ("train", ["--stage", "sft", "cutoff_len=long"], "option 'cutoff_len' must be an integer"),
    ("train", ["--stage", "sft", "--template", "llama9"], "unknown template 'llama9'"),
    ("curate", ["extract.favor_precison=true"], "extract: unknown option 'favor_precison'"),
    ("curate", ["runtime.worker=2"], "runtime: unknown option 'worker'"),
    ("curate", ["bogus_section.x=1"], "curate config: unknown option 'bogus_section'"),
    ("curate", ["--input", "no-such-crawl.warc.gz"], "no-such-crawl.warc.gz"),
    ("dedup", ["--input", "no-such-dir", "--output", "out"], "no-such-dir"),
    ("dedup", ["--input", ".", "--output", "out", "dedup.threshhold=0.8"], "threshhold"),
    ("synth", ["instructions", "self_instruct.num_promts=3"], "num_promts"),
    ("synth", ["preferences", "--prompts", "no-such-prompts.jsonl"], "no-such-prompts.jsonl"),
]


@pytest.mark.parametrize("job,args,needle", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_before_ray(tmp_path, job, args, needle):
    result = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, output[-3000:]
    assert len(errors) == 1 and needle in errors[0], output[-3000:]
    assert "Traceback" not in output
    assert "Started a local Ray instance" not in output and not list(tmp_path.glob("**/session_*"))
