"""Multiple choice (C-Eval / MMLU): k-shot prompts from the dev split, the answer read from the
next-token probabilities of the option letters.

The prompt ends where the answer letter goes ("答案：" or "Answer:"), and the model's next-token
distribution is compared over the letters' token ids. Which id a letter has depends on the
tokenizer and on what precedes it: after "Answer:" the letter is " A" (byte-level BPE: "ĠA";
SentencePiece: "▁A"), after "答案：" it is "A", and SentencePiece tokenizers turn a lone "A"
into "▁A". So the ids are read off the tokenization of the prompt followed by each letter,
never from the letter on its own.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from train.evaluation.choice_data import Question, Subject, load_split, load_subjects
from train.evaluation.runtime import ModelActor, RuntimeOptions

LANGUAGES = ("auto", "zh", "en")
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class ChoiceOptions(RuntimeOptions):
    data: str = ""
    split: str = "val"            # the split scored (needs answers)
    dev_split: str = "dev"        # where the k shots come from
    k_shot: int = 5
    language: str = "auto"        # prompt wording: zh (C-Eval), en (MMLU), auto = zh if the question has CJK
    template: str | None = None   # None: plain text (base models); a chat template name wraps it as a user turn
    max_length: int = 2048        # prompts longer than this lose shots from the end
    subjects: list[str] = field(default_factory=list)  # only these subjects (default: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("choice: no benchmark given (--data DIR or FILE)")
        if self.k_shot < 0:
            raise ValueError(f"choice: k_shot must be >= 0, got {self.k_shot}")
        if self.language not in LANGUAGES:
            raise ValueError(f"choice: unknown language {self.language!r}; choose one of {', '.join(LANGUAGES)}")
        if self.template is not None:
            from train.templates import TEMPLATE_NAMES

            if self.template not in TEMPLATE_NAMES:
                raise ValueError(f"choice: unknown template {self.template!r}; known: {', '.join(TEMPLATE_NAMES)}")


# ---------------------------------------------------------------- prompts
def prompt_language(question: Question, requested: str) -> str:
    if requested != "auto":
        return requested
    return "zh" if _CJK.search(question.question + "".join(question.options)) else "en"


def header(subject: Subject, language: str) -> str:
    if language == "zh":
        return f"以下是中国关于{subject.name_zh}考试的单项选择题，请选出其中的正确答案。\n\n"
    return f"The following are multiple choice questions (with answers) about {subject.name_en}.\n\n"


def answer_cue(language: str) -> str:
    return "答案：" if language == "zh" else "Answer:"


def letter_text(letter: str, language: str, chat: bool) -> str:
    """What follows the cue: "A" after "答案：" or at the start of an assistant turn, " A" after "Answer:"."""
    return letter if language == "zh" or chat else " " + letter


def format_question(q: Question, language: str, with_answer: bool) -> str:
    letters = [chr(ord("A") + i) for i in range(len(q.options))]
    body = q.question + "\n" + "".join(f"{letter}. {option}\n" for letter, option in zip(letters, q.options))
    body += answer_cue(language)
    if with_answer:
        body += letter_text(q.answer or "", language, chat=False) + "\n\n"
    return body


def build_prompt(q: Question, shots: Sequence[Question], subject: Subject, language: str) -> str:
    return header(subject, language) + "".join(format_question(s, language, True) for s in shots) + \
        format_question(q, language, False)


def letter_token_ids(tokenizer, prompt_ids: list[int], prompt: str, continuations: Sequence[str]) -> tuple[list[int], list[int]]:
    """(prompt ids to score from, the token id each continuation starts with there).

    A continuation's tokens are those after the prompt's own in tokenize(prompt + continuation).
    Where every continuation starts with the same tokens (a tokenizer without a " A" token
    writes " A" as "Ġ" + "A"), those shared tokens join the prompt and the letters are read
    one token later: the distribution that actually decides between them.
    """
    tails = []
    for text in continuations:
        full = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
            raise ValueError(f"the tokenizer merges the answer {text!r} into the prompt's last token; "
                             "the letter has no next-token probability of its own")
        tails.append(full[len(prompt_ids):])
    shared = 0
    while all(len(t) > shared + 1 for t in tails) and len({t[shared] for t in tails}) == 1:
        shared += 1
    ids = [t[shared] for t in tails]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the option letters {list(continuations)} share a first token; they cannot be told apart")
    return list(prompt_ids) + tails[0][:shared], ids


@dataclass(frozen=True)
class EncodedQuestion:
    question: Question
    prompt_ids: list[int]
    letter_ids: list[int]
    shots: int


def encode_question(q: Question, dev: Sequence[Question], subject: Subject, tokenizer, options: ChoiceOptions) -> EncodedQuestion:
    """The k-shot prompt as ids (dropping shots from the end until it fits) and the letter ids."""
    from train.templates import get_template

    language = prompt_language(q, options.language)
    chat = options.template is not None
    template = get_template(options.template, tokenizer) if chat else None
    shots = list(dev[: options.k_shot])
    while True:
        text = build_prompt(q, shots, subject, language)
        if template is not None:
            text = template.render_generation_prompt([{"role": "user", "content": text}], eos_token=tokenizer.eos_token)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < options.max_length or not shots:
            break
        shots.pop()
    letters = [chr(ord("A") + i) for i in range(len(q.options))]
    ids, letter_ids = letter_token_ids(tokenizer, ids, text, [letter_text(l, language, chat) for l in letters])
    # Zero-shot and still too long: keep the end, where the options and the answer cue are.
    return EncodedQuestion(q, ids[-(options.max_length - 1):], letter_ids, len(shots))


# ---------------------------------------------------------------- scoring
def letter_logprobs(model, prompts: Sequence[Sequence[int]], letter_ids: Sequence[Sequence[int]], pad_id: int):
    """(log-probs over the full vocabulary at each letter id, per prompt): right-padded batch,
    the next-token distribution read at each prompt's last real token."""
    import torch

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([list(p) + [pad_id] * (width - len(p)) for p in prompts], device=device)
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    logprobs = torch.log_softmax(logits[torch.arange(len(prompts), device=device), last].float(), dim=-1)
    return [logprobs[i, list(letter_ids[i])].tolist() for i in range(len(prompts))]


