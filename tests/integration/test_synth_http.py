"""The OpenAI-compatible HTTP backend against a real server on loopback.

`transformers serve` serves the tiny model; a small forwarding proxy in front of it
answers some requests with 503 (retried by Ray Data LLM) or 500, so the retry and
error-counting paths run against real HTTP too. The proxy is ours because a real
server has no switch to fail on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from synth.backends import BackendUnavailable, ChatRequest, SamplingParams, make_backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(tiny_model_dir):
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    if not Path(exe).exists():
        pytest.skip("the transformers CLI is not installed")
    port = _free_port()
    log = open(Path(tiny_model_dir).parent / "serve.log", "w")
    proc = subprocess.Popen([exe, "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited early: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("transformers serve did not start within 180 s")
    yield url, str(tiny_model_dir)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


class FaultyProxy:
    """Forwards to the real server; the first `fail_first` chat requests get 503, requests whose
    prompt contains ALWAYS503 always get 503, and those containing E500 get a JSON 500."""

    def __init__(self, upstream: str, fail_first: int):
        self.upstream, self.fail_first = upstream, fail_first
        self.chat_requests, self.auth_headers = 0, set()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with urllib.request.urlopen(proxy.upstream + self.path) as resp:
                    self._send(resp.status, resp.read())

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.chat_requests += 1
                    n = proxy.chat_requests
                    proxy.auth_headers.add(self.headers.get("Authorization"))
                text = json.loads(body)["messages"][-1]["content"]
                if "ALWAYS503" in text or n <= proxy.fail_first:
                    return self._send(503, b'{"error": {"message": "overloaded"}}')
                if "E500" in text:
                    return self._send(500, b'{"error": {"message": "internal failure"}}')
                req = urllib.request.Request(proxy.upstream + self.path, data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req) as resp:
                    self._send(resp.status, resp.read())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_unreachable_server_fails_before_any_work():
    backend = make_backend(f"http:m@http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(BackendUnavailable, match="cannot reach the OpenAI-compatible server"):
        backend.check_ready()


@pytest.mark.slow
def test_http_backend_real_server_with_retries_and_errors(served_model, ray_session, monkeypatch):
    url, model = served_model
    with pytest.raises(BackendUnavailable, match="does not list model"):
        make_backend(f"http:no-such-model@{url}/v1").check_ready()

    monkeypatch.setenv("RAYMILL_TEST_KEY", "sk-test-secret")
    proxy = FaultyProxy(url, fail_first=2)
    try:
        backend = make_backend({"kind": "http", "model": model, "base_url": f"{proxy.url}/v1",
                                "api_key_env": "RAYMILL_TEST_KEY", "max_retries": 2, "base_retry_wait_s": 0.05,
                                "batch_size": 4})
        backend.check_ready()
        assert "sk-test-secret" not in repr(backend) and "sk-test-secret" not in backend.identity
        requests = [ChatRequest(f"ok{i}", [{"role": "user", "content": f"Say something about {i}."}]) for i in range(3)]
        requests += [ChatRequest("down", [{"role": "user", "content": "ALWAYS503 please"}]),
                     ChatRequest("boom", [{"role": "user", "content": "E500 please"}])]
        out = backend.generate(requests, SamplingParams(n=2, max_tokens=6, temperature=0.8))
    finally:
        proxy.close()
    assert [(c.request_id, c.sample_index) for c in out] == [(r.request_id, i) for r in requests for i in range(2)]
    good = [c for c in out if c.request_id.startswith("ok")]
    # The first two requests met a 503 and were retried: every ordinary request succeeded.
    assert all(c.ok and c.finish_reason in ("stop", "length") and c.prompt_tokens > 0 for c in good)
    assert all(0 < c.completion_tokens <= 6 for c in good)
    down = [c for c in out if c.request_id == "down"]
    assert all(not c.ok and "retries" in c.error for c in down)
    boom = [c for c in out if c.request_id == "boom"]
    assert all(not c.ok and "internal failure" in c.error for c in boom)
    # 10 samples, 2 extra tries for the first 503s, 2 extra tries for each of the 2 "down" samples.
    assert proxy.chat_requests == 10 + 2 + 4
    assert proxy.auth_headers == {"Bearer sk-test-secret"}
