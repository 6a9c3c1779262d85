"""A curate run whose model stages are switched off never imports torch or transformers: the
stages are built and run on a page in a fresh interpreter (what a pipeline actor does), and
the interpreter's modules are checked afterwards. Importing torch costs a 1-core job ~1-2 s."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
import pyarrow as pa
from curate.config import merge_config, parse_config
from curate.pipeline import StageChain, check_stages
from curate.readers import RAW_SCHEMA

config = parse_config(merge_config(json.loads(sys.argv[1])))
plan = check_stages(config)
chain = StageChain([factory() for _, factory, _ in plan if factory is not None])
body = "<html><body><article>" + "<p>The river rose slowly over the old town and the people watched it.</p>" * 20
page = {"id": "p1", "url": "https://example.org/a", "raw": (body + "</article></body></html>").encode(),
        "source": "probe", "content_type": "text/html", "raw_truncated": False}
out = chain(pa.Table.from_pylist([page], schema=RAW_SCHEMA))
print(json.dumps({"stages": [name for name, _, _ in plan], "rows": out.num_rows,
                  "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def run_probe(overrides: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(overrides)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_disabled_model_stages_import_no_torch():
    got = run_probe({"dedup": {"enabled": False}, "perplexity": {"enabled": False}, "quality": {"enabled": False}})
    assert "extract" in got["stages"] and "langid" in got["stages"] and got["rows"] == 1
    assert "perplexity" not in got["stages"] and "quality" not in got["stages"]
    assert got["heavy"] == [], got
