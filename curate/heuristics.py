"""Heuristic quality labels: the Gopher quality and repetition rules, the C4 rules and the
FineWeb rules, computed as label columns (this stage never drops; `curate.rules` does).

The published default thresholds live in `Thresholds`; the default rule set of
`curate/default_config.yaml` refers to them as `t.<name>` so they exist in one place.

Definitions (a "word" is a token of `curate.words`; lines are the non-blank lines, stripped):

Gopher quality (Rae et al. 2021, appendix A)
- gopher_word_count: number of words. Bounds 50 .. 100,000.
- gopher_mean_word_length: mean length of the words with leading/trailing punctuation
  stripped. Bounds 3 .. 10.
- gopher_symbol_word_ratio: ("#" count + "..." / "…" count) / words. Max 0.1.
- gopher_bullet_lines_ratio: lines starting with a bullet mark / lines. Max 0.9.
- gopher_ellipsis_lines_ratio: lines ending in "..." or "…" / lines. Max 0.3.
- gopher_alpha_words_ratio: words holding a letter / words. Min 0.8.
- gopher_stop_words: words (lower-cased, punctuation stripped) in the language's stop-word
  list (`STOP_WORDS`; English is Gopher's the/be/to/of/and/that/have/with). Min 2.
Gopher repetition
- gopher_dup_line_frac / gopher_dup_para_frac: lines / paragraphs (split on blank lines)
  equal to an earlier one, over all lines / paragraphs. Max 0.30 / 0.30.
- gopher_dup_line_char_frac / gopher_dup_para_char_frac: characters in those repeats over
  all line / paragraph characters. Max 0.20 / 0.20.
- gopher_top_{2,3,4}gram_char_frac: characters covered by the most frequent word n-gram
  over all word characters; 0 when no n-gram repeats. Max 0.20 / 0.18 / 0.16.
- gopher_dup_{5..10}gram_char_frac: characters covered by the repeats (every occurrence
  after the first) of word n-grams, each character once, over all word characters.
  Max 0.15 / 0.14 / 0.13 / 0.12 / 0.11 / 0.10.
C4 (Raffel et al. 2020) — page-level labels; the line-level C4 cleaning is `curate.clean_lines`
- c4_sentence_count: sentence ends ([.!?] before whitespace, or 。！？). Min 5.
- c4_no_terminal_punct_lines_ratio: lines not ending in terminal punctuation / lines.
- c4_lorem_ipsum, c4_curly_bracket: the page holds "lorem ipsum" / "{" (both drop in C4).
- c4_javascript_lines, c4_policy_lines: lines naming javascript / a cookie or terms notice.
- c4_long_word: a word longer than 1,000 characters.
FineWeb (Penedo et al. 2024)
- fineweb_line_punct_ratio: lines ending in terminal punctuation / lines. Min 0.12 (exclusive).
- fineweb_short_line_ratio: lines of at most 30 characters / lines. Max 0.67.
- fineweb_char_dup_ratio: characters of repeated lines / characters without newlines. Max 0.01.
- fineweb_list_ratio: newlines / words. Max 0.3.

What the rules do for Chinese and Japanese (no spaces between words)
- Every ideograph or kana is one word (`curate.words`), so word-count bounds are measured
  in CJK characters (50 characters is a short paragraph, i.e. the bound is more lenient).
- A text is "space-less" when most of its words are CJK characters. Then:
  - word n-grams of the published rules become character n-grams `cjk_chars_per_word`
    (1.5) times as long (the 5-gram is 8 characters, the 10-gram 15);
  - the line rules (FineWeb line punctuation and short lines, C4 lines without terminal
    punctuation) judge merged lines (`merge_wrapped_lines`: hard-wrapped lines and headings
    joined to the sentence they belong to), with 。！？…）」』 as terminal punctuation and
    `fineweb_cjk_short_line_length` (10 characters) as a short line; duplicate-line
    statistics stay on the raw lines, so a repeated spam line is still caught;
  - fineweb_list_ratio counts newlines per word-equivalent (CJK characters / 1.5).
- gopher_mean_word_length is null for space-less text (every word has length 1, so the
  3..10 bound is meaningless); the default rule lets null pass.
- Stop words: FineWeb 2's Chinese and Japanese lists, single characters that match the
  one-character words. A language without a list gets a null gopher_stop_words.
- Sentence counting counts 。！？ without a following space, and … or !? after a CJK character.
- Thresholds differ per language: `LANGUAGE_THRESHOLDS` (FineWeb 2's zh / ja values, cited
  there) reach the rules as `<name>@<lang>` (see curate.rules).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from curate.rules import LANG_SEPARATOR
from curate.stage import Stage, check_name, set_column, stage_options
from curate.words import CJK_CHAR, SPACELESS_RANGES, words

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)


@dataclass(frozen=True)
class Thresholds:
    """Published default thresholds (Gopher, C4, FineWeb); rules refer to them as t.<name>."""

    gopher_min_words: int = 50
    gopher_max_words: int = 100_000
    gopher_min_mean_word_length: float = 3.0
    gopher_max_mean_word_length: float = 10.0
    gopher_max_symbol_word_ratio: float = 0.1
    gopher_max_bullet_lines_ratio: float = 0.9
    gopher_max_ellipsis_lines_ratio: float = 0.3
    gopher_min_alpha_words_ratio: float = 0.8
    gopher_min_stop_words: int = 2
    gopher_max_dup_line_frac: float = 0.30
    gopher_max_dup_para_frac: float = 0.30
    gopher_max_dup_line_char_frac: float = 0.20
    gopher_max_dup_para_char_frac: float = 0.20
    gopher_max_top_2gram_char_frac: float = 0.20
    gopher_max_top_3gram_char_frac: float = 0.18
    gopher_max_top_4gram_char_frac: float = 0.16
    gopher_max_dup_5gram_char_frac: float = 0.15
    gopher_max_dup_6gram_char_frac: float = 0.14
    gopher_max_dup_7gram_char_frac: float = 0.13
    gopher_max_dup_8gram_char_frac: float = 0.12
    gopher_max_dup_9gram_char_frac: float = 0.11
    gopher_max_dup_10gram_char_frac: float = 0.10
    c4_min_sentences: int = 5
    c4_max_word_length: int = 1000
    fineweb_min_line_punct_ratio: float = 0.12
    fineweb_short_line_length: int = 30
    fineweb_max_short_line_ratio: float = 0.67
    fineweb_max_char_dup_ratio: float = 0.01
    fineweb_max_list_ratio: float = 0.3
    # Label parameters for space-less scripts (Chinese, Japanese), see the module doc.
    # Segmented Chinese and Japanese text averages about 1.5 characters per word, so a
    # word n-gram of the published rules is compared with a character n-gram 1.5x as long.
    cjk_chars_per_word: float = 1.5
    # 30 Latin characters are about 5 English words, i.e. about 7 CJK words of ~1.5
    # characters: a CJK (merged) line of at most 10 characters is a short line.
    fineweb_cjk_short_line_length: int = 10

    def as_dict(self) -> dict:
        """Every threshold by name, plus the per-language overrides as `<name>@<lang>`."""
        out = asdict(self)
        for lang, overrides in LANGUAGE_THRESHOLDS.items():
            for name, value in overrides.items():
                out[f"{name}{LANG_SEPARATOR}{lang}"] = value
        return out


# `t.<name>` in a rule takes the value of `<name>@<lang>` (LANG_SEPARATOR) for rows whose
# `lang` label is <lang> (curate.rules); a config overrides or adds them like any threshold.

# FineWeb 2 tuned the Gopher / FineWeb filters per language and published the values in
# its repository (github.com/huggingface/fineweb-2, configs/cmn_Hani.yml and
# configs/jpn_Jpan.yml; fineweb-2-pipeline.py for how they are applied). Taken here:
# - dup_line_frac -> gopher_max_dup_line_frac (cmn 0.287, jpn 0.328)
# - top_n_grams 2/3/4 (cmn 0.256 / 0.201 / 0.171, jpn 0.239 / 0.196 / 0.172) and
#   dup_n_grams 5..10 (cmn 0.198 / 0.182 / 0.167 / 0.154 / 0.14 / 0.127, jpn 0.243 / 0.225 /
#   0.207 / 0.19 / 0.175 / 0.159). FineWeb 2 counts segmented words; our CJK words are
#   characters, so for CJK text these are compared at n x cjk_chars_per_word characters.
# - line_punct_thr -> fineweb_min_line_punct_ratio (cmn 0.106, jpn 0.096), judged on
#   merged lines (hard-wrapped lines joined, see merge_wrapped_lines).
# - new_line_ratio -> fineweb_max_list_ratio (cmn 0.178, jpn 0.13), newlines per
#   word-equivalent (CJK characters / cjk_chars_per_word).
# - max_non_alpha_words_ratio, which datatrove applies as the minimum share of words with
#   a letter -> gopher_min_alpha_words_ratio (cmn 0.735, jpn 0.759).
# - char_duplicates_ratio 0.1 for every language (FineWeb English used 0.01)
#   -> fineweb_max_char_dup_ratio.
# - FineWeb 2 applies no C4 rule; we keep c4_min_sentences with a floor of 2 for CJK,
#   whose sentences run long (web_zh f70d9c97: 3 sentences, 423 characters of news).
# Not taken: language_score (0.692 / 0.886 are GlotLID probabilities; our zh/ja score is
# the script share of curate.langid), avg word length (ours is null for CJK), and
# FineWeb 2 switching the short-line rule off: we keep it on merged lines, measured with
# fineweb_cjk_short_line_length, and the C4 rules it does not apply (sentences counted on
# 。！？… work for CJK).
LANGUAGE_THRESHOLDS: dict[str, dict[str, float]] = {
    "zh": {
        "gopher_max_dup_line_frac": 0.287,
        "gopher_max_top_2gram_char_frac": 0.256,
        "gopher_max_top_3gram_char_frac": 0.201,
        "gopher_max_top_4gram_char_frac": 0.171,
        "gopher_max_dup_5gram_char_frac": 0.198,
        "gopher_max_dup_6gram_char_frac": 0.182,
        "gopher_max_dup_7gram_char_frac": 0.167,
        "gopher_max_dup_8gram_char_frac": 0.154,
        "gopher_max_dup_9gram_char_frac": 0.14,
        "gopher_max_dup_10gram_char_frac": 0.127,
        "fineweb_min_line_punct_ratio": 0.106,
        "fineweb_max_list_ratio": 0.178,
        "gopher_min_alpha_words_ratio": 0.735,
        "fineweb_max_char_dup_ratio": 0.1,
        "c4_min_sentences": 2,
    },
    "ja": {
        "gopher_max_dup_line_frac": 0.328,
        "gopher_max_top_2gram_char_frac": 0.239,
        "gopher_max_top_3gram_char_frac": 0.196,
        "gopher_max_top_4gram_char_frac": 0.172,
        "gopher_max_dup_5gram_char_frac": 0.243,
        "gopher_max_dup_6gram_char_frac": 0.225,
        "gopher_max_dup_7gram_char_frac": 0.207,
        "gopher_max_dup_8gram_char_frac": 0.19,
        "gopher_max_dup_9gram_char_frac": 0.175,
        "gopher_max_dup_10gram_char_frac": 0.159,
        "fineweb_min_line_punct_ratio": 0.096,
        "fineweb_max_list_ratio": 0.13,
        "gopher_min_alpha_words_ratio": 0.759,
        "fineweb_max_char_dup_ratio": 0.1,
        "c4_min_sentences": 2,
    },
}

DEFAULT_THRESHOLDS = Thresholds()

# Gopher's English list, and small lists of very frequent function words elsewhere.
# CJK lists hold single characters because CJK words are single characters here.
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the be to of and that have with".split()),
    "de": frozenset("der die das und zu den ist nicht mit von".split()),
    "fr": frozenset("le la les de et un une est que des".split()),
    "es": frozenset("el la de que y en los se del las".split()),
    "it": frozenset("il di che la e un per non una sono".split()),
    "pt": frozenset("o a de que e do da em um para".split()),
    "nl": frozenset("de het een en van is dat op te in".split()),
    "ru": frozenset("и в не на что с по это как он".split()),
    # FineWeb 2's stop-word lists (configs/cmn_Hani.yml, configs/jpn_Jpan.yml): all single
    # characters (or the middle dot), so they match our one-character CJK words.
    "zh": frozenset("的年在月是和日了於·為有被人中为他與後也而由"),
    "ja": frozenset("のにをはたてがとで年し・月れさ"),
}

TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", "」", "』")
# CJK punctuation inside a sentence: a line ending in one is cut mid-sentence.
_CJK_MID_PUNCT = frozenset("，、；（《“‘「『—")
# CJK text also ends sentences with an ellipsis ("……") and closes them with brackets.
CJK_TERMINAL_PUNCT = TERMINAL_PUNCT + ("…", "）", "】", "～")
# A CJK line ending in one of these continues on the next line (a hard wrap or a heading).
_CJK_LINE_END_FINAL = CJK_TERMINAL_PUNCT + ("：", ":", "|")
BULLETS = ("•", "●", "○", "◦", "■", "□", "▪", "▫", "‣", "⁃", "·", "*", "-", "–", "—", "➢", "→", "✓", "✔")
_STRIP = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»„…–—•·¡¿。、，！？：；「」『』（）【】《》"
# Latin sentence ends need a following space; CJK ones do not (no spaces between
# sentences): 。！？ anywhere, and an ellipsis or ASCII !? right after a CJK character.
_SENTENCE_END = re.compile(rf"[.!?]+[\"'”’)\]]*(?=\s|$)|[。！？]+|(?<=[{SPACELESS_RANGES}])(?:…+|[!?]+)")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies", "accept cookies", "all rights reserved")

_HASH_P = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for the rolling n-gram hash


def _ngram_hashes(ids: np.ndarray, n: int, prev: np.ndarray | None, power: np.uint64) -> np.ndarray:
    """Hash of each word n-gram, built from the (n-1)-gram hashes (uint64 wraps on purpose)."""
    if prev is None:
        return ids.copy()
    with np.errstate(over="ignore"):
        return prev[:-1] + ids[n - 1:] * power


def _covered_chars(starts: np.ndarray, n: int, lens: np.ndarray) -> int:
    """Characters of the words covered by n-grams starting at `starts` (each word once)."""
    if starts.size == 0:
        return 0
    marks = np.zeros(lens.size + 1, np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, starts + n, -1)
    covered = np.cumsum(marks[:-1]) > 0
    return int(lens[covered].sum())


def scaled_ngram(n: int, words_per_unit: float) -> int:
    """The n-gram length (in our words) that stands for a published word n-gram."""
    return max(1, int(n * words_per_unit + 0.5))


def ngram_char_fractions(stripped: list[str], words_per_unit: float = 1.0) -> dict[str, float]:
    """Gopher top-n-gram (2..4) and duplicated-n-gram (5..10) character fractions.

    `words_per_unit` > 1 measures each published word n-gram as an n-gram of that many
    times n of our words (CJK text: characters per word, see `Thresholds.cjk_chars_per_word`).
    """
    out = {f"gopher_top_{n}gram_char_frac": 0.0 for n in TOP_NGRAMS}
    out.update({f"gopher_dup_{n}gram_char_frac": 0.0 for n in DUP_NGRAMS})
    if len(stripped) < 2:
        return out
    # label n -> the n-gram length actually measured
    top_len = {n: scaled_ngram(n, words_per_unit) for n in TOP_NGRAMS}
    dup_len = {n: scaled_ngram(n, words_per_unit) for n in DUP_NGRAMS}
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in stripped), np.uint64, len(stripped))
    lens = np.fromiter(map(len, stripped), np.int64, len(stripped))
    total = int(lens.sum())
    if total == 0:
        return out
    hashes, power = None, np.uint64(1)
    for n in range(1, max(dup_len.values()) + 1):
        if n > 1:
            with np.errstate(over="ignore"):
                power = power * _HASH_P
        hashes = _ngram_hashes(ids, n, hashes, power)
        tops = [label for label, length in top_len.items() if length == n and length >= 2]
        dups = [label for label, length in dup_len.items() if length == n and length >= 2]
        if not (tops or dups):
            continue
        if hashes.size < 2:
            break
        _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        if tops:
            best = counts.max()
            if best > 1:
                # Among the most frequent n-grams, the one covering most characters.
                frac = 0.0
                for gram in np.flatnonzero(counts == best)[:8]:
                    starts = np.flatnonzero(inverse == gram)
                    frac = max(frac, _covered_chars(starts, n, lens) / total)
                for label in tops:
                    out[f"gopher_top_{label}gram_char_frac"] = frac
        if dups:
            # Repeats only: the first occurrence of an n-gram is not a duplicate of anything.
            first = np.full(counts.size, hashes.size, np.int64)
            np.minimum.at(first, inverse, np.arange(hashes.size))
            starts = np.flatnonzero(first[inverse] != np.arange(hashes.size))
            frac = _covered_chars(starts, n, lens) / total
            for label in dups:
                out[f"gopher_dup_{label}gram_char_frac"] = frac
    return out


def merge_wrapped_lines(lines: list[str]) -> list[str]:
    """Join CJK lines that break inside a sentence with the line after them.

    Chinese and Japanese pages often break lines at a fixed width (or with <br>) in the
    middle of a sentence, and put headings on lines of their own: judged line by line,
    most lines then "lack" terminal punctuation and look short. A line continues on the
    next one when it does not end a sentence (CJK_TERMINAL_PUNCT, or a colon / table bar)
    and one side of the break is a Han or kana character. Lines of a menu or a list of
    links merge into one long line that still lacks terminal punctuation, so the
    punctuation rule still catches pages made only of them.
    """
    merged: list[str] = []
    for line in lines:
        if merged:
            previous = merged[-1]
            if not previous.endswith(_CJK_LINE_END_FINAL) and (
                    CJK_CHAR.match(previous[-1]) or CJK_CHAR.match(line[0]) or previous[-1] in _CJK_MID_PUNCT):
                merged[-1] = previous + line
                continue
        merged.append(line)
    return merged


def _dup_stats(items: list[str]) -> tuple[int, int, int]:
    """(repeats of an earlier item, characters in those repeats, characters in all items)."""
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup, dup_chars, total_chars


def document_labels(text: str, lang: str | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict:
    """All heuristic labels of one document (see the module doc for each definition)."""
    text = text or ""
    lower = text.lower()
    ws = words(text)
    n_words = len(ws)
    stripped = [w.strip(_STRIP) or w for w in ws]
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    n_lines = len(lines)
    paragraphs = [p.strip() for p in _PARAGRAPH_SPLIT.split(text)]
    paragraphs = [p for p in paragraphs if p]

    labels: dict = {"gopher_word_count": n_words}
    # Stripped forms of the words that are not one CJK character (a CJK word is one character).
    non_cjk = [s for w, s in zip(ws, stripped) if not (len(w) == 1 and CJK_CHAR.match(w))]
    cjk_words = n_words - len(non_cjk)
    # Mostly Chinese / Japanese: line rules judge merged lines, n-grams and the list ratio
    # count word-equivalents (see the module doc). Other text is measured as published.
    spaceless = n_words > 0 and cjk_words * 2 > n_words
    chars_per_word = thresholds.cjk_chars_per_word if spaceless else 1.0
    word_equivalents = (n_words - cjk_words) + cjk_words / chars_per_word
    judged_lines = merge_wrapped_lines(lines) if spaceless else lines
    n_judged = len(judged_lines)
    terminal_punct = CJK_TERMINAL_PUNCT if spaceless else TERMINAL_PUNCT
    if n_words and not spaceless and non_cjk:
        labels["gopher_mean_word_length"] = sum(map(len, non_cjk)) / len(non_cjk)
    else:
        labels["gopher_mean_word_length"] = None
    symbols = text.count("#") + text.count("...") + text.count("…")
    labels["gopher_symbol_word_ratio"] = symbols / n_words if n_words else 0.0
    labels["gopher_bullet_lines_ratio"] = (sum(1 for ln in lines if ln.startswith(BULLETS)) / n_lines) if n_lines else 0.0
    labels["gopher_ellipsis_lines_ratio"] = (sum(1 for ln in lines if ln.endswith(("...", "…"))) / n_lines) if n_lines else 0.0
    # A word "holds a letter": all letters (the common case, one C call) or any letter.
    alpha = sum(1 for w in stripped if w.isalpha() or any(map(str.isalpha, w)))
    labels["gopher_alpha_words_ratio"] = alpha / n_words if n_words else 0.0
    stop = STOP_WORDS.get((lang or "").split("_")[0].lower())
    labels["gopher_stop_words"] = None if stop is None else sum(1 for w in stripped if w.lower() in stop)

    dup, dup_chars, total_chars = _dup_stats(lines)
    labels["gopher_dup_line_frac"] = dup / n_lines if n_lines else 0.0
    labels["gopher_dup_line_char_frac"] = dup_chars / total_chars if total_chars else 0.0
    pdup, pdup_chars, ptotal = _dup_stats(paragraphs)
    labels["gopher_dup_para_frac"] = pdup / len(paragraphs) if paragraphs else 0.0
    labels["gopher_dup_para_char_frac"] = pdup_chars / ptotal if ptotal else 0.0
    labels.update(ngram_char_fractions(stripped, chars_per_word))

    terminal = sum(1 for ln in judged_lines if ln.endswith(terminal_punct))
    labels["c4_sentence_count"] = len(_SENTENCE_END.findall(text))
    labels["c4_no_terminal_punct_lines_ratio"] = (n_judged - terminal) / n_judged if n_judged else 0.0
    labels["c4_lorem_ipsum"] = "lorem ipsum" in lower
    labels["c4_curly_bracket"] = "{" in text
    lower_lines = lower.split("\n")
    labels["c4_javascript_lines"] = sum(1 for ln in lower_lines if "javascript" in ln)
    labels["c4_policy_lines"] = sum(1 for ln in lower_lines if any(p in ln for p in POLICY_SUBSTRINGS))
    labels["c4_long_word"] = any(len(w) > thresholds.c4_max_word_length for w in ws)

    labels["fineweb_line_punct_ratio"] = terminal / n_judged if n_judged else 0.0
    short = thresholds.fineweb_cjk_short_line_length if spaceless else thresholds.fineweb_short_line_length
    labels["fineweb_short_line_ratio"] = (sum(1 for ln in judged_lines if len(ln) <= short) / n_judged) if n_judged else 0.0
    chars_no_newline = len(text) - text.count("\n")
    labels["fineweb_char_dup_ratio"] = dup_chars / chars_no_newline if chars_no_newline else 0.0
    labels["fineweb_list_ratio"] = text.count("\n") / word_equivalents if n_words else 0.0
    return labels


LABEL_TYPES: dict[str, pa.DataType] = {
    "gopher_word_count": pa.int64(),
    "gopher_mean_word_length": pa.float64(),
    "gopher_symbol_word_ratio": pa.float64(),
    "gopher_bullet_lines_ratio": pa.float64(),
    "gopher_ellipsis_lines_ratio": pa.float64(),
    "gopher_alpha_words_ratio": pa.float64(),
    "gopher_stop_words": pa.int64(),
    "gopher_dup_line_frac": pa.float64(),
    "gopher_dup_line_char_frac": pa.float64(),
    "gopher_dup_para_frac": pa.float64(),
    "gopher_dup_para_char_frac": pa.float64(),
    **{f"gopher_top_{n}gram_char_frac": pa.float64() for n in TOP_NGRAMS},
    **{f"gopher_dup_{n}gram_char_frac": pa.float64() for n in DUP_NGRAMS},
    "c4_sentence_count": pa.int64(),
    "c4_no_terminal_punct_lines_ratio": pa.float64(),
    "c4_lorem_ipsum": pa.bool_(),
    "c4_curly_bracket": pa.bool_(),
    "c4_javascript_lines": pa.int64(),
    "c4_policy_lines": pa.int64(),
    "c4_long_word": pa.bool_(),
    "fineweb_line_punct_ratio": pa.float64(),
    "fineweb_short_line_ratio": pa.float64(),
    "fineweb_char_dup_ratio": pa.float64(),
    "fineweb_list_ratio": pa.float64(),
}


@dataclass
class HeuristicsConfig:
    """The `heuristics:` section. The thresholds are not in it: they are run-wide (the
    `thresholds:` section the rules read too) and reach the stage as `thresholds`."""

    text_column: str = "text"

    def __post_init__(self) -> None:
        check_name("heuristics.text_column", self.text_column)


class HeuristicsStage(Stage):
    """Adds every label of `LABEL_TYPES`; reads `text` and, when present, `lang`."""

    name = "heuristics"

    # `thresholds` stays the first positional argument, as callers have always passed it
    # (`HeuristicsStage({...})`); the section comes by keyword (the registry passes `config=`).
    def __init__(self, thresholds: Thresholds | Mapping[str, Any] | None = None, *,
                 config: HeuristicsConfig | Mapping[str, Any] | None = None, **options: Any):
        if isinstance(thresholds, Mapping):
            thresholds = Thresholds(**thresholds)
        self.thresholds = thresholds or DEFAULT_THRESHOLDS
        self.config = stage_options(HeuristicsConfig, config, options, self.name)

    def process(self, table: pa.Table) -> pa.Table:
        column = self.config.text_column
        texts = table.column(column).to_pylist() if column in table.column_names else [""] * table.num_rows
        langs = table.column("lang").to_pylist() if "lang" in table.column_names else [None] * table.num_rows
        rows = [document_labels(t or "", l, self.thresholds) for t, l in zip(texts, langs)]
        for name, type_ in LABEL_TYPES.items():
            table = set_column(table, name, pa.array([r[name] for r in rows], type_))
        return table
