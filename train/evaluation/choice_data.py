"""Multiple-choice benchmarks in the C-Eval / MMLU layout: reading them and checking every row.

Accepted layouts (a split is `dev`, `val` or `test`):
  DIR/<split>/<subject>_<split>.csv    C-Eval (header: id,question,A,B,C,D,answer[,explanation])
  DIR/<split>/<subject>_<split>.csv    MMLU (no header: question,A,B,C,D,answer)
  DIR/<split>/<subject>.jsonl          rows {question, A.., answer} or {question, choices: [...], answer}
  FILE.csv / FILE.jsonl                one split; the subject from a `subject` column or the file name
`answer` is a letter, or (with `choices`) a letter or a 0-based index. DIR/subject_mapping.json
(C-Eval's: subject -> [English name, Chinese name, category]) names subjects in prompts and
adds per-category accuracy.
"""
from __future__ import annotations

import csv
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

SPLITS = ("dev", "val", "test")
SUFFIXES = (".csv", ".jsonl", ".json")
SUBJECT_MAPPING = "subject_mapping.json"


@dataclass(frozen=True)
class Question:
    subject: str
    id: str
    question: str
    options: tuple[str, ...]
    answer: str | None   # a letter; None where the split has no answers (C-Eval's test)


@dataclass(frozen=True)
class Subject:
    key: str
    name_en: str
    name_zh: str
    category: str | None


def _subject_from_file(path: Path, split: str | None) -> str:
    stem = path.stem
    for s in ([split] if split else SPLITS):
        if stem.endswith(f"_{s}"):
            return stem[: -len(s) - 1]
    return stem


def _letters(n: int) -> tuple[str, ...]:
    if not 2 <= n <= 26:
        raise ValueError(f"a question needs 2..26 options, got {n}")
    return tuple(string.ascii_uppercase[:n])


def _answer_letter(value: Any, letters: tuple[str, ...], where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: answer {value!r} is neither a letter nor an index")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if not 0 <= index < len(letters):
            raise ValueError(f"{where}: answer index {index} is outside 0..{len(letters) - 1}")
        return letters[index]
    letter = str(value).strip().upper()
    if letter not in letters:
        raise ValueError(f"{where}: answer {value!r} is not one of {', '.join(letters)}")
    return letter


def question_from_row(row: dict[str, Any], subject: str, where: str) -> Question:
    """One row in either layout (letter columns A, B, ... or a `choices` list)."""
    if "question" not in row:
        raise ValueError(f"{where}: no 'question' column (columns: {', '.join(map(str, row))})")
    if "answer" not in row:
        raise ValueError(f"{where}: no 'answer' column (columns: {', '.join(map(str, row))})")
    if row.get("choices") is not None:
        options = tuple(str(o) for o in row["choices"])
    else:
        options = tuple(str(row[c]) for c in string.ascii_uppercase if c in row and row[c] is not None)
        if "A" not in row or "B" not in row:
            raise ValueError(f"{where}: no option columns A, B, ... and no 'choices' list")
    letters = _letters(len(options))
    return Question(subject=str(row.get("subject") or subject), id=str(row.get("id", "")), question=str(row["question"]),
                    options=options, answer=_answer_letter(row["answer"], letters, where))


def _csv_rows(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    if {"question", "answer"} <= {h.lower() for h in header}:
        names = [h.upper() if len(h) == 1 and h.isalpha() else h.lower() for h in header]
        return [dict(zip(names, r)) for r in rows[1:]]
    # MMLU: question, one column per option, answer last.
    out = []
    for r in rows:
        letters = _letters(len(r) - 2)
        out.append({"question": r[0], **dict(zip(letters, r[1:-1])), "answer": r[-1]})
    return out


def _json_rows(path: Path) -> Iterable[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else [data]


def read_questions(path: Path, split: str | None = None) -> list[Question]:
    rows = _csv_rows(path) if path.suffix == ".csv" else _json_rows(path)
    subject = _subject_from_file(path, split)
    out = []
    for index, row in enumerate(rows):
        question = question_from_row(row, subject, f"{path} row {index + 1}")
        out.append(question if question.id else Question(question.subject, f"{question.subject}-{index}",
                                                         question.question, question.options, question.answer))
    return out


def split_files(root: Path, split: str) -> list[Path]:
    """Files of one split of a benchmark directory (DIR/<split>/*, or DIR/*_<split>.*)."""
    folder = root / split
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith((".", "_")))
    return sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and p.stem.endswith(f"_{split}"))


def load_split(path: str | Path, split: str) -> list[Question]:
    """Every question of `split` under a benchmark directory, or of a single file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"choice: {path} does not exist")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ValueError(f"choice: {path} is not CSV or JSONL")
        return read_questions(path)
    files = split_files(path, split)
    if not files:
        raise FileNotFoundError(f"choice: no {split} split in {path} (expected {path / split}/*.csv or *_{split}.csv)")
    return [q for f in files for q in read_questions(f, split)]


def load_subjects(path: str | Path, keys: Iterable[str]) -> dict[str, Subject]:
    mapping: dict[str, Any] = {}
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    if (root / SUBJECT_MAPPING).exists():
        mapping = json.loads((root / SUBJECT_MAPPING).read_text(encoding="utf-8"))
    out = {}
    for key in keys:
        names = mapping.get(key) or []
        plain = key.replace("_", " ")
        out[key] = Subject(key, names[0] if len(names) > 0 else plain, names[1] if len(names) > 1 else plain,
                           names[2] if len(names) > 2 else None)
    return out
