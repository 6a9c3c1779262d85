"""Actor + reference + critic + reward adapter on one LoRA backbone: the reward adapter scores
exactly as the peft reward model it was saved from, and the whole set weighs about one
backbone, against about three for separate copies (actor, frozen reference, critic)."""
from __future__ import annotations

import torch

from train.args import parse_train_config
from train.reward_model import sequence_rewards
from train.rl.models import build_models, unique_parameter_bytes
from train.rl.options import rl_options
from train.rl.rollout import RolloutBatch


def _reward_adapter(tiny_model_dir, path):
    """A LoRA reward model as `--stage rm` with LoRA builds it (SEQ_CLS, `score` trained fully), with
    non-zero adapter weights so that using the adapter, not the bare backbone, is what is tested."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, modules_to_save=["score"],
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(std=0.2)
    model.save_pretrained(str(path))
    return model.eval()


def _batch() -> RolloutBatch:
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(10, 500, (3, 5), generator=gen)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, :2] = 0  # a left-padded prompt
    response_ids = torch.randint(10, 500, (3, 4), generator=gen)
    response_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    return RolloutBatch(prompt_ids, prompt_mask, response_ids * response_mask, response_mask)


def _cfg(tiny_model_dir, finetuning: str, options: dict):
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": "ppo", "finetuning_type": finetuning,
                              "lora_rank": 4, "data_options": options})
    return cfg, rl_options(cfg.data.data_options, "ppo")


def test_reward_adapter_on_the_actor_backbone_scores_like_the_saved_reward_model(tiny_model_dir, tmp_path):
    reference_model = _reward_adapter(tiny_model_dir, tmp_path / "rm_adapter")
    cfg, options = _cfg(tiny_model_dir, "lora", {"critic": "shared", "reward_adapter": str(tmp_path / "rm_adapter")})
    models = build_models(cfg, options)
    batch = _batch()
    with torch.no_grad():
        want = sequence_rewards(reference_model, batch.input_ids, batch.attention_mask)
        got = models.adapter_rewards(batch)
        # the actor's own adapter is active again afterwards, and only it trains
        assert models.actor.active_adapter == "default"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    trainable = [n for n, p in models.actor.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n for n in trainable)


def test_one_lora_backbone_holds_actor_reference_critic_and_reward(tiny_model_dir, tmp_path):
    _reward_adapter(tiny_model_dir, tmp_path / "rm_adapter")
    shared_cfg, shared_options = _cfg(tiny_model_dir, "lora",
                                      {"critic": "shared", "reward_adapter": str(tmp_path / "rm_adapter")})
    shared = build_models(shared_cfg, shared_options)
    separate_cfg, separate_options = _cfg(tiny_model_dir, "full", {"critic": "separate"})
    separate = build_models(separate_cfg, separate_options)
    backbone = unique_parameter_bytes([separate.reference_copy])
    shared_bytes = unique_parameter_bytes(shared.all_modules())
    separate_bytes = unique_parameter_bytes(separate.all_modules())
    print(f"one backbone {backbone / 2**20:.2f} MiB; shared LoRA set {shared_bytes / 2**20:.2f} MiB; "
          f"separate copies {separate_bytes / 2**20:.2f} MiB")
    assert shared.reference_mode == "adapter" and shared.reference_copy is None and shared.critic_backbone is None
    assert shared_bytes < 1.25 * backbone
    assert separate_bytes > 2.9 * backbone
    # The disabled adapter is the reference: equal to the actor until the adapter trains.
    batch = _batch()
    with torch.no_grad():
        actor_logps = shared.policy(batch, 1.0)[0].logps
        torch.testing.assert_close(shared.reference_logps(batch, 1.0), actor_logps)
