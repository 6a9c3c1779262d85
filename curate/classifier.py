"""fastText text classifiers for document labels: quality (DCLM / FineWeb-Edu idea) and topic.

One interface for both: `train_classifier(examples, output)` trains a supervised fastText
model on (text, label) pairs, holds out a split, reports per-label precision / recall / F1
and writes a small card beside the model (`MODEL.card.json`, `MODEL.card.md`);
`FastTextClassifier(path).predict(texts)` gives every label's probability per text.

Text goes to fastText the same way at training and at scoring (`normalize`): lower-cased,
one line, the head of the document, and CJK characters split apart, because fastText
splits words on whitespace and a Chinese paragraph would otherwise be one "word".
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from curate.words import SPACELESS_RANGES

LABEL_PREFIX = "__label__"
_CJK = re.compile(f"([{SPACELESS_RANGES}])")
_SPACES = re.compile(r"\s+")


def normalize(text: str, max_chars: int = 4000) -> str:
    text = _CJK.sub(r" \1 ", (text or "")[:max_chars].lower())
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 25
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 32
    min_count: int = 1
    bucket: int = 200_000  # hashed n-gram rows: the model file is bucket x dim x 4 bytes
    test_fraction: float = 0.2
    max_chars: int = 4000
    seed: int = 0


# fastText 0.9.3 fills its random input matrix in ten blocks, one per training thread
# (DenseMatrix::uniformThread), so with fewer than ten threads the rest of the matrix keeps
# whatever the allocator handed back: heap garbage (values up to 1e13 measured), which ends a
# run with "Encountered NaN" at any learning rate and, depending on the heap, in one run in two
# or every run (the CI process, after hundreds of tests). Eleven threads cover all ten blocks and
# the remainder of the integer division; on a small set the extra threads cost well under a second.
INIT_THREADS = 11


def _train_supervised(fasttext, train_file: str, options: TrainOptions):
    return fasttext.train_supervised(input=train_file, epoch=options.epochs, lr=options.lr,
                                     wordNgrams=options.word_ngrams, dim=options.dim,
                                     minCount=options.min_count, bucket=options.bucket,
                                     seed=options.seed, thread=INIT_THREADS, verbose=0)


@dataclass
class TrainReport:
    model: str
    sha256: str
    labels: dict[str, int]  # training examples per label
    held_out: dict[str, int]
    metrics: dict[str, dict[str, float]]  # label -> precision, recall, f1
    accuracy: float
    options: dict
    sources: dict[str, list[str]] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_held_out(examples: Sequence[tuple[str, str]], fraction: float, seed: int):
    """Stratified split: `fraction` of each label held out (at least one when a label has two)."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for example in examples:
        by_label.setdefault(example[1], []).append(example)
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        n_test = int(round(len(items) * fraction))
        n_test = max(1, n_test) if fraction > 0 and len(items) > 1 else n_test
        test += items[:n_test]
        train += items[n_test:]
    rng.shuffle(train)
    return train, test


