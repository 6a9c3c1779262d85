"""Navigation menus and link bars that extraction kept as text lines.

Portal pages (Sohu, NetEase, Sina and the like) print their channel menus, breadcrumbs and
article tool bars as one line of short link texts between separators:

    搜狐首页 - 新闻 - 体育 - 娱乐 - 财经 - IT - 汽车 - 房产 - 女人 - 短信
    博客首页 | 注册新的博客 | 控制面板 | 博客论坛 | 博客分类 | 博客搜索
    【发表评论】【打印本文】【关闭窗口】

Extraction keeps them when they sit inside the article's layout table, and the line rules
(FineWeb's punctuation share, C4's sentence count) judge whole documents, so a kept
article carries them. `is_menu_line` recognises such a line by its shape, in any script:
at least `MIN_ITEMS` items once split at menu separators, nearly all of them short (a few
characters of CJK or at most three words elsewhere) and none ending a sentence. Data-table
rows are told apart in two ways: a line printed as a table row ('| a | b |', how extraction
writes tables) is judged cell by cell, by the separators inside a cell only (a menu that sat
in one layout-table cell); and a line whose items are mostly numeric is data, not a menu.
"""
from __future__ import annotations

import re

from curate.words import CJK_CHAR

# Separators menus use between items; '-', '/' and '>' only with spaces around them, so
# hyphenated words, dates and paths stay whole. '\|' is the pipe of an extracted table cell.
_SEPARATORS = re.compile(r"\\\||[|｜·•»›→]|\s+(?:-{1,2}>?|–|—|/|>)\s+")
_CELL_SEPARATORS = re.compile(r"\\\||[｜·•»›→]|\s+(?:-{1,2}>?|–|—|/|>)\s+")  # no bare '|'
_TABLE_CELL = re.compile(r"(?<!\\)\|")  # a bare '|': the boundary of an extracted table cell
_BRACKETED = re.compile(r"【([^】]{1,12})】|\[([^\]]{1,12})\]")
_SENTENCE_END = re.compile("(?:[。！？!?]|(?<![A-Z0-9])\\.)[”\"’』」)）]*$")  # closing quotes may follow
_DIGIT = re.compile(r"\d")
MIN_ITEMS = 5  # a breadcrumb of three or four items is too often a real heading
MIN_BRACKETED = 2  # 【发表评论】【关闭窗口】: tool bars of bracketed actions
MAX_CJK_CHARS = 8  # a CJK menu item ("注册新的博客") is a few characters
MAX_WORDS = 3  # a spaced-script item ("Terms of use")
SHORT_SHARE = 0.8  # items that must be short (a menu may hold one long promotion)


def _short(item: str) -> bool:
    cjk = len(CJK_CHAR.findall(item))
    if cjk:
        return cjk <= MAX_CJK_CHARS and len(item.split()) <= MAX_WORDS
    return len(item.split()) <= MAX_WORDS


def is_menu_line(line: str) -> bool:
    text = line.strip()
    if text.startswith("|"):  # a table row: a menu only inside one of its cells
        return any(_is_menu(cell.strip(), _CELL_SEPARATORS) for cell in _TABLE_CELL.split(text))
    return _is_menu(text, _SEPARATORS)


def _is_menu(text: str, separators: re.Pattern) -> bool:
    if not text:
        return False
    bracketed = _BRACKETED.findall(text)
    if len(bracketed) >= MIN_BRACKETED and not _BRACKETED.sub("", text).strip(" |·-"):
        return True
    items = [item.strip() for item in separators.split(text)]
    items = [item for item in items if item]
    if len(items) < MIN_ITEMS:
        return False
    if sum(bool(_DIGIT.search(item)) for item in items) * 2 > len(items):
        return False  # a data-table row
    if any(_SENTENCE_END.search(item) for item in items):
        return False
    return sum(_short(item) for item in items) >= SHORT_SHARE * len(items)
