"""fastText quality / topic classifiers: training job, held-out metrics, card, curate stages."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from curate.classifier import precision_recall_f1, read_texts, split_held_out
from curate.quality import QualityConfig, QualityStage, TopicConfig, TopicStage
from curate.quality_default import negative_texts
from curate.sample_crawl import paragraphs

_TOPIC_WORDS = {
    "cooking": ["flour", "oven", "butter", "simmer", "recipe", "garlic", "onion", "bake", "sauce", "pepper"],
    "astronomy": ["telescope", "orbit", "galaxy", "planet", "comet", "nebula", "star", "moon", "eclipse", "rocket"],
    "football": ["goal", "striker", "referee", "league", "match", "penalty", "coach", "stadium", "keeper", "pass"],
}


def _topic_texts(topic: str, n: int, rng: random.Random) -> list[str]:
    common = ["the", "a", "we", "today", "and", "with", "after", "very", "new", "old"]
    return [" ".join(rng.choice(_TOPIC_WORDS[topic] + common) for _ in range(20)) for _ in range(n)]


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_quality_job_separates_held_out_sets_and_writes_a_card(tmp_path):
    from jobs.quality import main

    rng = random.Random(1)
    positive = _jsonl(tmp_path / "good.jsonl", paragraphs(rng, "en", 150) + paragraphs(rng, "de", 50))
    (tmp_path / "bad.txt").write_text("\n".join(negative_texts(rng, 200)), encoding="utf-8")
    model = tmp_path / "quality.bin"
    summary = main(["train", "--positive", positive, "--negative", str(tmp_path / "bad.txt"),
                    "--output", str(model), "--bucket", "20000", "--dim", "16"])
    assert summary["held_out"] == {"hq": 40, "lq": 40}
    for label in ("hq", "lq"):
        assert summary["metrics"][label]["precision"] >= 0.95 and summary["metrics"][label]["recall"] >= 0.95
    card = json.loads((tmp_path / "quality.bin.card.json").read_text())
    assert card["sha256"] == summary["sha256"] and card["sources"]["hq"] == [positive]
    assert "| hq |" in (tmp_path / "quality.bin.card.md").read_text()

    stage = QualityStage(QualityConfig(model_path=str(model)))
    fresh = random.Random(99)  # texts the classifier never saw
    table = stage(pa.table({"text": paragraphs(fresh, "en", 10) + negative_texts(fresh, 10)}))
    scores = table.column("quality_score").to_pylist()
    assert min(scores[:10]) > 0.5 > max(scores[10:])


def test_topic_classifier_from_labelled_sources(tmp_path):
    from jobs.quality import main

    rng = random.Random(2)
    args = ["train", "--output", str(tmp_path / "topic.bin"), "--bucket", "20000", "--dim", "16"]
    for topic in _TOPIC_WORDS:
        args += ["--label", f"{topic}={_jsonl(tmp_path / f'{topic}.jsonl', _topic_texts(topic, 80, rng))}"]
    summary = main(args)
    assert set(summary["metrics"]) == set(_TOPIC_WORDS)
    assert all(m["f1"] >= 0.9 for m in summary["metrics"].values())
    stage = TopicStage(TopicConfig(model_path=str(tmp_path / "topic.bin")))
    out = stage(pa.table({"text": [_topic_texts(t, 1, rng)[0] for t in _TOPIC_WORDS]}))
    assert out.column("topic").to_pylist() == list(_TOPIC_WORDS)
    assert all(0 < s <= 1 for s in out.column("topic_score").to_pylist())


def test_embedded_default_classifier_scores_articles_above_boilerplate(tmp_path):
    from curate.quality_default import embedded_quality_classifier

    path = embedded_quality_classifier(tmp_path)
    assert path.is_file() and (tmp_path / f"{path.name}.card.json").is_file()
    assert embedded_quality_classifier(tmp_path) == path  # cached
    stage = QualityStage(QualityConfig(model_path=str(path)))
    article = "The council approved the budget for the new library after a long debate. Residents welcomed it."
    furniture = "Home News Sport Login Register Privacy Terms of use Contact Read more: story 4"
    scores = stage(pa.table({"text": [article, furniture]})).column("quality_score").to_pylist()
    assert scores[0] > 0.5 > scores[1]
    with pytest.raises(ValueError, match="positive_label 'good' is not a label"):
        QualityStage(QualityConfig(model_path=str(path), positive_label="good"))


def test_metrics_split_and_bad_input(tmp_path):
    metrics = precision_recall_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert metrics["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert metrics["b"]["precision"] == pytest.approx(0.6667)
    train, test = split_held_out([(str(i), "a") for i in range(10)] + [(str(i), "b") for i in range(5)], 0.2, 0)
    assert sorted(label for _, label in test) == ["a", "a", "b"] and len(train) == 12
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_texts(tmp_path / "missing.jsonl")
    from jobs.quality import main

    with pytest.raises(ValueError, match="--positive and --negative go together"):
        main(["train", "--positive", "x.jsonl", "--output", str(tmp_path / "m.bin")])


def test_every_row_of_the_trained_input_matrix_is_initialised(tmp_path):
    """fastText 0.9.3 leaves nine tenths of its input matrix uninitialised below ten threads;
    garbage there reaches 1e13 and stops training with "Encountered NaN". Rows no example
    touches (most hashed n-gram buckets on a tiny set) keep their uniform(-1/dim, 1/dim) start."""
    import fasttext
    import numpy as np

    from curate.classifier import TrainOptions, train_classifier

    examples = [("the cat sat on the mat", "a"), ("dogs bark loudly at night", "b")] * 40
    options = TrainOptions(epochs=1, lr=0.0, dim=4, bucket=5000, test_fraction=0.0)
    train_classifier(examples, tmp_path / "m.bin", options)
    matrix = fasttext.load_model(str(tmp_path / "m.bin")).get_input_matrix()
    assert np.isfinite(matrix).all()
    assert np.abs(matrix).max() <= 1.0 / options.dim
    assert (np.abs(matrix).sum(axis=1) > 0).mean() > 0.99  # zero rows would mean 'left unset'
