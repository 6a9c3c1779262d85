"""RL formulas on hand-built tensors, each against its definition written out directly."""
from __future__ import annotations

import math

import pytest
import torch

from train.rl import advantages as adv
from train.rl import objective as obj
from train.rl.kl_control import KLController


def _reference_gae(rewards, values, lengths, gamma, lam):
    """A direct backward recursion per sequence, in plain Python floats."""
    out_adv, out_ret = [], []
    for r, v, n in zip(rewards.tolist(), values.tolist(), lengths):
        a = [0.0] * len(r)
        running = 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            delta = r[t] + gamma * next_v - v[t]
            running = delta + gamma * lam * running
            a[t] = running
        out_adv.append(a)
        out_ret.append([a[t] + (v[t] if t < n else 0.0) for t in range(len(r))])
    return torch.tensor(out_adv), torch.tensor(out_ret)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0)])
def test_gae_matches_a_direct_backward_recursion(gamma, lam):
    torch.manual_seed(0)
    lengths = [5, 3, 1, 6]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths])
    rewards = torch.randn(4, 6) * mask
    values = torch.randn(4, 6)
    got_adv, got_ret = adv.gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = _reference_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(got_adv, want_adv, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_ret, want_ret * mask, atol=1e-6, rtol=1e-6)


def test_gae_with_lambda_one_is_return_minus_value():
    mask = torch.ones(1, 4)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.1, -0.3, 0.7]])
    advantages, returns = adv.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.full((1, 4), 2.0))
    torch.testing.assert_close(advantages, 2.0 - values)


def test_token_rewards_put_the_score_on_the_last_real_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, 9.0, 9.0, 9.0]])
    rewards = adv.token_rewards(torch.tensor([1.0, -2.0]), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 1.0 - 0.15, 0.0], [-2.0 - 0.25, 0, 0, 0]]))


def test_group_relative_and_dr_grpo_baselines():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    got = adv.group_relative(scores, group_size=4)
    for g in range(2):
        group = scores[g * 4:(g + 1) * 4].tolist()
        mean = sum(group) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / 3)  # unbiased, as TRL's nanstd
        for i, x in enumerate(group):
            assert got[g * 4 + i].item() == pytest.approx((x - mean) / (std + 1e-4), rel=1e-6)
    dr = adv.group_relative(scores, group_size=4, scale_by_std=False)
    torch.testing.assert_close(dr, torch.tensor([-2.0, -1.0, 0.0, 3.0, -1.0, -1.0, -1.0, 3.0]))


def test_identical_rewards_in_a_group_give_zero_advantage():
    assert adv.group_relative(torch.ones(4), 4).abs().max().item() == 0.0
    assert adv.leave_one_out(torch.ones(4), 4).abs().max().item() == 0.0


def test_leave_one_out_baseline():
    scores = torch.tensor([1.0, 2.0, 6.0])
    got = adv.leave_one_out(scores, 3)
    torch.testing.assert_close(got, torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    # RLOO is the group-mean baseline scaled by G/(G−1).
    torch.testing.assert_close(got, adv.group_relative(scores, 3, scale_by_std=False) * 3 / 2)
    with pytest.raises(ValueError, match="at least 2"):
        adv.leave_one_out(scores, 1)


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="groups of 4"):
        adv.group_relative(torch.ones(6), 4)


def test_reinforce_pp_returns_are_discounted_sums_and_whiten_to_unit_scale():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float32)
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 7.0]])
    returns = adv.discounted_returns(rewards, mask, gamma=0.5)
    torch.testing.assert_close(returns, torch.tensor([[1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2.0], [1.0, 1.0, 0.0]]))
    white = adv.whiten(returns, mask)
    values = white[mask.bool()]
    assert values.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert values.std().item() == pytest.approx(1.0, rel=1e-4)
    assert white[1, 2].item() == 0.0


