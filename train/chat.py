"""A terminal chat with a trained model: multi-turn history, streamed tokens, a few commands.

Commands: /reset (forget the conversation), /system TEXT (set the system prompt; empty
clears it), /history (show the conversation), /help, /exit (or end of input).
Prompts are rendered with the same train.templates template the model was trained with,
and generation stops at that template's end-of-turn token as well as at EOS.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterator

HELP = "commands: /reset, /system TEXT, /history, /help, /exit"
USER_PROMPT = "User: "
ASSISTANT_PREFIX = "Assistant: "


@dataclass
class SamplingOptions:
    temperature: float = 0.7     # 0 = greedy
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("chat: need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1")
        if self.repetition_penalty <= 0:
            raise ValueError("chat: repetition_penalty must be > 0")

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None,
                    "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_new_tokens}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None,
                "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_new_tokens}


class ChatSession:
    def __init__(self, model, tokenizer, template, sampling: SamplingOptions | None = None, system: str | None = None):
        from train.export import stop_token_ids

        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.sampling = sampling or SamplingOptions()
        self.system = system or None
        self.messages: list[dict[str, str]] = []
        self.stop_ids = stop_token_ids(tokenizer, template.name)

    def prompt_text(self) -> str:
        return self.template.render_generation_prompt(self.messages, system=self.system, eos_token=self.tokenizer.eos_token)

    def reply(self, user_text: str) -> Iterator[str]:
        """Stream the answer to `user_text`; the turn joins the history once the answer is complete."""
        import torch
        from transformers import TextIteratorStreamer

        self.messages.append({"role": "user", "content": user_text})
        ids = self.tokenizer(self.prompt_text(), add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(next(self.model.parameters()).device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if self.sampling.seed is not None:
            torch.manual_seed(self.sampling.seed)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                        eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
                                        **self.sampling.generate_kwargs())
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        try:
            for piece in streamer:
                pieces.append(piece)
                yield piece
        finally:
            worker.join()
        if failure:
            self.messages.pop()
            raise failure[0]
        self.messages.append({"role": "assistant", "content": "".join(pieces).strip()})

    def command(self, line: str) -> tuple[bool, str]:
        """(keep going, text to show) for a /command line."""
        name, _, argument = line.strip().partition(" ")
        if name in ("/exit", "/quit"):
            return False, ""
        if name == "/reset":
            self.messages.clear()
            return True, "history cleared"
        if name == "/system":
            self.system = argument.strip() or None
            return True, f"system prompt set: {self.system}" if self.system else "system prompt cleared"
        if name == "/history":
            lines = [f"history: {len(self.messages)} messages"] + ([f"  system: {self.system}"] if self.system else [])
            return True, "\n".join(lines + [f"  {m['role']}: {m['content']}" for m in self.messages])
        if name == "/help":
            return True, HELP
        return True, f"unknown command {name}; {HELP}"


def run_chat(session: ChatSession, read_line: Callable[[str], str], write: Callable[[str], None]) -> int:
    """The read-reply loop; returns the exit status (0 on /exit or end of input)."""
    write(f"{HELP}\n")
    while True:
        try:
            line = read_line(USER_PROMPT)
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        if not line.strip():
            continue
        if line.startswith("/"):
            keep_going, text = session.command(line)
            if not keep_going:
                return 0
            write(text + "\n")
            continue
        write(ASSISTANT_PREFIX)
        for piece in session.reply(line):
            write(piece)
        write("\n")


def open_session(model: str, adapter: str | None = None, template: str | None = None, system: str | None = None,
                 sampling: SamplingOptions | None = None, dtype: str = "fp32") -> ChatSession:
    """Load a run / model / adapter directory and its template (the run's, else the tokenizer's own)."""
    import torch

    from train.run_models import load_model, load_tokenizer, resolve_model
    from train.templates import get_template

    resolved = resolve_model(model, adapter)
    if resolved.is_reward_model:
        raise ValueError(f"chat: {model} is a reward model; it scores answers and cannot write them")
    tokenizer = load_tokenizer(resolved)
    name = template or resolved.template or "tokenizer"
    if name == "tokenizer" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"chat: the tokenizer of {model} has no chat template; pass --template NAME")
    chat_template = get_template(name, tokenizer)
    device = "cuda" if torch.cuda.is_available() else None
    return ChatSession(load_model(resolved, dtype=dtype, merge=True, device=device), tokenizer, chat_template,
                       sampling, system)
