"""DPO and reward-model losses against their formulas, and DPO against TRL's own DPOTrainer."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.losses import (dpo_loss, pairwise_rm_loss, ranked_list_rm_loss, ranked_pairs, sequence_logps)

BETA = 0.3


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-(torch.rand(5, generator=g) * 20 + 1) for _ in range(4))
    nc = torch.tensor([3.0, 7.0, 1.0, 12.0, 5.0])
    nr = torch.tensor([4.0, 2.0, 9.0, 6.0, 5.0])
    return pc.requires_grad_(), pr.requires_grad_(), rc, rr, nc, nr


def _formula(loss_type, pc, pr, rc, rr, nc, nr, gamma):
    """The loss written out per pair with Python floats, independent of train.losses."""
    total = 0.0
    n = len(pc)
    for i in range(n):
        c, r = (pc[i] - rc[i]), (pr[i] - rr[i])
        if loss_type == "sigmoid":
            total = total + -F.logsigmoid(BETA * (c - r))
        elif loss_type == "hinge":
            total = total + torch.clamp(1 - BETA * (c - r), min=0)
        else:
            total = total + (c / nc[i] - r / nr[i] - 1 / (2 * BETA)) ** 2
    loss = total / n
    if gamma:
        loss = loss + gamma * (-pc.sum() / nc.sum())
    return loss


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_dpo_loss_rewards_and_gradients_match_formula(loss_type, gamma):
    pc, pr, rc, rr, nc, nr = _inputs()
    out = dpo_loss(pc, pr, rc, rr, beta=BETA, loss_type=loss_type, sft_weight=gamma, chosen_lengths=nc, rejected_lengths=nr)
    ours = torch.autograd.grad(out.loss, (pc, pr))

    pc2, pr2 = pc.detach().clone().requires_grad_(), pr.detach().clone().requires_grad_()
    ref = _formula(loss_type, pc2, pr2, rc, rr, nc, nr, gamma)
    expected = torch.autograd.grad(ref, (pc2, pr2))

    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out.chosen_rewards, BETA * (pc - rc).detach())
    torch.testing.assert_close(out.rejected_rewards, BETA * (pr - rr).detach())
    margins = BETA * ((pc - rc) - (pr - rr)).detach()
    assert out.margins.item() == pytest.approx(margins.mean().item(), rel=1e-6)
    assert out.accuracy.item() == pytest.approx((margins > 0).float().mean().item())
    assert not out.chosen_rewards.requires_grad


def test_sigmoid_gradient_is_the_closed_form():
    # d/d logp_c of mean(-log σ(β Δ)) = -β σ(-β Δ) / B, and the opposite sign for rejected.
    pc, pr, rc, rr, _, _ = _inputs(3)
    out = dpo_loss(pc, pr, rc, rr, beta=BETA)
    gc, gr = torch.autograd.grad(out.loss, (pc, pr))
    delta = ((pc - rc) - (pr - rr)).detach()
    closed = -BETA * torch.sigmoid(-BETA * delta) / len(pc)
    torch.testing.assert_close(gc, closed)
    torch.testing.assert_close(gr, -closed)


def test_dpo_loss_rejects_bad_arguments():
    pc, pr, rc, rr, nc, _ = _inputs()
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(pc, pr, rc, rr, loss_type="ipo")
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(pc, pr, rc, rr, sft_weight=0.5)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0)


def test_pairwise_rm_loss_matches_formula():
    rc = torch.tensor([1.0, -0.5, 2.0])
    rr = torch.tensor([0.0, 0.5, 2.5])
    margin = torch.tensor([0.5, 0.0, 1.0])
    plain = sum(-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(rc.tolist(), rr.tolist())) / 3
    with_margin = sum(-math.log(1 / (1 + math.exp(-(c - r - m)))) for c, r, m in
                      zip(rc.tolist(), rr.tolist(), margin.tolist())) / 3
    assert pairwise_rm_loss(rc, rr).item() == pytest.approx(plain, rel=1e-6)
    assert pairwise_rm_loss(rc, rr, margin).item() == pytest.approx(with_margin, rel=1e-6)
    centred = plain + 0.01 * sum((c + r) ** 2 for c, r in zip(rc.tolist(), rr.tolist())) / 3
    assert pairwise_rm_loss(rc, rr, center_coefficient=0.01).item() == pytest.approx(centred, rel=1e-6)


def test_ranked_list_loss_averages_all_pairs():
    assert ranked_pairs(4) == ([0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3])
    rewards = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 0.3, -0.2, 9.9]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])

    def per_prompt(r):
        pairs = [(i, j) for i in range(len(r)) for j in range(i + 1, len(r))]
        return sum(-math.log(1 / (1 + math.exp(-(r[i] - r[j])))) for i, j in pairs) / (len(r) * (len(r) - 1) / 2)

    full = (per_prompt(rewards[0].tolist()) + per_prompt(rewards[1].tolist())) / 2
    masked = (per_prompt(rewards[0].tolist()) + per_prompt(rewards[1, :3].tolist())) / 2
    assert ranked_list_rm_loss(rewards).item() == pytest.approx(full, rel=1e-6)
    assert ranked_list_rm_loss(rewards, mask).item() == pytest.approx(masked, rel=1e-6)
    # K = 2 is the pairwise loss.
    assert ranked_list_rm_loss(rewards[:, :2]).item() == pytest.approx(
        pairwise_rm_loss(rewards[:, 0], rewards[:, 1]).item(), rel=1e-6)


def test_sequence_logps_sums_only_labelled_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    logps, counts = sequence_logps(logits, labels)
    lsm = logits.log_softmax(-1)
    expected0 = lsm[0, 1, 3] + lsm[0, 2, 4]
    expected1 = lsm[1, 0, 1] + lsm[1, 1, 2] + lsm[1, 2, 6] + lsm[1, 3, 0]
    torch.testing.assert_close(logps, torch.stack([expected0, expected1]))
    assert counts.tolist() == [2, 4]


# ---------------------------------------------------------------- parity with TRL
@pytest.fixture(scope="module")
def policy_and_reference(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def load(noise_seed=None):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        if noise_seed is not None:  # make the policy differ from the reference
            torch.manual_seed(noise_seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.02 * torch.randn_like(p))
        return model

    return tokenizer, load


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_and_gradients_equal_trl_dpo_trainer(policy_and_reference, tmp_path, loss_type):
    import datasets
    from trl import DPOConfig, DPOTrainer

    from schemas.convert import preference_to_trl
    from train.preference_data import collate_pairs, toy_preference_table, tokenize_preferences

    tokenizer, load = policy_and_reference
    table = toy_preference_table(4, seed=7)
    gamma = 0.5

    # Ours: our tokenization, our log-probs, our loss.
    policy, reference = load(noise_seed=1), load()
    tokenized = tokenize_preferences(table, tokenizer, cutoff_len=128)
    batch = collate_pairs(tokenized.examples, tokenizer.pad_token_id)
    logps, counts = sequence_logps(policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   batch["labels"])
    with torch.no_grad():
        ref_logps, _ = sequence_logps(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                      batch["labels"])
    out = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=BETA, loss_type=loss_type, sft_weight=gamma,
                   chosen_lengths=counts.chunk(2)[0], rejected_lengths=counts.chunk(2)[1])
    out.loss.backward()
    our_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}

    # TRL: its loss on fresh copies of the same models.
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, beta=BETA,
                     loss_type=[loss_type, "sft"], loss_weights=[1.0, gamma], max_length=128,
                     report_to=[], use_cpu=True, bf16=False, logging_steps=1)
    trainer = DPOTrainer(model=load(noise_seed=1), ref_model=load(), args=args,
                         train_dataset=datasets.Dataset.from_list(preference_to_trl(table)), processing_class=tokenizer)
    trainer.model.train()
    # The same batch in TRL's layout: [chosen; rejected] rows with a completion mask.
    trl_batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                 "completion_mask": (batch["labels"] != -100).long()}
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    trl_loss.backward()

    assert out.loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(out.chosen_rewards.mean().item(), rel=1e-5, abs=1e-6)
    assert metrics["rewards/rejected"][-1] == pytest.approx(out.rejected_rewards.mean().item(), rel=1e-5, abs=1e-6)
    assert metrics["rewards/margins"][-1] == pytest.approx(out.margins.item(), rel=1e-5, abs=1e-6)
    assert metrics["rewards/accuracies"][-1] == pytest.approx(out.accuracy.item())
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p.grad, our_grads[name], rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- reference-free DPO, cDPO, ORPO, SimPO
def _log1mexp(x: float) -> float:
    return math.log(1 - math.exp(x))


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _trl_self(**attrs):
    """The few attributes TRL's CPO/ORPO loss methods read from their trainer."""
    from types import SimpleNamespace

    return SimpleNamespace(accelerator=SimpleNamespace(device="cpu"), alpha=0.0, **attrs)


