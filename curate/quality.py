"""Classifier labels: `quality_score` (quality stage) and `topic` / `topic_score` (topic stage).

Both stages run a fastText model trained by `python jobs/quality.py train` (see
curate.classifier), loaded once per actor. `quality_score` is the probability of the
positive label (`hq` unless the model was trained with another `positive_label`): DCLM's
recipe, instruction-like / reference text against raw web text. `topic` is the most
probable label of a topic model and `topic_score` its probability.

`quality.model_path: embedded` is the project's own default classifier, trained on first
use from data the project has (curate.quality_default) and cached.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from curate.stage import Stage, set_column

POSITIVE_LABEL = "hq"


@dataclass(frozen=True)
class QualityConfig:
    model_path: str = "embedded"  # a fastText .bin from jobs/quality.py; `embedded` = the built-in default
    positive_label: str = POSITIVE_LABEL
    max_chars: int = 4000  # head of each document the classifier reads
    text_column: str = "text"


@dataclass(frozen=True)
class TopicConfig:
    model_path: str | None = None  # a fastText .bin from `jobs/quality.py train --label NAME=DATA ...`
    max_chars: int = 4000
    text_column: str = "text"


class _ClassifierStage(Stage):
    needs_actor = True

    def __init__(self, config):
        from curate.classifier import FastTextClassifier

        if not config.model_path:
            raise ValueError(f"{self.name}.model_path is required when the {self.name} stage is enabled")
        self.config = config
        self.classifier = FastTextClassifier(config.model_path, config.max_chars)

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def probabilities(self, table: pa.Table) -> list[dict[str, float]]:
        texts = table.column(self.config.text_column).to_pylist() if table.num_rows else []
        return self.classifier.predict([t or "" for t in texts])


class QualityStage(_ClassifierStage):
    name = "quality"

    def __init__(self, config: QualityConfig | None = None):
        super().__init__(config or QualityConfig())
        if self.config.positive_label not in self.classifier.labels:
            raise ValueError(f"quality.positive_label {self.config.positive_label!r} is not a label of "
                             f"{self.config.model_path} (its labels: {', '.join(self.classifier.labels)})")

    def process(self, table: pa.Table) -> pa.Table:
        scores = [p.get(self.config.positive_label, 0.0) for p in self.probabilities(table)]
        return set_column(table, "quality_score", pa.array(scores, pa.float64()))


class TopicStage(_ClassifierStage):
    name = "topic"

    def __init__(self, config: TopicConfig | None = None):
        super().__init__(config or TopicConfig())

    def process(self, table: pa.Table) -> pa.Table:
        best = [max(p.items(), key=lambda kv: kv[1]) if p else (None, None) for p in self.probabilities(table)]
        table = set_column(table, "topic", pa.array([b[0] for b in best], pa.string()))
        return set_column(table, "topic_score", pa.array([b[1] for b in best], pa.float64()))
