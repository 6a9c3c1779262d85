"""C4-style line cleaning: a modifier that rewrites `text` line by line.

Removed lines: boilerplate notices (cookies, javascript, terms of use, privacy policy,
"all rights reserved" ...), optionally lines that do not end in terminal punctuation
and lines with too few words (C4 keeps only such lines; off by default because it also
removes headings and list items that extraction kept on purpose), and lines holding a
word longer than `max_word_length`, and navigation menus / link bars kept as text lines
(curate.menu_lines: "首页 - 新闻 - 体育 - 娱乐 - ...", "【发表评论】【关闭窗口】"). Citation markers such as "[1]", "[edit]" and
"[citation needed]" are cut out of the lines that stay.

Labels: `lines_removed` (int). A document left with no text is dropped with reason
`empty_after_cleaning`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from curate.heuristics import TERMINAL_PUNCT
from curate.menu_lines import is_menu_line
from curate.stage import Stage, check_bool, check_int, check_name, check_strings, mark_drops, set_column, stage_options
from curate.words import words

EMPTY_AFTER_CLEANING = "empty_after_cleaning"

DEFAULT_BOILERPLATE = (
    "javascript",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
    "accept cookies",
    "accept all cookies",
    "cookie settings",
    "terms of use",
    "terms of service",
    "terms and conditions",
    "privacy policy",
    "all rights reserved",
    "sign up for our newsletter",
    "subscribe to our newsletter",
    "本网站使用cookie",
    "隐私政策",
    "版权所有",
    "网友评论仅供其表达个人看法",  # Chinese portals' comment notice (issue 16: taken for the article)
    "利用規約",
    "プライバシーポリシー",
)
CITATION = re.compile(r"\[(?:\d{1,3}(?:[,\u2013-]\d{1,3})*|edit|citation needed|update|clarification needed)\]", re.I)


@dataclass
class CleanLinesConfig:
    """The `clean_lines:` section (keys documented in default_config.yaml)."""

    boilerplate: tuple[str, ...] | list[str] = DEFAULT_BOILERPLATE  # notice substrings; replaces the built-in list
    require_terminal_punct: bool = False
    min_words_per_line: int | None = 0  # 0 (or null) = no minimum
    max_word_length: int | None = 1000  # 0 (or null) = no limit
    remove_citations: bool = True
    remove_menu_lines: bool = True
    text_column: str = "text"

    def __post_init__(self) -> None:
        # An empty notice is a substring of every line: it would empty every document.
        check_strings("clean_lines.boilerplate", self.boilerplate, non_empty=True)
        for name in ("require_terminal_punct", "remove_citations", "remove_menu_lines"):
            check_bool(f"clean_lines.{name}", getattr(self, name))
        # null worked as "off" before these checks existed, so it still does.
        check_int("clean_lines.min_words_per_line", self.min_words_per_line, nullable=True)
        check_int("clean_lines.max_word_length", self.max_word_length, nullable=True)
        check_name("clean_lines.text_column", self.text_column)


class CleanLinesStage(Stage):
    name = "clean_lines"

    def __init__(self, config: CleanLinesConfig | Mapping[str, Any] | None = None, **options: Any):
        self.config = stage_options(CleanLinesConfig, config, options, self.name)
        self.boilerplate = tuple(s.lower() for s in self.config.boilerplate)

    def _keep(self, line: str) -> bool:
        options = self.config
        lower = line.lower()
        if any(b in lower for b in self.boilerplate):
            return False
        if options.remove_menu_lines and is_menu_line(line):
            return False
        if options.require_terminal_punct and not line.rstrip().endswith(TERMINAL_PUNCT):
            return False
        if options.min_words_per_line and len(words(line)) < options.min_words_per_line:
            return False
        if options.max_word_length and any(len(w) > options.max_word_length for w in line.split()):
            return False
        return True

    def clean(self, text: str) -> tuple[str, int]:
        """(cleaned text, number of non-blank lines removed); blank lines are kept as separators."""
        out: list[str] = []
        removed = 0
        for line in text.split("\n"):
            if not line.strip():
                out.append("")
                continue
            if not self._keep(line):
                removed += 1
                continue
            if self.config.remove_citations and "[" in line:
                line = CITATION.sub("", line).rstrip()
                if not line.strip():
                    removed += 1
                    continue
            out.append(line)
        cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
        return cleaned, removed

    def process(self, table: pa.Table) -> pa.Table:
        texts = table.column(self.config.text_column).to_pylist()
        results = [self.clean(t or "") for t in texts]
        table = set_column(table, self.config.text_column, pa.array([r[0] for r in results], pa.string()))
        table = set_column(table, "lines_removed", pa.array([r[1] for r in results], pa.int64()))
        return mark_drops(table, [not r[0] for r in results], EMPTY_AFTER_CLEANING, self.name)
