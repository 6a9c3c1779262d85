"""Chat templates: render a conversation into text pieces that say which text is trained.

A template turns (system, messages, tools) into a list of `Segment(text, is_assistant)`.
Assistant segments hold what the model must learn to produce: the reply and the
template's stop string right after it (`<|im_end|>`, `<|eot_id|>`, or the tokenizer's
EOS), so a trained model learns to stop after every turn. Everything else (headers,
user turns, tool results, separators) is prompt.

Built-in templates render exactly what each family's published chat format renders:

- `chatml`:  `<|im_start|>{role}\\n{content}<|im_end|>\\n`, no default system prompt
  (the tiny model's format; tool turns as in Qwen2.5).
- `qwen`:    Qwen2.5's ChatML. Decision: like Qwen2.5's own template it inserts the
  default system prompt "You are Qwen, created by Alibaba Cloud. You are a helpful
  assistant." when the conversation has none. Tools go into the system turn, calls
  as `<tool_call>` JSON, results as `<tool_response>` inside a user turn.
- `llama3`:  Llama 3 (`<|begin_of_text|>`, header ids, `<|eot_id|>`, contents trimmed);
  tool calls and results as in Llama 3.1 (`{"name", "parameters"}` JSON, `ipython`
  role). Llama 3.1 puts the tool list into the first user turn with a date header;
  we put it into the system turn in our own wording instead.
- `vicuna`:  Vicuna v1.1 (`{system} USER: ... ASSISTANT: ...</s>`), stop = EOS.
- `alpaca`:  the Stanford Alpaca prompt (`### Instruction:` / `### Response:`), stop = EOS.
- `default`: plain `Human: ...\\nAssistant: ...`, stop = EOS.
- `tokenizer`: the tokenizer's own `chat_template`, with assistant spans found by
  rendering prefixes of the conversation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

Message = dict[str, Any]


class Segment(NamedTuple):
    text: str
    is_assistant: bool


class TemplateError(ValueError):
    """The conversation cannot be rendered by this template (e.g. tool turns where unsupported)."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
VICUNA_DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ALPACA_DEFAULT_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


def parse_tool_calls(value: Any) -> list[dict[str, Any]]:
    """Tool calls as a list of {"name", "arguments": dict}; accepts our JSON string or HF's
    `{"type": "function", "function": {...}}` items. Arguments given as JSON text are parsed."""
    if not value:
        return []
    calls = json.loads(value) if isinstance(value, str) else value
    if isinstance(calls, dict):
        calls = [calls]
    out = []
    for call in calls:
        if not isinstance(call, dict):
            raise TemplateError("bad_tool_calls", f"tool call {call!r} is not an object")
        call = call.get("function", call)
        if "name" not in call:
            raise TemplateError("bad_tool_calls", f"tool call {call!r} has no name")
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise TemplateError("bad_tool_calls", f"arguments of {call['name']!r} are not JSON") from None
        out.append({"name": call["name"], "arguments": args})
    return out


def parse_tools(value: Any) -> list[Any]:
    if not value:
        return []
    tools = json.loads(value) if isinstance(value, str) else value
    return list(tools) if isinstance(tools, (list, tuple)) else [tools]


class _Builder:
    """Collects segments, merging neighbouring prompt text into one segment."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def prompt(self, text: str) -> None:
        if not text:
            return
        if self.segments and not self.segments[-1].is_assistant:
            self.segments[-1] = Segment(self.segments[-1].text + text, False)
        else:
            self.segments.append(Segment(text, False))

    def answer(self, text: str) -> None:
        self.segments.append(Segment(text, True))


@dataclass(frozen=True)
class Template:
    """One chat format. `stop=None` means the tokenizer's EOS token ends assistant turns."""

    name: str
    stop: str | None
    supports_tools: bool = False

    def stop_text(self, eos_token: str | None) -> str:
        if self.stop is not None:
            return self.stop
        if not eos_token:
            raise TemplateError("no_eos_token", f"template {self.name!r} ends turns with EOS but none was given")
        return eos_token

    def render(self, messages: Sequence[Message], system: str | None = None, tools: Any = None,
               eos_token: str | None = "</s>") -> list[Segment]:
        """Segments of the whole conversation; `text` joined is the full rendered string."""
        if not self.supports_tools and (tools or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)):
            raise TemplateError("tool_turn_unsupported", f"template {self.name!r} has no tool-call format")
        builder = _Builder()
        self._render(builder, list(messages), system, parse_tools(tools), self.stop_text(eos_token))
        return builder.segments

    def render_text(self, messages: Sequence[Message], system: str | None = None, tools: Any = None,
                    eos_token: str | None = "</s>") -> str:
        return "".join(s.text for s in self.render(messages, system, tools, eos_token))

    def render_generation_prompt(self, messages: Sequence[Message], system: str | None = None, tools: Any = None,
                                 eos_token: str | None = "</s>") -> str:
        """Text up to where the assistant's next reply starts (for sampling and preference pairs)."""
        segments = self.render(list(messages) + [{"role": "assistant", "content": "\x00"}], system, tools, eos_token)
        last = max(i for i, s in enumerate(segments) if s.is_assistant)
        return "".join(s.text for s in segments[:last])

    def _render(self, b: _Builder, messages: list[Message], system: str | None, tools: list, stop: str) -> None:
        raise NotImplementedError