def test_label_smoothing_is_conservative_dpo():
    """cDPO: a label is wrong with probability ε, so the loss is the expected sigmoid loss
    over both labels: −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)."""
    pc, pr, rc, rr, _, _ = _inputs(4)
    eps = 0.2
    out = dpo_loss(pc, pr, rc, rr, beta=BETA, label_smoothing=eps)
    d = [((pc[i] - rc[i]) - (pr[i] - rr[i])).item() for i in range(len(pc))]
    expected = sum(-(1 - eps) * _logsig(BETA * x) - eps * _logsig(-BETA * x) for x in d) / len(d)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    # The gradient changes sign where the smoothed target is met: d/dΔ = β(σ(βΔ) − (1 − ε)).
    gc, = torch.autograd.grad(out.loss, (pc,))
    closed = torch.tensor([BETA * (1 / (1 + math.exp(-BETA * x)) - (1 - eps)) for x in d]) / len(d)
    torch.testing.assert_close(gc, closed)
    assert dpo_loss(pc, pr, rc, rr, beta=BETA, label_smoothing=0.0).loss.item() == pytest.approx(
        dpo_loss(pc, pr, rc, rr, beta=BETA).loss.item())


def test_reference_free_dpo_is_trl_cpo_sigmoid():
    """With no reference, the implicit reward is β·log π(y|x): TRL's CPO "sigmoid" loss
    (summed log-probs, label smoothing included)."""
    from trl.experimental.cpo import CPOTrainer

    pc, pr, rc, rr, _, _ = _inputs(5)
    for eps in (0.0, 0.1):
        out = dpo_loss(pc, pr, None, None, beta=BETA, reference_free=True, label_smoothing=eps)
        zeros = torch.zeros_like(pc)
        assert out.loss.item() == pytest.approx(
            dpo_loss(pc, pr, zeros, zeros, beta=BETA, label_smoothing=eps).loss.item(), rel=1e-6)
        trl_losses, trl_chosen, trl_rejected = CPOTrainer.cpo_loss(
            _trl_self(beta=BETA, label_smoothing=eps, loss_type="sigmoid", simpo_gamma=0.0), pc, pr)
        assert out.loss.item() == pytest.approx(trl_losses.mean().item(), rel=1e-6)
        torch.testing.assert_close(out.chosen_rewards, trl_chosen)
        torch.testing.assert_close(out.rejected_rewards, trl_rejected)
    # Reference log-probs given together with reference_free would be silently ignored: refused.
    with pytest.raises(ValueError, match="reference_free"):
        dpo_loss(pc, pr, rc, rr, reference_free=True)


