"""Our GRPO / Dr. GRPO loss equals TRL's GRPOTrainer loss on one fixed batch (within 1e-5).

TRL's loss is computed by its own code (`GRPOTrainer._compute_loss`) on hand-built inputs:
running its generation would only add sampling noise to a comparison of the loss. The
advantages fed to both are ours; their formula is TRL's ((r − mean) / (std + 1e-4)),
checked in test_rl_formulas.py.
"""
from __future__ import annotations

import pytest
import torch

from train.rl.advantages import group_relative
from train.rl.objective import policy_objective
from train.rl.rollout import RolloutBatch, response_outputs

G, MAX_NEW = 4, 6


@pytest.fixture(scope="module")
def trl_trainer(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    def make(loss_type: str, beta: float, bias_correction: bool):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=G,
                          num_generations=G, max_completion_length=MAX_NEW, beta=beta, loss_type=loss_type,
                          epsilon=0.2, use_bias_correction_kl=bias_correction,
                          use_cpu=True, bf16=False, report_to="none", save_strategy="no")
        trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                              args=args, train_dataset=Dataset.from_list([{"prompt": "hi"}] * G),
                              processing_class=tokenizer)
        trainer.current_gradient_accumulation_steps = 1
        return trainer

    return make


def _fixed_batch(grouped: bool = False):
    """2 x G rows; `grouped`: the G rows of a group share their prompt, as in a rollout (our forward
    then runs each prompt once, train.rl.shared_prompts)."""
    gen = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(10, 500, (2 * G, 5), generator=gen)
    if grouped:
        prompt_ids = prompt_ids[::G].repeat_interleave(G, dim=0)
    response_ids = torch.randint(10, 500, (2 * G, MAX_NEW), generator=gen)
    lengths = torch.tensor([6, 3, 5, 1, 6, 2, 4, 6])
    response_mask = (torch.arange(MAX_NEW)[None] < lengths[:, None]).long()
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 0.0, 1.0, 3.0])
    return RolloutBatch(prompt_ids, torch.ones_like(prompt_ids), response_ids * response_mask, response_mask), rewards


@pytest.mark.parametrize("loss_type,beta,bias_correction,grouped", [
    ("grpo", 0.0, True, False), ("grpo", 0.04, True, False), ("grpo", 0.04, False, False),
    ("dr_grpo", 0.04, True, False), ("grpo", 0.04, True, True)])
def test_grpo_loss_matches_trl(trl_trainer, loss_type, beta, bias_correction, grouped):
    trainer = trl_trainer(loss_type, beta, bias_correction)
    model = trainer.model
    model.train()
    batch, rewards = _fixed_batch(grouped)
    advantages = group_relative(rewards, G, scale_by_std=loss_type == "grpo")
    with torch.no_grad():
        current = response_outputs(model, batch).logps
    gen = torch.Generator().manual_seed(2)
    # Old and reference log-probs away from the current ones, so ratios clip and the KL is not zero.
    old = current + 0.3 * torch.randn(current.shape, generator=gen)
    ref = current + 0.5 * torch.randn(current.shape, generator=gen)
    mask = batch.response_mask.float()

    inputs = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask, "completion_ids": batch.response_ids,
              "completion_mask": batch.response_mask, "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    trl_loss = trainer._compute_loss(model, inputs)

    ours = policy_objective(response_outputs(model, batch).logps, old, advantages[:, None] * mask, mask,
                            aggregation="sequence_mean" if loss_type == "grpo" else "token_sum_norm",
                            clip_low=0.2, ref_logps=ref, kl_coef_in_loss=beta, kl_estimator="k3",
                            kl_importance_weighted=bias_correction, max_tokens=MAX_NEW)
    assert abs(ours.loss.item() - trl_loss.item()) < 1e-5, (ours.loss.item(), trl_loss.item())
    # Same loss, same gradients: the whole backward path agrees, not just the value.
    trl_grads = torch.autograd.grad(trl_loss, [p for p in model.parameters() if p.requires_grad][:3])
    ours = policy_objective(response_outputs(model, batch).logps, old, advantages[:, None] * mask, mask,
                            aggregation="sequence_mean" if loss_type == "grpo" else "token_sum_norm",
                            clip_low=0.2, ref_logps=ref, kl_coef_in_loss=beta, kl_estimator="k3",
                            kl_importance_weighted=bias_correction, max_tokens=MAX_NEW)
    our_grads = torch.autograd.grad(ours.loss, [p for p in model.parameters() if p.requires_grad][:3])
    for a, b in zip(trl_grads, our_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
