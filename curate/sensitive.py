"""Sensitive-content label from configurable word lists.

Labels: `sensitive_count` (matches of listed terms) and `sensitive_ratio` (matches per
word, words as in `curate.words`, so CJK characters count one each).

Latin-script terms match whole words, case-insensitively; CJK terms match as substrings
(there are no word boundaries to anchor on). The default lists are deliberately short
and mild: they mark gambling/adult-spam vocabulary typical of junk pages, and a project
is expected to pass its own lists (`terms` or `files`, one term per line).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from curate.stage import Stage, check_name, check_strings, set_column, stage_options
from curate.words import CJK_CHAR, words

DEFAULT_TERMS: dict[str, tuple[str, ...]] = {
    "en": ("casino", "jackpot", "porn", "xxx", "viagra", "escort", "betting", "slot machine", "payday loan", "nude"),
    "zh": ("赌博", "博彩", "色情", "六合彩", "代开发票", "裸聊", "网赌", "彩票网"),
}


def load_terms(terms: dict[str, list[str]] | list[str] | None = None, files: list[str] | None = None) -> list[str]:
    """All terms from the inline lists and the files (one term per line, '#' starts a comment)."""
    out: list[str] = []
    if terms is None and not files:
        terms = DEFAULT_TERMS
    if isinstance(terms, dict):
        for values in terms.values():
            out.extend(values)
    elif terms:
        out.extend(terms)
    for name in files or []:
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"sensitive word list {path} does not exist")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return sorted({t.lower() for t in out if t.strip()})


def build_pattern(terms: list[str]) -> re.Pattern | None:
    if not terms:
        return None
    latin = [re.escape(t) for t in terms if not CJK_CHAR.search(t)]
    cjk = [re.escape(t) for t in terms if CJK_CHAR.search(t)]
    parts = []
    if latin:
        # Longest first so that "slot machine" wins over a shorter overlapping term.
        parts.append(r"\b(?:" + "|".join(sorted(latin, key=len, reverse=True)) + r")\b")
    if cjk:
        parts.append("(?:" + "|".join(sorted(cjk, key=len, reverse=True)) + ")")
    return re.compile("|".join(parts), re.I)


@dataclass
class SensitiveConfig:
    """The `sensitive:` section: `terms` null (the built-in DEFAULT_TERMS), a list, or
    {lang: [terms]}; `files` word lists, one term per line."""

    terms: dict[str, list[str]] | list[str] | None = None
    files: list[str] | None = field(default_factory=list)  # null = none, as before these checks
    text_column: str = "text"

    def __post_init__(self) -> None:
        self.files = [] if self.files is None else self.files
        if isinstance(self.terms, dict):
            for lang, values in self.terms.items():
                check_strings(f"sensitive.terms.{lang}", values)
        elif self.terms is not None:
            check_strings("sensitive.terms", self.terms)
        check_strings("sensitive.files", self.files, non_empty=True)
        # Checked here so a missing list is named before Ray starts, not by every worker.
        for name in self.files:
            if not Path(name).exists():
                raise FileNotFoundError(f"sensitive.files: {name} does not exist")
        check_name("sensitive.text_column", self.text_column)


class SensitiveStage(Stage):
    name = "sensitive"

    def __init__(self, config: SensitiveConfig | Mapping[str, Any] | None = None, **options: Any):
        self.config = stage_options(SensitiveConfig, config, options, self.name)
        self.pattern = build_pattern(load_terms(self.config.terms, self.config.files))

    def label(self, text: str) -> tuple[int, float]:
        if self.pattern is None or not text:
            return 0, 0.0
        count = len(self.pattern.findall(text))
        if not count:
            return 0, 0.0
        return count, count / max(1, len(words(text)))

    def process(self, table: pa.Table) -> pa.Table:
        results = [self.label(t or "") for t in table.column(self.config.text_column).to_pylist()]
        table = set_column(table, "sensitive_count", pa.array([r[0] for r in results], pa.int64()))
        return set_column(table, "sensitive_ratio", pa.array([r[1] for r in results], pa.float64()))