def test_clipped_surrogate_matches_its_definition():
    logps = torch.tensor([[0.0, -0.1, -2.0, -0.5]])
    old = torch.tensor([[-0.5, -0.1, -1.0, -0.4]])
    advantages = torch.tensor([[1.0, -1.0, -2.0, 0.5]])
    loss, clipped = obj.clipped_surrogate(logps, old, advantages, clip_low=0.2, clip_high=0.3)
    for t in range(4):
        ratio = math.exp(logps[0, t] - old[0, t])
        a = advantages[0, t].item()
        want = -min(ratio * a, min(max(ratio, 0.8), 1.3) * a)
        assert loss[0, t].item() == pytest.approx(want, rel=1e-6)
    # token 0: ratio e^0.5 = 1.65 > 1.3 with A > 0 -> clipped; token 2: ratio 0.37 < 0.8 with A < 0 -> clipped
    assert clipped.tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_clipped_value_loss_matches_its_definition():
    values = torch.tensor([1.0, 0.0, 2.0])
    old = torch.tensor([0.0, 0.0, 1.5])
    returns = torch.tensor([3.0, 1.0, 0.0])
    loss, _ = obj.clipped_value_loss(values, old, returns, clip_range=0.2)
    for v, o, r, got in zip(values.tolist(), old.tolist(), returns.tolist(), loss.tolist()):
        clipped = o + min(max(v - o, -0.2), 0.2)
        assert got == pytest.approx(0.5 * max((v - r) ** 2, (clipped - r) ** 2))
    plain, _ = obj.clipped_value_loss(values, old, returns, clip_range=None)
    torch.testing.assert_close(plain, 0.5 * (values - returns) ** 2)


def test_kl_estimators_k1_k3_against_the_exact_kl():
    torch.manual_seed(0)
    p_logits, q_logits = torch.randn(6), torch.randn(6)
    logp, logq = torch.log_softmax(p_logits, 0), torch.log_softmax(q_logits, 0)
    exact = (logp.exp() * (logp - logq)).sum()
    samples = torch.distributions.Categorical(logits=p_logits).sample((200_000,))
    k1 = obj.kl_estimate(logp[samples], logq[samples], "k1")
    k3 = obj.kl_estimate(logp[samples], logq[samples], "k3")
    assert k1.mean().item() == pytest.approx(exact.item(), abs=0.02)
    assert k3.mean().item() == pytest.approx(exact.item(), abs=0.02)
    assert (k3 >= 0).all()
    # definitions on a hand-picked pair
    a, b = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert obj.kl_estimate(a, b, "k1").item() == pytest.approx(0.5)
    assert obj.kl_estimate(a, b, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    assert obj.kl_estimate(a, b, "k2").item() == pytest.approx(0.125)


def test_aggregations():
    per_token = torch.tensor([[1.0, 3.0, 100.0], [2.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert obj.aggregate(per_token, mask, "token_mean").item() == pytest.approx(2.0)
    assert obj.aggregate(per_token, mask, "sequence_mean").item() == pytest.approx((2.0 + 2.0) / 2)
    assert obj.aggregate(per_token, mask, "token_sum_norm", max_tokens=4).item() == pytest.approx(6.0 / 8)


def test_entropy_and_log_probs_from_logits():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert obj.entropy_from_logits(logits).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert obj.token_logps(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))


def test_ptx_term_is_the_mean_next_token_nll():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.randint(0, 5, (2, 4))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    want = []
    for b in range(2):
        for t in range(1, 4):
            if mask[b, t]:
                want.append(-torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item())
    assert obj.ptx_loss(logits, ids, mask).item() == pytest.approx(sum(want) / len(want), rel=1e-6)
    # and it matches torch's cross entropy when nothing is masked
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5), ids[:, 1:].reshape(-1))
    assert obj.ptx_loss(logits, ids).item() == pytest.approx(ce.item(), rel=1e-6)


def test_policy_objective_adds_kl_and_subtracts_entropy():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = logps.detach().clone()
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2)
    a = torch.tensor([[1.0, 1.0]])
    entropy = torch.tensor([[0.5, 1.5]])
    terms = obj.policy_objective(logps, old, a, mask, aggregation="sequence_mean", clip_low=0.2, ref_logps=ref,
                                 kl_coef_in_loss=0.1, kl_estimator="k3", entropy=entropy, entropy_coef=0.01)
    k3 = obj.kl_estimate(logps.detach(), ref, "k3")
    assert terms.loss.item() == pytest.approx(-1.0 + 0.1 * k3.mean().item() - 0.01 * 1.0, rel=1e-6)
    assert terms.approx_kl_old.item() == 0.0 and terms.clip_fraction.item() == 0.0
    terms.loss.backward()  # gradient flows through the surrogate and the KL term
    assert logps.grad is not None and logps.grad.abs().sum() > 0


def test_adaptive_kl_controller_moves_toward_the_target():
    ctl = KLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_samples=100)  # error clipped at +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 10_000))
    ctl.update(current_kl=5.4, n_samples=100)  # error −0.1
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 0.01) * (1 - 0.1 * 0.01))
    fixed = KLController(0.1)
    assert fixed.update(50.0, 1000) == 0.1
    restored = KLController(1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored == ctl
    with pytest.raises(ValueError, match="target_kl"):
        KLController(0.1, target=0.0)
