"""raymill's vs LLaMA-Factory's input_ids and labels, token by token, for the alpaca template.

    .venv/bin/python bench/peers/label_mask_compare.py [--venv /tmp/raymill-llamafactory-venv]
        -> bench/results/label_masks_alpaca.json

The same alpaca-style rows (instruction / input / output; the first Self-Instruct seed task
instances, English and Chinese, with and without input, plus two rows with `history` and
one with `system`) and the same tokenizer (the bench model's) go through:
- raymill: train.formats.convert_row (the alpaca converter `--data` uses for an alpaca file)
  then train.tokenize.encode_sft with templates.get_template("alpaca"), cutoff 1024,
  train_on_prompt false: what `jobs/train.py --stage sft --template alpaca` tokenizes;
- LLaMA-Factory (in its own venv): its own data pipeline, `get_dataset` for stage sft with
  the file registered in a dataset_info.json (formatting alpaca), template alpaca,
  cutoff_len 1024, train_on_prompt false, no packing.
Per example: equal ids? equal labels? the first differing position with both sides'
tokens and decoded context around it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = Path("/tmp/raymill-llamafactory-venv")
IGNORE = -100
CUTOFF = 1024


# ---------------------------------------------------------------- child: LLaMA-Factory's venv
def child_main(model: str, data_dir: str, out_path: str, work: str) -> None:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {"model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": "full",
            "dataset": "alpaca_cmp", "dataset_dir": data_dir, "template": "alpaca", "cutoff_len": CUTOFF,
            "train_on_prompt": False, "packing": False, "overwrite_cache": True, "output_dir": work,
            "overwrite_output_dir": True, "report_to": "none", "per_device_train_batch_size": 1,
            "bf16": False, "fp16": False, "use_cpu": True}
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    train = dataset["train_dataset"]
    rows = [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in train]
    out = {"eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id, "rows": rows}
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


# ---------------------------------------------------------------- parent: raymill's venv
def alpaca_rows() -> list[dict]:
    shared = Path(os.environ.get("RAYMILL_SHARED_DATA", REPO.parent / "shared" / "data")) / "self_instruct"
    rows = []
    for name, take in (("seed_tasks.jsonl", 13), ("zh_seed_tasks.jsonl", 4)):
        tasks = [json.loads(line) for line in (shared / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        with_input = [t for t in tasks if t["instances"][0].get("input")]
        without = [t for t in tasks if not t["instances"][0].get("input")]
        picked = (with_input[: (take + 1) // 2] + without[: take // 2])[:take]
        for t in picked:
            inst = t["instances"][0]
            rows.append({"id": f"{t['id']}", "instruction": t["instruction"], "input": inst.get("input") or "",
                         "output": inst["output"]})
    # multi-turn (history) and an explicit system prompt: where the templates' separators show
    a, b, c = rows[0], rows[1], rows[2]
    rows.append({"id": "history-1", "instruction": b["instruction"], "input": b["input"], "output": b["output"],
                 "history": [[a["instruction"] + ("\n" + a["input"] if a["input"] else ""), a["output"]]]})
    rows.append({"id": "history-2", "instruction": c["instruction"], "input": "", "output": c["output"],
                 "history": [[a["instruction"], a["output"]], [b["instruction"], b["output"]]]})
    rows.append({"id": "system-1", "instruction": a["instruction"], "input": a["input"], "output": a["output"],
                 "system": "You are a careful assistant."})
    return rows


def raymill_encode(rows: list[dict], data_file: Path, tokenizer) -> list[dict]:
    from train.formats import convert_row, load_dataset_spec
    from train.templates import get_template
    from train.tokenize import Drop, encode_sft

    spec = load_dataset_spec(str(data_file))
    template = get_template("alpaca")
    out = []
    for i, row in enumerate(rows):
        record = convert_row(row, spec, i)
        if isinstance(record, Drop):
            out.append({"drop": f"{record.reason}: {record.detail}"})
            continue
        ex = encode_sft(record, tokenizer, template, CUTOFF, train_on_prompt=False)
        out.append({"drop": f"{ex.reason}: {ex.detail}"} if isinstance(ex, Drop)
                   else {"input_ids": ex.input_ids, "labels": ex.labels})
    return out, spec.format


def first_diff(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def context(tokenizer, ids: list[int], labels: list[int], pos: int, width: int = 6) -> dict:
    lo, hi = max(0, pos - width), min(len(ids), pos + width + 1)
    return {"tokens": [tokenizer.convert_ids_to_tokens(t) for t in ids[lo:hi]], "ids": ids[lo:hi],
            "labels": labels[lo:hi], "from": lo, "at": (tokenizer.convert_ids_to_tokens(ids[pos]) if pos < len(ids)
                                                          else "<end>"),
            "decoded_before": tokenizer.decode(ids[lo:pos]), "decoded_after": tokenizer.decode(ids[pos:hi])}


def label_spans(labels: list[int]) -> list[list[int]]:
    spans, start = [], None
    for i, x in enumerate(labels + [IGNORE]):
        if x != IGNORE and start is None:
            start = i
        elif x == IGNORE and start is not None:
            spans.append([start, i])
            start = None
    return spans


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(*sys.argv[2:6])
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", default=str(DEFAULT_VENV))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "label_masks_alpaca.json"))
    args = parser.parse_args()
    import tempfile

    from transformers import AutoTokenizer

    from bench.peers.common import bench_model_path, write_jsonl

    model = bench_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model)
    work = Path(tempfile.mkdtemp(prefix="label-mask-cmp-"))
    data_dir = work / "data"
    rows = alpaca_rows()
    data_file = write_jsonl(data_dir / "alpaca_cmp.jsonl", rows)
    info = {"alpaca_cmp": {"file_name": "alpaca_cmp.jsonl", "formatting": "alpaca",
                           "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                       "history": "history", "system": "system"}}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    mine, fmt = raymill_encode(rows, data_file, tokenizer)

    lf_out = work / "llamafactory.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_DATASETS_CACHE": str(work / "hf-cache")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(Path(args.venv) / "bin" / "python"), __file__, "--child", str(model), str(data_dir),
                           str(lf_out), str(work / "lf-out")], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"LLaMA-Factory side failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lf = json.loads(lf_out.read_text(encoding="utf-8"))
    versions = json.loads(subprocess.run([str(Path(args.venv) / "bin" / "python"), "-c",
                                          ("import importlib.metadata as m, json; print(json.dumps({k: m.version(k) for k in "
                                           "('llamafactory', 'transformers', 'torch')}))")],
                                         env=env, capture_output=True, text=True, check=True).stdout)
    if len(lf["rows"]) != len(rows):
        raise SystemExit(f"LLaMA-Factory kept {len(lf['rows'])} of {len(rows)} rows; cannot align by position")

    examples = []
    for row, a, b in zip(rows, mine, lf["rows"]):
        item = {"id": row["id"], "has_input": bool(row.get("input")), "history_turns": len(row.get("history") or []),
                "system": bool(row.get("system"))}
        if "drop" in a:
            item["raymill_drop"] = a["drop"]
            examples.append(item)
            continue
        ids_eq, labels_eq = a["input_ids"] == b["input_ids"], a["labels"] == b["labels"]
        item.update(equal_ids=ids_eq, equal_labels=labels_eq, raymill_len=len(a["input_ids"]),
                    llamafactory_len=len(b["input_ids"]),
                    raymill_label_tokens=sum(x != IGNORE for x in a["labels"]),
                    llamafactory_label_tokens=sum(x != IGNORE for x in b["labels"]),
                    raymill_label_spans=label_spans(a["labels"]), llamafactory_label_spans=label_spans(b["labels"]))
        for key, d in (("ids", first_diff(a["input_ids"], b["input_ids"])),
                       ("labels", first_diff(a["labels"], b["labels"]))):
            if d is not None:
                item[f"first_diff_{key}"] = {"position": d, "raymill": context(tokenizer, a["input_ids"], a["labels"], d),
                                             "llamafactory": context(tokenizer, b["input_ids"], b["labels"], d)}
        # labelled text on each side (what is trained), so a mask difference reads as text
        item["raymill_labelled_text_tail"] = tokenizer.decode([x for x in a["labels"] if x != IGNORE][-8:])
        item["llamafactory_labelled_text_tail"] = tokenizer.decode([x for x in b["labels"] if x != IGNORE][-8:])
        examples.append(item)

    compared = [e for e in examples if "equal_ids" in e]
    summary = {"examples": len(examples), "compared": len(compared),
               "equal_ids": sum(e["equal_ids"] for e in compared),
               "equal_labels": sum(e["equal_labels"] for e in compared),
               "raymill_drops": [e["id"] for e in examples if "raymill_drop" in e]}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "tokenizer": str(model), "raymill_format_sniffed": fmt, "template": "alpaca", "cutoff_len": CUTOFF,
              "train_on_prompt": False, "llamafactory": versions,
              "llamafactory_eos": [lf["eos_token"], lf["eos_token_id"]], "raymill_eos": [tokenizer.eos_token,
                                                                                          tokenizer.eos_token_id],
              "summary": summary, "examples": examples, "work_dir": str(work)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