def test_orpo_loss_matches_formula_and_trl_orpo():
    """ORPO: NLL(chosen) − λ·mean log σ(log odds(y_w) − log odds(y_l)), odds on the
    per-token mean log-prob p: odds = p / (1 − p); λ is β. No reference model."""
    from trl.experimental.orpo import ORPOTrainer

    pc, pr, _, _, nc, nr = _inputs(6)
    pc = (pc.detach() / 10).requires_grad_()  # mean log-probs of a few nats, as a real model gives
    pr = (pr.detach() / 10).requires_grad_()
    out = dpo_loss(pc, pr, None, None, beta=BETA, loss_type="orpo", chosen_lengths=nc, rejected_lengths=nr)

    nll = -pc.sum().item() / nc.sum().item()
    ratios = []
    for i in range(len(pc)):
        c, r = pc[i].item() / nc[i].item(), pr[i].item() / nr[i].item()
        log_odds = (c - _log1mexp(c)) - (r - _log1mexp(r))
        ratios.append(_logsig(log_odds))
    expected = nll - BETA * sum(ratios) / len(ratios)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.sft_loss.item() == pytest.approx(nll, rel=1e-6)

    # TRL: its odds-ratio term on the same mean log-probs, plus the same token-mean NLL.
    pc2, pr2 = pc.detach().clone().requires_grad_(), pr.detach().clone().requires_grad_()
    trl_losses, trl_chosen, _, _, _ = ORPOTrainer.odds_ratio_loss(_trl_self(beta=BETA), pc2 / nc, pr2 / nr)
    trl_loss = -pc2.sum() / nc.sum() - trl_losses.mean()
    assert out.loss.item() == pytest.approx(trl_loss.item(), rel=1e-6)
    torch.testing.assert_close(out.chosen_rewards, trl_chosen)
    ours = torch.autograd.grad(out.loss, (pc, pr))
    theirs = torch.autograd.grad(trl_loss, (pc2, pr2))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_simpo_loss_matches_formula_and_trl_cpo_simpo(eps):
    """SimPO: −log σ(β·(mean log π(y_w) − mean log π(y_l)) − γ), no reference; + α·NLL."""
    from trl.experimental.cpo import CPOTrainer

    pc, pr, _, _, nc, nr = _inputs(7)
    gamma, alpha = 0.8, 0.4
    out = dpo_loss(pc, pr, None, None, beta=BETA, loss_type="simpo", simpo_gamma=gamma, label_smoothing=eps,
                   sft_weight=alpha, chosen_lengths=nc, rejected_lengths=nr)
    terms = []
    for i in range(len(pc)):
        z = BETA * (pc[i].item() / nc[i].item() - pr[i].item() / nr[i].item()) - gamma
        terms.append(-(1 - eps) * _logsig(z) - eps * _logsig(-z))
    nll = -pc.sum().item() / nc.sum().item()
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms) + alpha * nll, rel=1e-6)

    trl_losses, trl_chosen, trl_rejected = CPOTrainer.cpo_loss(
        _trl_self(beta=BETA, label_smoothing=eps, loss_type="simpo", simpo_gamma=gamma), pc / nc, pr / nr)
    assert out.losses.detach().tolist() == pytest.approx(trl_losses.detach().tolist(), rel=1e-6)
    torch.testing.assert_close(out.chosen_rewards, trl_chosen.detach())
    torch.testing.assert_close(out.rejected_rewards, trl_rejected.detach())


def test_new_dpo_options_reject_bad_combinations():
    pc, pr, rc, rr, nc, nr = _inputs()
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(pc, pr, None, None, loss_type="orpo")
    with pytest.raises(ValueError, match="sft_weight"):
        dpo_loss(pc, pr, None, None, loss_type="orpo", sft_weight=0.5, chosen_lengths=nc, rejected_lengths=nr)
    with pytest.raises(ValueError, match="reference"):
        dpo_loss(pc, pr, None, None, loss_type="sigmoid")