def predictions(logprobs: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Predicted letter, probabilities renormalised over the letters, and the share of the
    next-token mass the letters hold (low: the model does not answer with a letter at all)."""
    out = []
    for lps in logprobs:
        arr = np.asarray(lps, dtype=np.float64)
        probs = np.exp(arr - arr.max())
        out.append({"pred": chr(ord("A") + int(arr.argmax())), "probs": (probs / probs.sum()).tolist(),
                    "letter_mass": float(np.exp(arr).sum())})
    return out


class ChoiceScorer(ModelActor):
    """Ray Data actor: letter log-probs for a batch of encoded prompts."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        prompts = [list(map(int, p)) for p in batch["prompt_ids"]]
        letters = [list(map(int, l)) for l in batch["letter_ids"]]
        preds = predictions(letter_logprobs(self.model, prompts, letters, pad))
        # Questions may have different option counts: the probabilities travel as JSON text.
        return {"row": batch["row"], "pred": np.array([p["pred"] for p in preds], dtype=object),
                "probs_json": np.array([json.dumps(p["probs"]) for p in preds], dtype=object),
                "letter_mass": np.array([p["letter_mass"] for p in preds], dtype=np.float64)}


# ---------------------------------------------------------------- the task
def load_benchmark(options: ChoiceOptions) -> tuple[list[Question], dict[str, list[Question]], dict[str, Subject]]:
    """(questions to score, dev shots per subject, subject names); checked before Ray starts."""
    questions = load_split(options.data, options.split)
    if options.subjects:
        unknown = sorted(set(options.subjects) - {q.subject for q in questions})
        if unknown:
            raise ValueError(f"choice: subject {unknown[0]!r} is not in the {options.split} split")
        questions = [q for q in questions if q.subject in set(options.subjects)]
    unanswered = [q for q in questions if q.answer is None]
    if unanswered:
        raise ValueError(f"choice: question {unanswered[0].id!r} of split {options.split!r} has no answer "
                         "(C-Eval's test split is unlabelled: score split=val)")
    dev: dict[str, list[Question]] = defaultdict(list)
    if options.k_shot:
        for q in load_split(options.data, options.dev_split):
            dev[q.subject].append(q)
    subjects = load_subjects(options.data, sorted({q.subject for q in questions}))
    return questions, dev, subjects


def encode_benchmark(options: ChoiceOptions, tokenizer) -> list[EncodedQuestion]:
    questions, dev, subjects = load_benchmark(options)
    return [encode_question(q, dev.get(q.subject, []), subjects[q.subject], tokenizer, options) for q in questions]


def score(encoded: Sequence[EncodedQuestion], results: Sequence[dict[str, Any]], subjects: dict[str, Subject]) -> dict:
    """Accuracy overall (every question counts once), per subject, their mean, and per category."""
    per_subject: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e, r in zip(encoded, results):
        counts = per_subject[e.question.subject]
        counts[0] += int(r["pred"] == e.question.answer)
        counts[1] += 1
    correct = sum(c for c, _ in per_subject.values())
    total = sum(n for _, n in per_subject.values())
    subject_rows = {s: {"accuracy": c / n, "correct": c, "total": n, "category": subjects[s].category if s in subjects else None}
                    for s, (c, n) in sorted(per_subject.items())}
    categories: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in subject_rows.values():
        if row["category"]:
            categories[row["category"]][0] += row["correct"]
            categories[row["category"]][1] += row["total"]
    return {
        "accuracy": correct / total if total else float("nan"), "correct": correct, "questions": total,
        "subject_mean_accuracy": float(np.mean([r["accuracy"] for r in subject_rows.values()])) if subject_rows else float("nan"),
        "per_subject": subject_rows,
        "per_category": {c: {"accuracy": k / n, "correct": k, "total": n} for c, (k, n) in sorted(categories.items())},
    }


def evaluate_in_process(model, tokenizer, options: ChoiceOptions) -> tuple[dict, list[dict]]:
    """The task without Ray (one process): for tests and small sets."""
    encoded = encode_benchmark(options, tokenizer)
    _, _, subjects = load_benchmark(options)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[dict] = []
    for start in range(0, len(encoded), options.batch_size):
        chunk = encoded[start:start + options.batch_size]
        results += predictions(letter_logprobs(model, [e.prompt_ids for e in chunk], [e.letter_ids for e in chunk], pad))
    return score(encoded, results, subjects), question_rows(encoded, results)


def question_rows(encoded: Sequence[EncodedQuestion], results: Sequence[dict]) -> list[dict]:
    return [{"subject": e.question.subject, "id": e.question.id, "answer": e.question.answer, "pred": r["pred"],
             "correct": r["pred"] == e.question.answer, "probs": [float(p) for p in r["probs"]],
             "letter_mass": float(r["letter_mass"]), "shots": e.shots, "prompt_tokens": len(e.prompt_ids)}
            for e, r in zip(encoded, results)]


def run_choice(model, options: ChoiceOptions) -> tuple[dict, list[dict]]:
    """The task on Ray Data: prompts encoded on the driver (cheap, and a tokenizer problem fails
    before any actor starts), letter probabilities in the model's actor pool."""
    import ray.data

    from train.evaluation.runtime import actor_pool_args
    from train.run_models import load_tokenizer

    tokenizer = load_tokenizer(model)
    encoded = encode_benchmark(options, tokenizer)
    _, _, subjects = load_benchmark(options)
    ds = ray.data.from_items([{"row": i, "prompt_ids": e.prompt_ids, "letter_ids": e.letter_ids}
                              for i, e in enumerate(encoded)])
    kwargs = {"model": model, "dtype": options.dtype, "threads": options.num_cpus or 1}
    out = ds.map_batches(ChoiceScorer, batch_format="numpy", **actor_pool_args(options, kwargs))
    by_row: dict[int, dict] = {}
    for batch in out.iter_batches(batch_format="numpy"):
        for row, pred, probs, mass in zip(batch["row"], batch["pred"], batch["probs_json"], batch["letter_mass"]):
            by_row[int(row)] = {"pred": str(pred), "probs": json.loads(probs), "letter_mass": float(mass)}
    if len(by_row) != len(encoded):
        raise RuntimeError(f"choice: {len(encoded)} questions sent, {len(by_row)} scored")
    results = [by_row[i] for i in range(len(encoded))]
    metrics = score(encoded, results, subjects)
    metrics.update({"k_shot": options.k_shot, "split": options.split})
    return metrics, question_rows(encoded, results)