def precision_recall_f1(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for label in sorted(set(truth) | set(predicted)):
        tp = sum(1 for t, p in zip(truth, predicted) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                      "support": tp + fn}
    return out


def _check_label(label: str) -> str:
    if not label or any(c.isspace() for c in label):
        raise ValueError(f"classifier label {label!r} must be a non-empty word without spaces")
    return label


def train_classifier(examples: Iterable[tuple[str, str]], output: str | Path, options: TrainOptions | None = None,
                     sources: dict[str, list[str]] | None = None) -> TrainReport:
    """Train on (text, label) pairs; save the model at `output` and its card beside it."""
    import fasttext

    options = options or TrainOptions()
    examples = [(normalize(t, options.max_chars), _check_label(label)) for t, label in examples]
    examples = [(t, label) for t, label in examples if t]
    counts = Counter(label for _, label in examples)
    if len(counts) < 2:
        raise ValueError(f"a classifier needs examples of at least two labels, got {dict(counts)}")
    train, test = split_held_out(examples, options.test_fraction, options.seed)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as fh:
        for text, label in train:
            fh.write(f"{LABEL_PREFIX}{label} {text}\n")
        train_file = fh.name
    try:
        model = _train_supervised(fasttext, train_file, options)
    finally:
        Path(train_file).unlink(missing_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    model.save_model(str(tmp))
    tmp.replace(output)
    # The list form of predict: the one-string form breaks under NumPy 2 (fastText 0.9.3).
    predicted = [labels[0][len(LABEL_PREFIX):] for labels in model.predict([t for t, _ in test], k=1)[0]] if test else []
    truth = [label for _, label in test]
    report = TrainReport(model=str(output), sha256=file_sha256(output), labels=dict(sorted(Counter(l for _, l in train).items())),
                         held_out=dict(sorted(Counter(truth).items())), metrics=precision_recall_f1(truth, predicted),
                         accuracy=round(sum(t == p for t, p in zip(truth, predicted)) / max(1, len(truth)), 4),
                         options=asdict(options), sources=sources or {})
    write_card(report, output)
    return report


def write_card(report: TrainReport, model_path: Path) -> tuple[Path, Path]:
    """MODEL.card.json (the report as data) and MODEL.card.md (for people)."""
    json_path = model_path.with_name(model_path.name + ".card.json")
    md_path = model_path.with_name(model_path.name + ".card.md")
    json_path.write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False), encoding="utf-8")
    rows = "\n".join(f"| {label} | {report.labels.get(label, 0)} | {report.held_out.get(label, 0)} | "
                     f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |" for label, m in report.metrics.items())
    sources = "\n".join(f"- `{label}`: {', '.join(paths)}" for label, paths in report.sources.items()) or "- (in memory)"
    md_path.write_text(
        f"# fastText classifier `{model_path.name}`\n\nsha256 `{report.sha256}`\n\n## Training data\n\n{sources}\n\n"
        f"## Held-out evaluation ({int(report.options['test_fraction'] * 100)}% of each label)\n\n"
        f"accuracy {report.accuracy:.3f}\n\n| label | train | held out | precision | recall | F1 |\n"
        f"|---|---|---|---|---|---|\n{rows}\n\n## Options\n\n```json\n{json.dumps(report.options, indent=2)}\n```\n",
        encoding="utf-8")
    return json_path, md_path


class FastTextClassifier:
    """A trained model: `predict(texts)` -> one {label: probability} dict per text."""

    def __init__(self, path: str | Path, max_chars: int = 4000):
        from curate.langid import load_fasttext

        self.path, self.max_chars = str(path), max_chars
        self.model = load_fasttext(path)
        self.labels = [label[len(LABEL_PREFIX):] for label in self.model.get_labels()]

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        lines = [normalize(t, self.max_chars) for t in texts]
        # fastText's batch predict takes a list of lines; an empty line still gets a prediction.
        labels, probs = self.model.predict(lines, k=-1)
        return [{label[len(LABEL_PREFIX):]: float(min(1.0, p)) for label, p in zip(ls, ps)}
                for ls, ps in zip(labels, probs)]


def read_texts(path: str | Path, text_column: str = "text", limit: int | None = None) -> list[str]:
    """Texts of a training source: JSONL (a `text` field per line), TXT (one text per line),
    Parquet (a `text` column) or a dataset directory (DIR/data/*.parquet, else DIR/*.parquet)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    if path.is_dir():
        files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no Parquet files in {path}/data or {path}")
    else:
        files = [path]
    texts: list[str] = []
    for file in files:
        name = file.name.lower()
        if name.endswith(".parquet"):
            if text_column not in pq.read_schema(file).names:
                raise ValueError(f"{file} has no {text_column!r} column")
            texts += [t for t in pq.read_table(file, columns=[text_column]).column(0).to_pylist() if t]
        elif name.endswith((".jsonl", ".json")):
            with open(file, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        value = json.loads(line).get(text_column)
                    except (ValueError, AttributeError):
                        raise ValueError(f"{file} line {lineno}: not a JSON object") from None
                    if isinstance(value, str) and value.strip():
                        texts.append(value)
        elif name.endswith(".txt"):
            texts += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            raise ValueError(f"training data {file}: expected .jsonl, .txt, .parquet or a dataset directory")
        if limit and len(texts) >= limit:
            return texts[:limit]
    return texts
