"""KenLM perplexity: the CCNet way of scoring web text, as a backend of the perplexity stage.

CCNet (Wenzek et al. 2019) scores each paragraph with a 5-gram KenLM model trained on the
language's Wikipedia and buckets documents by that perplexity. Set `perplexity.model_path`
to a KenLM model file (`.arpa`, `.arpa.gz`, or a KenLM binary `.bin` / `.klm` from
`build_binary`) and the stage scores with it instead of a neural LM; the labels are the
same (`ppl`, `ppl_tokens`, `ppl_status`), so `ppl_bucket` and the rules work unchanged.
Needs the `kenlm` Python package (`pip install kenlm`, a C++ build); without it the
config check names the option before any data is read.

How a document is scored
- Text is normalised the way the model's training text must be: lower-cased, digits
  mapped to 0 (CCNet's normalisation), whitespace collapsed, and each CJK character its
  own word (CJK has no spaces; a model for zh/ja should be trained on text split the same
  way, e.g. with `words`).
- Each non-empty line is one KenLM sentence (`<s> ... </s>`), as CCNet scores paragraphs.
  The document's perplexity is 10 ** (-sum(log10 p) / tokens), where tokens counts every
  word and each line's `</s>`: the per-token average over the whole document, not a mean
  of line perplexities (which would let one short line dominate).
- `max_tokens` bounds the words scored (the document's head), like the neural path.
- `unmappable`: the share of U+FFFD replacement characters among the examined words;
  out-of-vocabulary words are not unmappable here: KenLM scores them as `<unk>`, which is
  exactly what makes foreign or garbled text score high.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from curate.words import SPACELESS_RANGES

if TYPE_CHECKING:
    from curate.perplexity import PerplexityConfig

KENLM_SUFFIXES = (".arpa", ".arpa.gz", ".bin", ".klm", ".binary")
_CJK = re.compile(f"([{SPACELESS_RANGES}])")
_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"[^\S\n]+")


def is_kenlm_model(path: str | None) -> bool:
    """A KenLM model file (by its name); Hugging Face models are directories."""
    return isinstance(path, str) and path.lower().endswith(KENLM_SUFFIXES)


def kenlm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("kenlm") is not None


def normalize_lines(text: str) -> list[list[str]]:
    """The words of each non-empty line, normalised as the model's training text is."""
    text = _DIGIT.sub("0", _CJK.sub(r" \1 ", text.lower()))
    return [words for line in text.split("\n") if (words := _SPACES.sub(" ", line).split())]


class KenLMScorer:
    """`score(texts)` with the neural stage's contract: (ppl, scored tokens, status) per text."""

    def __init__(self, config: PerplexityConfig):
        import kenlm

        self.config = config
        self.model = kenlm.Model(config.model_path)

    def score_one(self, text: str) -> tuple[float | None, int, str]:
        from curate.perplexity import EMPTY, MAX_LOG_PPL, SCORED, TRUNCATED, UNMAPPABLE

        cap = self.config.max_tokens
        lines, examined, truncated = [], 0, False
        for words in normalize_lines(text or ""):
            if cap is not None and examined + len(words) > cap:
                words, truncated = words[:cap - examined], True
            if words:
                lines.append(words)
                examined += len(words)
            if truncated:
                break
        if not lines:
            return None, 0, EMPTY
        bad = sum(word.count("\ufffd") for words in lines for word in words)
        if bad / examined > self.config.max_unmappable_ratio:
            return None, 0, UNMAPPABLE
        log10_total = sum(self.model.score(" ".join(words), bos=True, eos=True) for words in lines)
        tokens = examined + len(lines)  # every word and each line's </s>
        ln_ppl = -log10_total / tokens * 2.302585092994046  # ln(10): the neural path's exp() scale
        return math.exp(min(MAX_LOG_PPL, ln_ppl)), tokens, (TRUNCATED if truncated else SCORED)

    def score(self, texts: list[str]) -> tuple[list[float | None], list[int], list[str]]:
        results = [self.score_one(t) for t in texts]
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]
