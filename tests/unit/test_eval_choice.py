"""Multiple choice: benchmark layouts, letter token ids in context, and a tiny model trained to
always answer "B" scoring exactly the share of B answers, per subject and per category."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from train.evaluation.choice import (ChoiceOptions, build_prompt, encode_question, evaluate_in_process,
                                     letter_text, letter_token_ids)
from train.evaluation.choice_data import Question, Subject, load_split

# (subject, language, answers of the val split): a model that always says B scores 3/4, 1/4, 2/4.
VAL_ANSWERS = {"math": "BBBA", "history": "BCDA", "shi_ci": "BABC"}
EXPECTED = {"math": 0.75, "history": 0.25, "shi_ci": 0.5}
WORDS = ["river", "garden", "city", "student", "paper", "weather", "story", "plan", "report", "team"]
ZH = ["山", "水", "月", "花", "风", "雪", "春", "秋"]


def _en_question(rng: random.Random, i: int) -> dict:
    return {"id": str(i), "question": f"Which word fits the {rng.choice(WORDS)} {i}?",
            **{letter: rng.choice(WORDS) for letter in "ABCD"}}


def _zh_question(rng: random.Random, i: int) -> list[str]:
    return [f"第{i}题：哪个字最好？", [rng.choice(ZH) for _ in range(4)]]


def write_benchmark(root: Path, seed: int = 0) -> Path:
    """C-Eval CSVs (header) for math and history, JSONL with `choices` + index answers for shi_ci."""
    rng = random.Random(seed)
    for split, n in (("dev", 5), ("val", 4)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject in ("math", "history"):
            with open(root / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=["id", "question", "A", "B", "C", "D", "answer", "explanation"])
                writer.writeheader()
                for i in range(n):
                    answer = VAL_ANSWERS[subject][i] if split == "val" else rng.choice("ABCD")
                    writer.writerow({**_en_question(rng, i), "answer": answer, "explanation": ""})
        with open(root / split / "shi_ci.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                question, choices = _zh_question(rng, i)
                answer = "ABCD".index(VAL_ANSWERS["shi_ci"][i]) if split == "val" else rng.randrange(4)
                fh.write(json.dumps({"question": question, "choices": choices, "answer": answer}, ensure_ascii=False) + "\n")
    mapping = {"math": ["Mathematics", "数学", "STEM"], "history": ["History", "历史", "Humanities"],
               "shi_ci": ["Poetry", "诗词", "Humanities"]}
    (root / "subject_mapping.json").write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    return root


def train_letter_model(base_dir: Path, out_dir: Path, letter: str = "B", steps: int = 16, seed: int = 0) -> Path:
    """Fine-tune the tiny model in-process on k-shot prompts of both languages whose answer is
    always `letter` (loss on the answer token only, as the eval reads it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    options = ChoiceOptions(data="unused", k_shot=2, max_length=512)

    def random_question(zh: bool, j: int) -> Question:
        if zh:
            text, choices = _zh_question(rng, 1000 + j)
            return Question("s", str(j), text, tuple(choices), rng.choice("ABCD"))
        return Question("s", str(j), _en_question(rng, j)["question"], tuple(rng.choice(WORDS) for _ in range(4)),
                        rng.choice("ABCD"))

    def example(i: int) -> tuple[list[int], int]:
        zh = bool(i % 2)
        shots = [Question(s.subject, s.id, s.question, s.options, letter) for s in (random_question(zh, 1), random_question(zh, 2))]
        subject = Subject("s", "Words", "诗词", None)
        encoded = encode_question(random_question(zh, 3), shots, subject, tokenizer, options)
        return encoded.prompt_ids, encoded.letter_ids["ABCD".index(letter)]

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    pad = tokenizer.pad_token_id
    for step in range(steps):
        batch = [example(step * 8 + j) for j in range(8)]
        width = max(len(ids) for ids, _ in batch)
        inputs = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        logits = model(input_ids=inputs, attention_mask=mask).logits
        last = logits[torch.arange(len(batch)), torch.tensor([len(ids) - 1 for ids, _ in batch])]
        loss = torch.nn.functional.cross_entropy(last, torch.tensor([target for _, target in batch]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------- layouts
def test_layouts_read_the_same_questions(tmp_path):
    root = write_benchmark(tmp_path / "bench")
    val = load_split(root, "val")
    assert sorted({q.subject for q in val}) == ["history", "math", "shi_ci"]
    assert "".join(q.answer for q in val if q.subject == "shi_ci") == VAL_ANSWERS["shi_ci"]
    mmlu = tmp_path / "mmlu" / "val"
    mmlu.mkdir(parents=True)
    (mmlu / "anatomy_val.csv").write_text('"What is it?",one,two,three,four,C\n"Next, please?",a,b,c,d,A\n', encoding="utf-8")
    questions = load_split(tmp_path / "mmlu", "val")
    assert [(q.subject, q.options, q.answer) for q in questions] == [
        ("anatomy", ("one", "two", "three", "four"), "C"), ("anatomy", ("a", "b", "c", "d"), "A")]


@pytest.mark.parametrize("row,message", [
    ({"question": "q", "A": "1", "B": "2", "answer": "E"}, "answer 'E' is not one of A, B"),
    ({"question": "q", "choices": ["x", "y"], "answer": 5}, "answer index 5"),
    ({"question": "q", "A": "1", "B": "2"}, "no 'answer' column"),
])
def test_bad_rows_name_file_and_row(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "fine", "A": "1", "B": "2", "answer": "A"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=f"bad.jsonl row 2: .*{message}"):
        load_split(path, "val")


# ---------------------------------------------------------------- letter ids
def _metaspace_tokenizer():
    """A SentencePiece-style tokenizer: words carry a "▁" prefix, and "▁A" and "A" are different tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "</s>", "▁", "▁Answer", ":", "答案", "：", "▁答案", "?", "▁What", "▁is", "▁it"]
    pieces += [f"▁{c}" for c in "ABCD"] + list("ABCD") + [f"{c}." for c in "ABCD"] + [f"▁{c}." for c in "ABCD"]
    vocab = [(p, -1.0 if len(p) > 1 else -5.0) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def test_letter_ids_for_a_space_prefixing_tokenizer():
    tokenizer = _metaspace_tokenizer()
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    en_prompt, zh_prompt = "What is it?\nAnswer:", "What is it?\n答案："
    prompt_ids, letters = letter_token_ids(tokenizer, ids(en_prompt), en_prompt, [letter_text(c, "en", False) for c in "ABCD"])
    assert letters == tokenizer.convert_tokens_to_ids([f"▁{c}" for c in "ABCD"])
    assert prompt_ids == ids(en_prompt)
    prompt_ids, letters = letter_token_ids(tokenizer, ids(zh_prompt), zh_prompt, [letter_text(c, "zh", False) for c in "ABCD"])
    assert letters == tokenizer.convert_tokens_to_ids(list("ABCD"))
    # The letter on its own tokenizes as "▁A": looking the ids up without the prompt would be wrong here.
    assert ids("A") == [tokenizer.convert_tokens_to_ids("▁A")] != [letters[0]]


def test_letter_ids_for_the_tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    subject = Subject("math", "Mathematics", "数学", None)
    q = Question("math", "1", "Which word fits?", ("river", "garden", "city", "paper"), "B")
    options = ChoiceOptions(data="unused", k_shot=0)
    encoded = encode_question(q, [], subject, tokenizer, options)
    prompt = build_prompt(q, [], subject, "en")
    # Its vocabulary has no "ĠA": " A" is "Ġ" + "A", so the shared "Ġ" joins the prompt.
    assert encoded.prompt_ids == tokenizer(prompt + " ", add_special_tokens=False)["input_ids"]
    assert encoded.letter_ids == tokenizer.convert_tokens_to_ids(list("ABCD"))
    zh = Question("shi_ci", "2", "哪个字最好？", ("山", "水", "月", "花"), "A")
    encoded = encode_question(zh, [], Subject("shi_ci", "Poetry", "诗词", None), tokenizer, options)
    assert encoded.prompt_ids == tokenizer(build_prompt(zh, [], Subject("shi_ci", "Poetry", "诗词", None), "zh"),
                                           add_special_tokens=False)["input_ids"]
    assert encoded.letter_ids == tokenizer.convert_tokens_to_ids(list("ABCD"))


def test_shots_are_dropped_until_the_prompt_fits(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    dev = [Question("math", str(i), _en_question(rng, i)["question"], tuple(WORDS[:4]), "A") for i in range(5)]
    q = Question("math", "x", "Which word fits the plan?", tuple(WORDS[4:8]), "C")
    subject = Subject("math", "Mathematics", "数学", None)
    full = encode_question(q, dev, subject, tokenizer, ChoiceOptions(data="unused", k_shot=5, max_length=4096))
    short = encode_question(q, dev, subject, tokenizer, ChoiceOptions(data="unused", k_shot=5, max_length=len(full.prompt_ids) - 5))
    assert full.shots == 5 and 0 < short.shots < 5 and len(short.prompt_ids) < len(full.prompt_ids)


# ---------------------------------------------------------------- accuracy of a trained model
@pytest.fixture(scope="module")
def letter_b_model(tiny_model_dir, tmp_path_factory):
    return train_letter_model(tiny_model_dir, tmp_path_factory.mktemp("letter_b"))


def test_model_trained_to_answer_b_scores_the_share_of_b_answers(letter_b_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = write_benchmark(tmp_path / "bench")
    model = AutoModelForCausalLM.from_pretrained(letter_b_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(letter_b_model)
    metrics, rows = evaluate_in_process(model, tokenizer, ChoiceOptions(data=str(root), k_shot=5, batch_size=4))
    assert [r["pred"] for r in rows] == ["B"] * 12
    assert all(r["shots"] == 5 for r in rows)
    assert {s: v["accuracy"] for s, v in metrics["per_subject"].items()} == EXPECTED
    assert metrics["accuracy"] == pytest.approx(6 / 12)
    assert metrics["per_category"] == {"Humanities": {"accuracy": 3 / 8, "correct": 3, "total": 8},
                                       "STEM": {"accuracy": 0.75, "correct": 3, "total": 4}}
