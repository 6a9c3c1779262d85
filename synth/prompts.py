"""Prompt templates (English and Chinese, our own wording) and the parsers of their answers.

Three prompts, as in Self-Instruct: propose new instructions from a mix of examples;
decide whether an instruction is a classification task; write instances for it
(output-first for classification so labels are not all the same, input-first otherwise).
Every prompt is one user message, so chat servers and raw LMs see the same text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TEMPLATES = {
    "en": {
        "propose_head": (
            "We are collecting a wide variety of tasks to teach a text-only assistant. Each task is one "
            "instruction that a person could give it. Read the tasks below, then write {k} new ones. Make them "
            "different from the listed ones in topic, wording and kind (questions, rewriting, classification, "
            "planning, coding, math, advice ...). Every task must be doable with text alone.\n"
        ),
        "task_line": "Task {i}: {text}",
        "propose_tail": "Continue the list with Task {start} to Task {end}, one task per line.",
        "classify_head": "For each task, say whether the answer is one label picked from a small fixed set "
                         "(a classification task). Answer Yes or No.\n",
        "classify_item": "Task: {text}\nClassification: {answer}",
        "yes": "Yes", "no": "No",
        "instances_head": "Write up to {k} examples for the task. Give each example an input (write <none> when "
                          "the task needs no input) followed by its correct output.\n",
        "instances_head_cls": "Write up to {k} examples for the classification task. Give each example its class "
                              "label first, then an input that has that label. Use different labels.\n",
        "task": "Task: {text}",
        "input": "Input:", "output": "Output:", "label": "Class label:", "none": "<none>",
    },
    "zh": {
        "propose_head": (
            "我们正在收集各种各样的任务，用来训练一个只能处理文字的助手。每个任务是一个人可能向它提出的一条指令。"
            "请阅读下面的任务，再写出{k}个新任务。新任务在主题、措辞和类型（问答、改写、分类、计划、编程、数学、建议等）"
            "上要和已有任务不同，并且只用文字就能完成。\n"
        ),
        "task_line": "任务{i}：{text}",
        "propose_tail": "请接着写出任务{start}到任务{end}，每行一个任务。",
        "classify_head": "判断每个任务的答案是否是从一小组固定选项中选出的一个类别（即分类任务）。回答“是”或“否”。\n",
        "classify_item": "任务：{text}\n是否分类：{answer}",
        "yes": "是", "no": "否",
        "instances_head": "为下面的任务写最多{k}个示例。每个示例先给出输入（不需要输入时写<无>），再给出正确的输出。\n",
        "instances_head_cls": "为下面的分类任务写最多{k}个示例。每个示例先给出类别，再给出属于该类别的输入。请使用不同的类别。\n",
        "task": "任务：{text}",
        "input": "输入：", "output": "输出：", "label": "类别：", "none": "<无>",
    },
}


def _t(lang: str) -> dict[str, str]:
    if lang not in TEMPLATES:
        raise ValueError(f"no prompt templates for language {lang!r}; have {sorted(TEMPLATES)}")
    return TEMPLATES[lang]


class ParseError(ValueError):
    """A model answer does not follow the requested format (counted as `unparseable`)."""


# ---- proposing instructions -------------------------------------------------------------

def render_propose(examples: list[str], lang: str, num_new: int) -> str:
    t = _t(lang)
    lines = [t["propose_head"].format(k=num_new)]
    lines += [t["task_line"].format(i=i, text=" ".join(x.split())) for i, x in enumerate(examples, start=1)]
    start = len(examples) + 1
    lines.append("")
    lines.append(t["propose_tail"].format(start=start, end=start + num_new - 1))
    return "\n".join(lines)


_TASK_MARK = re.compile(r"^[ \t*#>-]*(?:Task|任务)\s*(\d+)\s*[:：.、]\s*", re.IGNORECASE | re.MULTILINE)


def parse_proposals(text: str) -> list[str]:
    """Split an answer into instructions by its `Task N:` / `任务N：` markers.

    Text before the first marker (a chatty preamble) is ignored; no marker at all is a ParseError.
    """
    marks = list(_TASK_MARK.finditer(text))
    if not marks:
        raise ParseError("no 'Task N:' item found")
    items = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        body = text[m.end(): nxt.start() if nxt else len(text)]
        # Markdown emphasis around the marker ("**Task 5:** ...") is not part of the task.
        items.append(" ".join(body.split()).strip("*_ "))
    return items


# ---- classification ---------------------------------------------------------------------

def render_classify(instruction: str, examples: list[tuple[str, bool]], lang: str) -> str:
    t = _t(lang)
    parts = [t["classify_head"]]
    for text, is_cls in examples:
        parts.append(t["classify_item"].format(text=" ".join(text.split()), answer=t["yes"] if is_cls else t["no"]))
        parts.append("")
    parts.append(t["classify_item"].format(text=" ".join(instruction.split()), answer="").rstrip())
    return "\n".join(parts)


_YES = re.compile(r"^\W*(yes|是)", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|否|不是)", re.IGNORECASE)


def parse_classify(text: str) -> bool:
    answer = text.strip()
    # Some chat models echo the label name first ("Classification: Yes").
    answer = re.sub(r"^(classification|是否分类)\s*[:：]\s*", "", answer, flags=re.IGNORECASE)
    if _YES.match(answer):
        return True
    if _NO.match(answer):
        return False
    raise ParseError("answer is neither yes nor no")


# ---- instances --------------------------------------------------------------------------

def render_instances(instruction: str, examples: list[tuple[str, list[tuple[str, str]]]], lang: str,
                     classification: bool, max_instances: int) -> str:
    """`examples`: (instruction, [(input, output), ...]) shown before the new task."""
    t = _t(lang)
    head = t["instances_head_cls"] if classification else t["instances_head"]
    parts = [head.format(k=max_instances)]
    for text, instances in examples:
        parts.append(t["task"].format(text=" ".join(text.split())))
        parts.append(format_instances(instances, lang, classification))
        parts.append("")
    parts.append(t["task"].format(text=" ".join(instruction.split())))
    return "\n".join(parts)


def format_instances(instances: list[tuple[str, str]], lang: str, classification: bool) -> str:
    t = _t(lang)
    lines = []
    for inp, out in instances:
        inp = inp.strip() or t["none"]
        if classification:
            lines += [f"{t['label']} {out.strip()}", f"{t['input']} {inp}"]
        else:
            lines += [f"{t['input']} {inp}", f"{t['output']} {out.strip()}"]
    return "\n".join(lines)


_FIELD = re.compile(r"^[ \t*#-]*(Input|Output|Class label|输入|输出|类别)\s*[:：]\s?", re.IGNORECASE | re.MULTILINE)
_CANON = {"input": "input", "输入": "input", "output": "output", "输出": "output", "class label": "label", "类别": "label"}
_NONE_VALUES = {"<none>", "<无>", "none", "无", "n/a", ""}


@dataclass
class ParsedInstance:
    input: str
    output: str
    last: bool = False

    def as_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "last": self.last}


def parse_instances(text: str, classification: bool) -> list[ParsedInstance]:
    """Read `Input:/Output:` pairs (or `Class label:/Input:` pairs for classification)."""
    marks = list(_FIELD.finditer(text))
    fields = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        fields.append((_CANON[m.group(1).lower()], text[m.end(): nxt.start() if nxt else len(text)].strip()))
    first, second = ("label", "input") if classification else ("input", "output")
    out: list[ParsedInstance] = []
    i = 0
    while i < len(fields):
        if fields[i][0] == first and i + 1 < len(fields) and fields[i + 1][0] == second:
            a, b = fields[i][1], fields[i + 1][1]
            inp, outp = (b, a) if classification else (a, b)
            # `last` marks a pair that ends the text: the one a length cut-off would have clipped.
            out.append(ParsedInstance("" if inp.lower() in _NONE_VALUES else inp, outp, last=i + 2 == len(fields)))
            i += 2
        else:
            i += 1
    if not out:
        raise ParseError(f"no '{first}' / '{second}' pair found")
    return out
