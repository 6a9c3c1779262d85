"""Security hygiene with real processes: an API key only from the environment and never written
anywhere; the dashboard of an embedded Ray bound to loopback."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class FakeOpenAI:
    """A minimal OpenAI-compatible server on loopback that records the Authorization headers it got.
    Every completion is the same short, valid-looking task, so a self-instruct round has something
    to filter and write (kept or dropped, with the raw output) without a model."""

    def __init__(self, model: str = "fake-model"):
        self.authorizations: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test's output quiet
                pass

            def _send(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                owner.authorizations.append(self.headers.get("Authorization", ""))
                self._send({"object": "list", "data": [{"id": model, "object": "model"}]})

            def do_POST(self) -> None:
                owner.authorizations.append(self.headers.get("Authorization", ""))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                text = "Describe the water cycle in three sentences for a ten year old."
                self._send({"id": "x", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_api_key_comes_from_the_environment_and_is_never_written(ray_session, tmp_path, monkeypatch, capfd):
    from jobs.synth import main

    key = "sk-raymill-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    server = FakeOpenAI()
    out, checkpoint = tmp_path / "self_instruct", tmp_path / "si-checkpoint"
    try:
        main(["instructions", "--backend", f"http:fake-model@{server.url}", "--num", "2", "--output", str(out),
              "--checkpoint-dir", str(checkpoint), "--keep-checkpoint", "self_instruct.max_rounds=1"])
    finally:
        server.close()
    # The key was really used, from the environment, on every request...
    assert server.authorizations and set(server.authorizations) == {f"Bearer {key}"}
    # ...and written nowhere: not in the dataset, its card, its config record, the round
    # checkpoints, the job's output, nor the logs of the Ray session that ran it.
    assert (out / "card").is_dir()
    leaked = _files_containing(out, key.encode()) + _files_containing(checkpoint, key.encode())
    assert not leaked, f"the API key is written in {leaked}"
    captured = capfd.readouterr()
    assert key not in captured.out and key not in captured.err
    session_logs = Path(ray_session._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    assert not _files_containing(session_logs, key.encode()), "the API key is in the Ray session's logs"


def test_embedded_ray_dashboard_listens_on_loopback_only(tmp_path):
    """A job run without RAY_ADDRESS starts its own Ray (jobs.common.init_ray), without a
    dashboard unless asked; asked for (RAYMILL_DASHBOARD=1), the dashboard must not listen on a
    public interface. Checked on the real listening sockets."""
    probe = (
        "import json, psutil, ray\n"
        "from jobs.common import init_ray\n"
        "init_ray(1, dashboard=True)\n"
        "url = ray._private.worker.global_worker.node.address_info['webui_url']\n"
        "port = int(url.rsplit(':', 1)[1])\n"
        "hosts = sorted({c.laddr.ip for c in psutil.net_connections('tcp')\n"
        "                if c.status == 'LISTEN' and c.laddr.port == port})\n"
        "print('DASHBOARD', json.dumps({'url': url, 'hosts': hosts}))\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), RAY_TRAIN_V2_ENABLED="1")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("DASHBOARD "))
    found = json.loads(line.split(" ", 1)[1])
    if not found["url"]:
        pytest.skip("this Ray has no dashboard (ray[default] not installed)")
    assert found["hosts"], f"nothing listens on the dashboard port of {found['url']}"
    assert set(found["hosts"]) <= {"127.0.0.1", "::1"}, found  # never 0.0.0.0 or the node's own IP