def _content(m: Message) -> str:
    return m.get("content") or ""


class ChatMLTemplate(Template):
    """ChatML with Qwen2.5's tool format; `default_system` is Qwen's behaviour."""

    def __init__(self, name: str, default_system: str | None):
        super().__init__(name=name, stop="<|im_end|>", supports_tools=True)
        object.__setattr__(self, "default_system", default_system)

    def _system_turn(self, system: str | None, tools: list) -> str:
        system = system or self.default_system
        if not tools:
            return f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        listing = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        block = (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
            f"{listing}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )
        return f"<|im_start|>system\n{system + chr(10) * 2 if system else ''}{block}<|im_end|>\n"

    def _render(self, b, messages, system, tools, stop):
        b.prompt(self._system_turn(system, tools))
        for i, m in enumerate(messages):
            role = m["role"]
            if role == "user":
                b.prompt(f"<|im_start|>user\n{_content(m)}<|im_end|>\n")
            elif role == "assistant":
                calls = parse_tool_calls(m.get("tool_calls"))
                if calls:
                    b.prompt("<|im_start|>assistant")
                    body = ("\n" + _content(m)) if _content(m) else ""
                    for c in calls:
                        body += ('\n<tool_call>\n{"name": "' + c["name"] + '", "arguments": '
                                 + json.dumps(c["arguments"], ensure_ascii=False) + "}\n</tool_call>")
                else:
                    b.prompt("<|im_start|>assistant\n")
                    body = _content(m)
                b.answer(body + stop)
                b.prompt("\n")
            elif role == "tool":
                # Consecutive tool results share one user turn, as in Qwen2.5.
                if i == 0 or messages[i - 1]["role"] != "tool":
                    b.prompt("<|im_start|>user")
                b.prompt(f"\n<tool_response>\n{_content(m)}\n</tool_response>")
                if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                    b.prompt("<|im_end|>\n")
            else:
                raise TemplateError("unknown_role", f"role {role!r}")


class Llama3Template(Template):
    def __init__(self):
        super().__init__(name="llama3", stop="<|eot_id|>", supports_tools=True)

    @staticmethod
    def _header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    def _render(self, b, messages, system, tools, stop):
        b.prompt("<|begin_of_text|>")
        system_text = (system or "").strip()
        if tools:
            listing = "\n\n".join(json.dumps(t, indent=4, ensure_ascii=False) for t in tools)
            system_text = (system_text + "\n\n" if system_text else "") + (
                "You can call these functions. To call one, reply with only a JSON object of the form "
                '{"name": function name, "parameters": object of argument names and values}.\n\n' + listing)
        if system_text:
            b.prompt(self._header("system") + system_text + "<|eot_id|>")
        for m in messages:
            role = m["role"]
            if role == "user":
                b.prompt(self._header("user") + _content(m).strip() + "<|eot_id|>")
            elif role == "assistant":
                calls = parse_tool_calls(m.get("tool_calls"))
                if len(calls) > 1:
                    raise TemplateError("tool_turn_unsupported", "llama3 takes one tool call per assistant turn")
                b.prompt(self._header("assistant"))
                if calls:
                    body = ('{"name": "' + calls[0]["name"] + '", "parameters": '
                            + json.dumps(calls[0]["arguments"], ensure_ascii=False) + "}")
                else:
                    body = _content(m).strip()
                b.answer(body + stop)
            elif role == "tool":
                b.prompt(self._header("ipython") + _content(m).strip() + "<|eot_id|>")
            else:
                raise TemplateError("unknown_role", f"role {role!r}")


class VicunaTemplate(Template):
    def __init__(self):
        super().__init__(name="vicuna", stop=None)

    def _render(self, b, messages, system, tools, stop):
        b.prompt((system or VICUNA_DEFAULT_SYSTEM) + " ")
        for m in messages:
            if m["role"] == "user":
                b.prompt(f"USER: {_content(m)} ")
            elif m["role"] == "assistant":
                b.prompt("ASSISTANT: ")
                b.answer(_content(m) + stop)
            else:
                raise TemplateError("unknown_role", f"role {m['role']!r}")


class AlpacaTemplate(Template):
    def __init__(self):
        super().__init__(name="alpaca", stop=None)

    def _render(self, b, messages, system, tools, stop):
        b.prompt((system or ALPACA_DEFAULT_SYSTEM) + "\n\n")
        for i, m in enumerate(messages):
            if m["role"] == "user":
                b.prompt(("\n\n" if i else "") + f"### Instruction:\n{_content(m)}\n\n### Response:\n")
            elif m["role"] == "assistant":
                b.answer(_content(m) + stop)
            else:
                raise TemplateError("unknown_role", f"role {m['role']!r}")


class DefaultTemplate(Template):
    def __init__(self):
        super().__init__(name="default", stop=None)

    def _render(self, b, messages, system, tools, stop):
        if system:
            b.prompt(system + "\n")
        for i, m in enumerate(messages):
            if m["role"] == "user":
                b.prompt(("\n" if i else "") + f"Human: {_content(m)}\nAssistant: ")
            elif m["role"] == "assistant":
                b.answer(_content(m) + stop)
            else:
                raise TemplateError("unknown_role", f"role {m['role']!r}")


class TokenizerTemplate(Template):
    """The tokenizer's own chat template. Assistant spans come from rendering prefixes:
    the text the template adds between `messages[:i]` + generation prompt and
    `messages[:i+1]` is turn i's reply. The reply ends with the template's stop string,
    found once by rendering a probe reply and taking the first special token after it;
    a template that closes no turn gets the EOS token appended to every reply."""

    _PROBE = "raymill probe reply"

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or "given"
            raise ValueError(f"the {name} tokenizer has no chat template: pass --template with one of "
                             f"{', '.join(_BUILTIN)}")
        super().__init__(name="tokenizer", stop=None, supports_tools=True)
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "stop", self._find_stop())

    def _find_stop(self) -> str | None:
        specials = set(self.tokenizer.all_special_tokens) | {str(t) for t in self.tokenizer.get_added_vocab()}
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": self._PROBE}]
        text = self._apply(probe, [], False)
        after = text.rfind(self._PROBE)
        if after < 0:
            raise ValueError("the tokenizer's chat template does not render assistant replies verbatim")
        after += len(self._PROBE)
        found = [(text.find(tok, after), tok) for tok in specials if text.find(tok, after) >= 0]
        return min(found)[1] if found else None

    def render(self, messages, system=None, tools=None, eos_token=None):
        return self._segments(list(messages), system, parse_tools(tools), eos_token or self.tokenizer.eos_token)

    def _hf_messages(self, messages: list[Message], system: str | None) -> list[dict]:
        out = [{"role": "system", "content": system}] if system else []
        for m in messages:
            item: dict[str, Any] = {"role": m["role"], "content": _content(m)}
            calls = parse_tool_calls(m.get("tool_calls"))
            if calls:
                item["tool_calls"] = [{"type": "function", "function": c} for c in calls]
            out.append(item)
        return out

    def _apply(self, messages: list[dict], tools: list, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _segments(self, messages, system, tools, eos_token):
        hf = self._hf_messages(messages, system)
        offset = 1 if system else 0
        full = self._apply(hf, tools, False)
        b = _Builder()
        cursor = 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._apply(hf[: i + offset], tools, True)
            through = self._apply(hf[: i + offset + 1], tools, False)
            if not (through.startswith(before) and full.startswith(through)):
                raise TemplateError("template_prefix_mismatch",
                                    "the tokenizer's chat template renders earlier turns differently later on")
            span = through[len(before):]
            # A template that ignores add_generation_prompt renders the reply's header (e.g.
            # "assistant: ") inside the span: everything before the reply text is prompt.
            reply = _content(m).strip()
            start = span.find(reply) if reply and reply in span else 0
            b.prompt(full[cursor:len(before)] + span[:start])
            span = span[start:]
            end = span.rfind(self.stop) + len(self.stop) if self.stop and self.stop in span else None
            if end is None:
                b.answer(span.rstrip() + eos_token)
                b.prompt(span[len(span.rstrip()):])
            else:
                b.answer(span[:end])
                b.prompt(span[end:])
            cursor = len(through)
        b.prompt(full[cursor:])
        return b.segments


_BUILTIN = {
    "default": DefaultTemplate,
    "alpaca": AlpacaTemplate,
    "vicuna": VicunaTemplate,
    "chatml": lambda: ChatMLTemplate("chatml", None),
    "qwen": lambda: ChatMLTemplate("qwen", QWEN_DEFAULT_SYSTEM),
    "llama3": Llama3Template,
}
TEMPLATE_NAMES: tuple[str, ...] = tuple(_BUILTIN) + ("tokenizer",)


def get_template(name: str | None, tokenizer=None) -> Template:
    """A template by name; `tokenizer` is needed (only) for name='tokenizer'.

    One rule for every stage and for synth: no name (None) means the tokenizer's own chat
    template; a tokenizer without one is an error that lists the built-in names."""
    if name is None or name == "tokenizer":
        if tokenizer is None:
            raise ValueError("template 'tokenizer' needs the tokenizer whose chat_template it uses")
        return TokenizerTemplate(tokenizer)
    try:
        return _BUILTIN[name]()
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {list(TEMPLATE_NAMES)}") from None


def assistant_texts(segments: Iterable[Segment]) -> list[str]:
    return [s.text for s in segments if s.is_assistant]
