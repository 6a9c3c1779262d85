"""jobs/chat.py in a real pseudo-terminal (tmux): it answers with streamed tokens, keeps the
history, /reset clears it, /system sets the system prompt and /exit exits 0. The model is the
tiny one fine-tuned in-process for a few dozen steps to answer every message the same way."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
REPLY = "hello there friend"


def train_constant_reply(base: Path, out: Path, reply: str = REPLY, steps: int = 30) -> Path:
    """Fine-tune the tiny model on ChatML conversations that always end with `reply`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.templates import get_template
    from train.tokenize import encode_sft

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    template = get_template("chatml")
    users = ["hi", "how are you", "tell me a story", "what is the weather", "名字", "describe the river", "ok"]
    examples = []
    for i, first in enumerate(users):
        messages = [{"role": "user", "content": first}, {"role": "assistant", "content": reply}]
        if i % 2:  # two-turn conversations too, so the reply does not depend on being the first turn
            messages += [{"role": "user", "content": users[(i + 3) % len(users)]}, {"role": "assistant", "content": reply}]
        encoded = encode_sft({"messages": messages, "system": "Be kind." if i % 3 == 0 else None}, tokenizer, template, 256)
        examples.append((encoded.input_ids, encoded.labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        ids, labels = examples[step % len(examples)]
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reply_model(tiny_model_dir, tmp_path_factory):
    return train_constant_reply(tiny_model_dir, tmp_path_factory.mktemp("reply_model"))


def test_session_history_reset_and_system_without_a_terminal(reply_model):
    from train.chat import SamplingOptions, open_session, run_chat

    session = open_session(str(reply_model), sampling=SamplingOptions(temperature=0, max_new_tokens=12))
    assert "".join(session.reply("hi")) == REPLY
    assert "".join(session.reply("tell me a story")).strip() == REPLY
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.prompt_text().count("<|im_start|>user") == 2  # the next prompt carries both turns
    session.command("/system Be kind.")
    assert session.prompt_text().startswith("<|im_start|>system\nBe kind.<|im_end|>")
    assert session.command("/reset") == (True, "history cleared") and session.messages == []
    lines = iter(["hi", "/history", "/exit", "never read"])
    out: list[str] = []
    assert run_chat(session, lambda prompt: next(lines), out.append) == 0
    assert "history: 2 messages" in "".join(out) and f"assistant: {REPLY}" in "".join(out)


# ---------------------------------------------------------------- the real terminal
class Tmux:
    def __init__(self, command: str, width: int = 160, height: int = 50):
        self.name = f"raymill-chat-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command],
                       check=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout

    def send(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def wait_for(self, predicate, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting; the terminal shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install -y tmux) for a real pseudo-terminal")
def test_chat_in_a_real_terminal(reply_model, tmp_path):
    rc_file = tmp_path / "rc"
    chat = f"{sys.executable} {REPO / 'jobs' / 'chat.py'} --model {reply_model} --temperature 0 --max-new-tokens 12"
    # The shell stays alive after the chat ends, so the exit status can be read and the pane inspected.
    tmux = Tmux(f"sh -c '{chat}; echo $? > {rc_file}; sleep 60'")
    try:
        tmux.wait_for(lambda s: s.rstrip().endswith("User:"))
        tmux.send("hi")
        tmux.wait_for(lambda s: f"Assistant: {REPLY}" in s and s.rstrip().endswith("User:"))
        tmux.send("how are you")
        tmux.wait_for(lambda s: s.count(f"Assistant: {REPLY}") == 2 and s.rstrip().endswith("User:"))
        tmux.send("/history")
        screen = tmux.wait_for(lambda s: "history: 4 messages" in s)
        assert "user: hi" in screen and "user: how are you" in screen and f"assistant: {REPLY}" in screen
        tmux.send("/system Answer briefly.")
        tmux.wait_for(lambda s: "system prompt set: Answer briefly." in s)
        tmux.send("/reset")
        tmux.wait_for(lambda s: "history cleared" in s)
        tmux.send("/history")
        screen = tmux.wait_for(lambda s: "history: 0 messages" in s)
        assert "system: Answer briefly." in screen.split("history: 0 messages")[-1]
        tmux.send("/exit")
        deadline = time.monotonic() + 30
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rc_file.read_text().strip() == "0"
    finally:
        tmux.close()
