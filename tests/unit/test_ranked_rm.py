"""Ranked lists for the reward model: the `ranked_preference` record kind, converters from
LLaMA-Factory ranking data, OASST-style message trees and HH-RLHF transcripts, and
`ranked_list_rm_loss` over all C(K,2) pairs in `--stage rm`'s trainer."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from schemas import SchemaError, table_from_rows
from schemas import convert


def msg(role, content):
    return {"role": role, "content": content, "tool_calls": None}


RANKED = {"id": "r1", "prompt": [msg("user", "Name a fruit")], "responses": ["Apple", "Pear, maybe", "Rock"],
          "scores": [2.0, 1.0, -1.0]}


# ---------------------------------------------------------------- the record kind
def test_ranked_kind_validates_lists_and_names_the_bad_field():
    table = table_from_rows([RANKED], "ranked_preference")
    assert table.schema.metadata[b"raymill.kind"] == b"ranked_preference"
    with pytest.raises(SchemaError, match=r"row 0 \(id='one'\).*'responses'.*at least 2"):
        table_from_rows([{**RANKED, "id": "one", "responses": ["Apple"], "scores": None}], "ranked_preference")
    with pytest.raises(SchemaError, match=r"'scores'.*one score per response"):
        table_from_rows([{**RANKED, "scores": [1.0, 0.0]}], "ranked_preference")
    with pytest.raises(SchemaError, match=r"'scores'.*best first"):
        table_from_rows([{**RANKED, "scores": [0.0, 1.0, 2.0]}], "ranked_preference")
    with pytest.raises(SchemaError, match=r"'responses'.*null"):
        table_from_rows([{**RANKED, "responses": ["a", None], "scores": None}], "ranked_preference")
    # The pair kind is untouched.
    table_from_rows([{"id": "p", "prompt": [msg("user", "q")], "chosen": "a", "rejected": "b"}], "preference")


def test_pairs_and_ranked_lists_convert_both_ways():
    pairs = table_from_rows([{"id": "p", "prompt": [msg("user", "q")], "chosen": "good", "rejected": "bad",
                              "system": "S"}], "preference")
    ranked = convert.preference_to_ranked(pairs).to_pylist()[0]
    assert ranked["responses"] == ["good", "bad"] and ranked["system"] == "S"
    best_worst = convert.ranked_to_preference(table_from_rows([RANKED], "ranked_preference")).to_pylist()[0]
    assert (best_worst["chosen"], best_worst["rejected"], best_worst["margin"]) == ("Apple", "Rock", 3.0)


def test_rows_with_scores_are_ranked_best_first():
    rows = [{"prompt": "Name a fruit", "responses": ["Rock", "Apple", "Pear"], "scores": [0.1, 0.9, 0.5]}]
    record = convert.rows_to_ranked(rows).to_pylist()[0]
    assert record["responses"] == ["Apple", "Pear", "Rock"] and record["scores"] == [0.9, 0.5, 0.1]
    record = convert.rows_to_ranked([{"prompt": "q", "responses": ["x", "y", "z"], "ranks": [2, 0, 1]}]).to_pylist()[0]
    assert record["responses"] == ["y", "z", "x"]


# ---------------------------------------------------------------- OASST trees
OASST_TREE = {
    "message_tree_id": "t1",
    "prompt": {
        "message_id": "m0", "role": "prompter", "text": "Tell me a joke.",
        "replies": [
            {"message_id": "a1", "role": "assistant", "text": "Second best", "rank": 1, "replies": [
                {"message_id": "p2", "role": "prompter", "text": "Another?", "replies": [
                    {"message_id": "b0", "role": "assistant", "text": "Yes: knock knock", "rank": 0, "replies": []},
                    {"message_id": "b1", "role": "assistant", "text": "No.", "rank": 1, "replies": []}]}]},
            {"message_id": "a0", "role": "assistant", "text": "Best joke", "rank": 0, "replies": []},
            {"message_id": "a2", "role": "assistant", "text": "Unranked", "rank": None, "replies": []},
            {"message_id": "a3", "role": "assistant", "text": "Worst", "rank": 2, "replies": []},
        ],
    },
}


def _flat(tree):
    out = []

    def walk(node, parent):
        out.append({k: v for k, v in node.items() if k != "replies"} | {"parent_id": parent,
                                                                        "message_tree_id": tree["message_tree_id"]})
        for child in node.get("replies") or []:
            walk(child, node["message_id"])

    walk(tree["prompt"], None)
    return out


def test_oasst_tree_gives_one_ranked_list_per_prompter_turn():
    table = convert.oasst_to_ranked([OASST_TREE])
    records = {r["id"]: r for r in table.to_pylist()}
    assert set(records) == {"m0", "p2"}
    assert records["m0"]["responses"] == ["Best joke", "Second best", "Worst"]  # the unranked reply is left out
    assert [(m["role"], m["content"]) for m in records["p2"]["prompt"]] == [
        ("user", "Tell me a joke."), ("assistant", "Second best"), ("user", "Another?")]
    assert records["p2"]["responses"] == ["Yes: knock knock", "No."]
    # The flat export (one message per row, parent ids) gives the same lists.
    assert convert.oasst_to_ranked(_flat(OASST_TREE)).to_pylist() == table.to_pylist()


# ---------------------------------------------------------------- HH-RLHF
HH_ROW = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Any advice on sleep?\n\nAssistant: Keep a schedule.",
          "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Any advice on sleep?\n\nAssistant: Keep awake."}


def test_hh_rlhf_transcripts_split_into_prompt_and_responses():
    record = convert.hh_rlhf_to_preference([HH_ROW]).to_pylist()[0]
    assert [(m["role"], m["content"]) for m in record["prompt"]] == [
        ("user", "Hi there"), ("assistant", "Hello!"), ("user", "Any advice on sleep?")]
    # Both responses begin with "Keep": the split is at the turn marker, not the shared characters.
    assert (record["chosen"], record["rejected"]) == ("Keep a schedule.", "Keep awake.")
    diverged = {"chosen": "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: D",
                "rejected": "\n\nHuman: A\n\nAssistant: X\n\nHuman: C\n\nAssistant: D"}
    with pytest.raises(SchemaError, match=r"row 0.*differ before the last assistant turn"):
        convert.hh_rlhf_to_preference([diverged])


def test_formats_read_hh_rlhf_oasst_and_ranked_files(tmp_path):
    from train.formats import convert_row, iter_raw_rows, load_dataset_spec

    (tmp_path / "hh.jsonl").write_text(json.dumps(HH_ROW) + "\n")
    (tmp_path / "trees.jsonl").write_text(json.dumps(OASST_TREE) + "\n")
    (tmp_path / "ranked.jsonl").write_text(json.dumps({"prompt": "q", "responses": ["a", "b", "c"]}) + "\n")
    hh = load_dataset_spec(str(tmp_path / "hh.jsonl"))
    assert (hh.format, hh.kind) == ("hh_rlhf", "preference")
    assert convert_row(next(iter_raw_rows(hh)), hh, 0)["chosen"] == "Keep a schedule."
    trees = load_dataset_spec(str(tmp_path / "trees.jsonl"))
    assert (trees.format, trees.kind) == ("oasst", "ranked_preference")
    records = [convert_row(r, trees, i) for i, r in enumerate(iter_raw_rows(trees))]
    assert [r["responses"][0] for r in records] == ["Best joke", "Yes: knock knock"]
    ranked = load_dataset_spec(str(tmp_path / "ranked.jsonl"))
    assert ranked.kind == "ranked_preference"
    assert convert_row(next(iter_raw_rows(ranked)), ranked, 0)["responses"] == ["a", "b", "c"]
    # LLaMA-Factory ranking data (pairs) can feed the ranked loss as lists of two.
    lf = load_dataset_spec({"name": "lf", "path": str(tmp_path / "hh.jsonl"), "format": "hh_rlhf"})
    assert lf.kind == "preference"


# ---------------------------------------------------------------- tokenize, collate, loss
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_tokenize_ranked_list_and_collate_rank_major(tokenizer):
    from train.preference_data import DROP_IDENTICAL, PreferenceCollator, collate_pairs, tokenize_ranked

    example = tokenize_ranked({**RANKED}, tokenizer, None, cutoff_len=64)
    assert len(example["ranked_ids"]) == 3
    assert example["chosen_ids"] == example["ranked_ids"][0] and example["rejected_ids"] == example["ranked_ids"][-1]
    assert tokenize_ranked({**RANKED, "responses": ["a", "b", "a"]}, tokenizer, None, 64) == DROP_IDENTICAL

    pair = {"id": "p", "prompt_ids": example["prompt_ids"], "chosen_ids": [5, 6], "rejected_ids": [7]}
    # Ray Data hands nested lists over as numpy arrays of arrays.
    from_ray = {**example, "ranked_ids": np.array([np.array(r, dtype=np.int32) for r in example["ranked_ids"]],
                                                  dtype=object)}
    batch = PreferenceCollator(tokenizer.pad_token_id)([from_ray, {**pair, "ranked_ids": None}])
    assert batch["rank_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["input_ids"].shape[0] == 6  # rank-major: [rank 0 of every example; rank 1; rank 2]
    n_prompt = len(example["prompt_ids"])
    assert batch["input_ids"][1, n_prompt:n_prompt + 2].tolist() == [5, 6]  # the pair's chosen is its rank 0
    assert batch["input_ids"][3, n_prompt].item() == 7
    # Batches of pairs alone keep the pair layout (and its margin option).
    assert "rank_mask" not in PreferenceCollator(tokenizer.pad_token_id)([pair, pair])
    assert set(collate_pairs([pair], tokenizer.pad_token_id)) >= {"input_ids", "labels"}


def test_rm_trainer_uses_the_ranked_list_loss(tiny_model_dir, tokenizer, tmp_path):
    from train.args import parse_train_config
    from train.losses import ranked_list_rm_loss
    from train.preference_data import PreferenceCollator, tokenize_ranked
    from train.reward_model import sequence_rewards
    from train.stages.preference_stage import PreferenceOptions
    from train.stages.rm import RewardStreamTrainer, apply_reward_finetuning, load_reward_backbone
    from train.worker import StreamBatches, training_arguments

    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": "rm", "output": str(tmp_path)})
    model = apply_reward_finetuning(load_reward_backbone(cfg, tokenizer), cfg)
    examples = [tokenize_ranked({**RANKED, "id": f"r{i}"}, tokenizer, None, 64) for i in range(2)]
    collate = PreferenceCollator(tokenizer.pad_token_id)
    cls = type("T", (RewardStreamTrainer,), {"options": PreferenceOptions.from_config(cfg)})
    trainer = cls(model=model, args=training_arguments(cfg, str(tmp_path / "hf"), 1),
                  train_dataset=StreamBatches(lambda: iter(examples), 2, collate), processing_class=tokenizer)
    batch = collate(examples)
    loss = trainer.compute_loss(model, batch)
    rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).view(3, 2).T
    torch.testing.assert_close(loss, ranked_list_rm_loss(rewards, batch["rank_mask"]))
    r = rewards[0].tolist()
    by_hand = sum(-math.log(1 / (1 + math.exp(-(r[i] - r[j])))) for i, j in ((0, 1), (0, 2), (1, 2))) / 3
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    assert 0.0 <= trainer._logged["accuracy"][-1] <= 1.0


def test_tokenize_step_keeps_ranked_lists_and_pairs_side_by_side(tiny_model_dir):
    from train.stages.preference_stage import TokenizePairs

    pair = {"id": "p", "prompt": [msg("user", "q")], "chosen": "good", "rejected": "bad"}
    step = TokenizePairs(str(tiny_model_dir), None, cutoff_len=64, eval_fraction=0.0)
    out = step({"id": ["r1", "p", "x"], "kind": ["ranked_preference", "preference", "ranked_preference"],
                "record": [json.dumps(RANKED), json.dumps(pair), json.dumps({**RANKED, "responses": ["a", " "]})],
                "drop_reason": [None, None, None]}).to_pylist()
    assert len(out[0]["ranked_ids"]) == 3 and out[0]["chosen_ids"] == out[0]["ranked_ids"][0]
    assert out[1]["ranked_ids"] is None and out[1]["chosen_ids"]
    assert out[2]["drop_reason"] == "empty_response"
