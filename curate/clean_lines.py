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

import pyarrow as pa

from curate.heuristics import TERMINAL_PUNCT
from curate.menu_lines import is_menu_line
from curate.stage import Stage, mark_drops, set_column
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


class CleanLinesStage(Stage):
    name = "clean_lines"

    def __init__(self, boilerplate: tuple[str, ...] | list[str] = DEFAULT_BOILERPLATE,
                 require_terminal_punct: bool = False, min_words_per_line: int = 0,
                 max_word_length: int = 1000, remove_citations: bool = True, remove_menu_lines: bool = True,
                 text_column: str = "text"):
        self.boilerplate = tuple(s.lower() for s in boilerplate)
        self.require_terminal_punct = require_terminal_punct
        self.min_words_per_line = min_words_per_line
        self.max_word_length = max_word_length
        self.remove_citations = remove_citations
        self.remove_menu_lines = remove_menu_lines
        self.text_column = text_column

    def _keep(self, line: str) -> bool:
        lower = line.lower()
        if any(b in lower for b in self.boilerplate):
            return False
        if self.remove_menu_lines and is_menu_line(line):
            return False
        if self.require_terminal_punct and not line.rstrip().endswith(TERMINAL_PUNCT):
            return False
        if self.min_words_per_line or self.max_word_length:
            ws = words(line) if self.min_words_per_line else line.split()
            if self.min_words_per_line and len(ws) < self.min_words_per_line:
                return False
            if self.max_word_length and any(len(w) > self.max_word_length for w in line.split()):
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
            if self.remove_citations and "[" in line:
                line = CITATION.sub("", line).rstrip()
                if not line.strip():
                    removed += 1
                    continue
            out.append(line)
        cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
        return cleaned, removed

    def process(self, table: pa.Table) -> pa.Table:
        texts = table.column(self.text_column).to_pylist()
        results = [self.clean(t or "") for t in texts]
        table = set_column(table, self.text_column, pa.array([r[0] for r in results], pa.string()))
        table = set_column(table, "lines_removed", pa.array([r[1] for r in results], pa.int64()))
        return mark_drops(table, [not r[0] for r in results], EMPTY_AFTER_CLEANING, self.name)
