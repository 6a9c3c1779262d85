"""Reward model: last-real-token pooling (right/left padding, packing), training on a
separable toy set, save/load/score; preference tokenization and its counted drops."""
from __future__ import annotations

import pytest
import torch

from train.losses import pairwise_rm_loss
from train.preference_data import (DROP_EMPTY, DROP_IDENTICAL, DROP_PROMPT_TOO_LONG, IGNORE_INDEX, collate_pairs,
                                   split_train_eval, tokenize_preferences, toy_preference_table)
from train.reward_model import (build_reward_model, last_token_index, load_reward_model, packed_segment_ends,
                                save_reward_model, sequence_rewards)


def test_last_token_index_handles_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4]


def test_packed_segment_ends():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[1] * 8 + [0, 0], [1] * 10])
    rows, cols = packed_segment_ends(position_ids, mask)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 2), (0, 4), (0, 7), (1, 3), (1, 9)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir, tokenizer):
    return build_reward_model(tiny_model_dir, tokenizer).eval()


def test_rewards_are_the_same_padded_either_way_or_packed(reward_model, tokenizer):
    seqs = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    pad = tokenizer.pad_token_id
    width = max(map(len, seqs))
    with torch.no_grad():
        alone = torch.cat([sequence_rewards(reward_model, torch.tensor([s])) for s in seqs])
        right = sequence_rewards(reward_model, torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
                                 torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]))
        left = sequence_rewards(reward_model, torch.tensor([[pad] * (width - len(s)) + s for s in seqs]),
                                torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs]))
        flat = torch.tensor([sum(seqs, []) + [pad, pad]])
        positions = torch.tensor([[i for s in seqs for i in range(len(s))] + [0, 0]])
        packed = sequence_rewards(reward_model, flat, torch.tensor([[1] * 12 + [0, 0]]), positions, packed=True)
    torch.testing.assert_close(right, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)
    # Not trivially equal: different sequences get different rewards.
    assert len({round(v, 5) for v in alone.tolist()}) == 3


def test_pad_equal_to_eos_does_not_move_the_read_position(reward_model, tokenizer):
    # HF's own pooling would skip a trailing real token equal to the pad id; ours reads the mask.
    eos_like = tokenizer.pad_token_id
    seq = torch.tensor([[5, 6, 7, eos_like]])
    with torch.no_grad():
        ours = sequence_rewards(reward_model, seq, torch.ones_like(seq))
        from train.reward_model import token_scores

        per_token = token_scores(reward_model, seq, torch.ones_like(seq))
    assert ours.item() == pytest.approx(per_token[0, 3].item(), rel=1e-5)
    assert ours.item() != pytest.approx(per_token[0, 2].item(), rel=1e-5)


def _toy_pairs(tokenizer, n, seed, cutoff=96):
    return tokenize_preferences(toy_preference_table(n, seed=seed), tokenizer, cutoff_len=cutoff).examples


def test_reward_model_learns_a_separable_toy_set_and_round_trips(tiny_model_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = build_reward_model(tiny_model_dir, tokenizer)
    train_table, eval_table = split_train_eval(toy_preference_table(240, seed=3), eval_fraction=0.25, seed=0)
    train = tokenize_preferences(train_table, tokenizer, 96).examples
    held_out = tokenize_preferences(eval_table, tokenizer, 96).examples
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(25):
        chunk = [train[(step * 8 + i) % len(train)] for i in range(8)]
        batch = collate_pairs(chunk, tokenizer.pad_token_id)
        chosen, rejected = sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).chunk(2)
        loss = pairwise_rm_loss(chosen, rejected)
        optimizer.zero_grad()
        loss.backward()
        assert model.score.weight.grad is not None and model.score.weight.grad.abs().sum() > 0
        optimizer.step()
    model.eval()
    batch = collate_pairs(held_out, tokenizer.pad_token_id)
    with torch.no_grad():
        chosen, rejected = sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).chunk(2)
    accuracy = (chosen > rejected).float().mean().item()
    assert accuracy > 0.9, accuracy

    # Saved and loaded, the model scores conversations exactly as training tokenized them.
    path = save_reward_model(model, tokenizer, tmp_path / "rm", {"cutoff_len": 96})
    loaded = load_reward_model(path)
    rows = eval_table.to_pylist()[:4]
    convs = [[{"role": m["role"], "content": m["content"]} for m in r["prompt"]] + [{"role": "assistant", "content": r["chosen"]}]
             for r in rows]
    scores = loaded.score(convs)
    by_id = {ex["id"]: i for i, ex in enumerate(held_out)}
    expected = [chosen[by_id[r["id"]]].item() for r in rows]
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert loaded.score_responses([c[:-1] for c in convs], [r["rejected"] for r in rows]) == pytest.approx(
        [rejected[by_id[r["id"]]].item() for r in rows], rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="assistant"):
        loaded.score([[{"role": "user", "content": "hi"}]])


def test_preference_tokenization_counts_every_drop(tokenizer):
    from schemas.validate import table_from_rows

    def row(i, chosen, rejected, prompt="Write one sentence about the city."):
        return {"id": f"p{i}", "prompt": [{"role": "user", "content": prompt, "tool_calls": None}],
                "chosen": chosen, "rejected": rejected}

    table = table_from_rows([
        row(0, "The city builds a plan.", "city the plan builds"),
        row(1, "Same answer.", "Same answer. "),
        row(2, "   ", "Not empty."),
        row(3, "Fine.", "Bad.", prompt="word " * 200),
        row(4, "A long answer " * 30, "Short."),
    ], "preference")
    out = tokenize_preferences(table, tokenizer, cutoff_len=64)
    assert out.count.rows_in == 5 and out.count.kept == 2
    assert out.count.dropped == {DROP_IDENTICAL: 1, DROP_EMPTY: 1, DROP_PROMPT_TOO_LONG: 1}
    assert dict(out.dropped) == {"p1": DROP_IDENTICAL, "p2": DROP_EMPTY, "p3": DROP_PROMPT_TOO_LONG}
    first, long = out.examples
    # The response tokens are the reply plus the template's stop token.
    assert tokenizer.decode(first["chosen_ids"]) == "The city builds a plan.<|im_end|>"
    assert tokenizer.decode(first["prompt_ids"]).endswith("<|im_start|>assistant\n")
    # An over-long response is cut to the cutoff; the prompt stays whole.
    assert len(long["prompt_ids"]) + len(long["chosen_ids"]) == 64
    batch = collate_pairs(out.examples, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    labels = batch["labels"][0]
    n_prompt = len(first["prompt_ids"])
    assert (labels[:n_prompt] == IGNORE_INDEX).all()
    assert labels[n_prompt:n_prompt + len(first["chosen_ids"])].tolist() == first["chosen_ids"]
    assert batch["ids"] == ["p0", "p4"]
