"""Filters of generated instructions and instances.

Each filter returns None to keep, or the name of the rule that drops (the reason
stored with the rejected row). The thresholds live in `FilterConfig` so a job
config can change them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from synth.rouge import InstructionPool, Neighbours, is_cjk_text, tokenize

# Things a text-only model cannot see, make or open. Whole words for English.
BLACKLIST_EN = (
    "image", "images", "picture", "pictures", "photo", "photos", "graph", "graphs", "chart", "charts",
    "diagram", "diagrams", "flowchart", "drawing", "draw", "sketch", "plot", "file", "files", "attachment",
    "audio", "video", "videos", "music", "song recording", "listen", "map", "maps", "link", "links", "url",
    "website", "webpage", "download", "upload", "screenshot",
)
# Chinese words, matched as substrings (Chinese has no spaces to mark word boundaries).
BLACKLIST_ZH = (
    "图片", "图像", "照片", "图表", "图形", "示意图", "流程图", "画一", "画出", "绘制", "绘画", "文件", "附件",
    "音频", "录音", "视频", "音乐", "地图", "链接", "网址", "网页", "网站", "下载", "上传", "截图",
)

_EN_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST_EN) + r")\b", re.IGNORECASE)

# Rule names (also the drop reasons written with rejected rows).
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
BLACKLISTED = "blacklisted_word"
NON_LETTER_START = "starts_with_non_letter"
TOO_SIMILAR = "rouge_l_too_similar"
EMPTY_OUTPUT = "empty_output"
SAME_INPUT_OUTPUT = "identical_input_output"
TRUNCATED = "truncated_output"
CONFLICTING = "conflicting_outputs"
DUPLICATE_INSTANCE = "duplicate_instance"


@dataclass
class FilterConfig:
    min_words: int = 3          # English: fewer words -> too_short
    max_words: int = 150
    min_cjk_chars: int = 4      # Chinese: counted in characters
    max_cjk_chars: int = 300
    max_rouge_l: float = 0.7    # drop when ROUGE-L to any existing instruction exceeds this
    keep_neighbours: int = 3
    extra_blacklist: list[str] = field(default_factory=list)


def blacklisted_word(text: str, extra: list[str] | tuple[str, ...] = ()) -> str | None:
    """The first blacklisted word found, or None."""
    m = _EN_BLACKLIST_RE.search(text)
    if m:
        return m.group(1).lower()
    lowered = text.lower()
    for w in list(BLACKLIST_ZH) + list(extra):
        if w.lower() in lowered:
            return w
    return None


def length_rule(text: str, cfg: FilterConfig) -> str | None:
    n = len(tokenize(text))
    low, high = (cfg.min_cjk_chars, cfg.max_cjk_chars) if is_cjk_text(text) else (cfg.min_words, cfg.max_words)
    if n < low:
        return TOO_SHORT
    if n > high:
        return TOO_LONG
    return None


def starts_with_non_letter(text: str) -> bool:
    """Punctuation, digits, symbols or nothing at the start. CJK ideographs count as letters."""
    return not text or not text[0].isalpha()


def instruction_rule(text: str, cfg: FilterConfig) -> str | None:
    """The surface filters, cheapest first (ROUGE-L needs the pool, see `novelty_rule`)."""
    text = text.strip()
    if starts_with_non_letter(text):
        return NON_LETTER_START
    reason = length_rule(text, cfg)
    if reason:
        return reason
    if blacklisted_word(text, cfg.extra_blacklist):
        return BLACKLISTED
    return None


def novelty_rule(text: str, pool: InstructionPool, cfg: FilterConfig) -> tuple[str | None, Neighbours]:
    near = pool.nearest(text, cfg.keep_neighbours)
    return (TOO_SIMILAR if near.best > cfg.max_rouge_l else None), near


def instance_rules(instances: list[dict], finish_reason: str) -> list[str | None]:
    """One reason (or None) per parsed instance of one instruction.

    `instances` are dicts with input/output and `last` (True for the final one in the
    generation). A generation cut at max_tokens leaves its last instance truncated.
    """
    reasons: list[str | None] = []
    for inst in instances:
        out, inp = inst["output"].strip(), inst["input"].strip()
        if inst.get("last") and finish_reason == "length":
            reasons.append(TRUNCATED)
        elif not out:
            reasons.append(EMPTY_OUTPUT)
        elif inp and inp == out:
            reasons.append(SAME_INPUT_OUTPUT)
        else:
            reasons.append(None)
    # Same input, different outputs: the task is ambiguous for that input, drop all of them.
    outputs_by_input: dict[str, set[str]] = {}
    for inst, r in zip(instances, reasons):
        if r is None:
            outputs_by_input.setdefault(inst["input"].strip(), set()).add(inst["output"].strip())
    seen: set[tuple[str, str]] = set()
    for i, inst in enumerate(instances):
        if reasons[i] is not None:
            continue
        key = (inst["input"].strip(), inst["output"].strip())
        if len(outputs_by_input[key[0]]) > 1:
            reasons[i] = CONFLICTING
        elif key in seen:
            reasons[i] = DUPLICATE_INSTANCE
        seen.add(key)
    return reasons
