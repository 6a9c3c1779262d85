"""Stage rm: a reward model (backbone + scalar head) trained on preference pairs.

Loss −log σ(r_chosen − r_rejected [− margin]) (train.losses.pairwise_rm_loss), the
reward read at the last real token of each sequence (train.reward_model). Finetuning
types are those of train.finetune, adapted to a classifier: the `score` head always
trains (freeze adds it to the trainable modules; LoRA/QLoRA train it fully beside the
adapters, peft's `modules_to_save`). At the end the worker reports pairwise accuracy and
mean margin on the held-out pairs, and rank 0 saves a plain reward model (adapters
merged) into `<run>/model`, which `train.reward_model.load_reward_model` loads.
"""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from pathlib import Path

import torch

from train.args import TrainConfig, TrainConfigError
from train.distributed import mean_across_ranks
from train.losses import pairwise_rm_loss, ranked_list_rm_loss, ranked_pairs
from train.reward_model import build_reward_model, save_reward_model, sequence_rewards
from train.stages import Workflow, register_stage
from train.stages.preference_stage import PreferenceOptions, build_preference_dataset, publish_eval, read_eval_pairs
from train.worker import StreamTrainer, run_in_ray_worker

STAGE = "rm"
HEAD = "score"


def load_reward_backbone(cfg: TrainConfig, tokenizer):
    """The classifier model as train.model_loading loads a causal LM (attention kernel, QLoRA)."""
    from train.model_loading import ModelLoadError, pick_attn_implementation, quantization_config, resolve_model_path, torch_dtype

    kwargs = dict(trust_remote_code=cfg.model.trust_remote_code, dtype=torch.float32,
                  attn_implementation=pick_attn_implementation(cfg.model.attn_implementation, cfg.launch.use_gpu))
    if cfg.finetuning.finetuning_type == "qlora":
        kwargs["quantization_config"] = quantization_config(cfg.finetuning, torch_dtype(cfg.model.dtype))
        if cfg.launch.use_gpu:
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        return build_reward_model(resolve_model_path(cfg.model.model), tokenizer, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {cfg.model.model!r}: {exc}") from None


def apply_reward_finetuning(model, cfg: TrainConfig):
    """train.finetune's types with the scalar head always trainable."""
    from train.finetune import all_linear_modules, apply_finetuning

    args = cfg.finetuning
    if args.finetuning_type in ("full", "freeze"):
        if args.finetuning_type == "freeze":
            args = dataclasses.replace(args, freeze_trainable_modules=list(args.freeze_trainable_modules) + [HEAD])
        return apply_finetuning(model, args)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = [t for t in (all_linear_modules(model) if args.lora_target == ["all"] else args.lora_target) if t != HEAD]
    if not targets:
        raise TrainConfigError("lora_target leaves no module for the adapters")
    if args.finetuning_type == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    if args.gradient_checkpointing:
        from train.finetune import enable_gradient_checkpointing

        enable_gradient_checkpointing(model, peft=True)
    config = LoraConfig(task_type="SEQ_CLS", r=args.lora_rank, lora_alpha=args.lora_alpha or 2 * args.lora_rank,
                        lora_dropout=args.lora_dropout, target_modules=targets, use_dora=args.use_dora,
                        modules_to_save=[HEAD])
    return get_peft_model(model, config)


class RewardStreamTrainer(StreamTrainer):
    """HF Trainer on [chosen; rejected] batches with the pairwise ranking loss."""

    options: PreferenceOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._logged: dict[str, list[float]] = defaultdict(list)

    def rewards(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).chunk(2)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "rank_mask" in inputs:  # a batch holding ranked lists (train.preference_data.collate_ranked)
            return self.ranked_list_loss(model, inputs, return_outputs)
        chosen, rejected = self.rewards(model, inputs)
        margin = inputs.get("margin") if self.options.use_margin else None
        loss = pairwise_rm_loss(chosen, rejected, margin, self.options.center_rewards)
        self._logged["accuracy"].append((chosen > rejected).float().mean().item())
        self._logged["margin"].append((chosen - rejected).mean().item())
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss

    def ranked_list_loss(self, model, inputs, return_outputs=False):
        """InstructGPT's loss over all C(K,2) pairs of each list, a list weighing as one example;
        accuracy and margin are over the same valid pairs. A pair's `margin` column has no
        meaning across a list, so `use_margin` applies to pair-only batches."""
        mask = inputs["rank_mask"]
        batch_size, k = mask.shape
        rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"]).view(k, batch_size).T
        loss = ranked_list_rm_loss(rewards, mask)
        better, worse = ranked_pairs(k)
        valid = (mask[:, better] * mask[:, worse]).bool()
        gaps = (rewards[:, better] - rewards[:, worse])[valid]
        if self.options.center_rewards:
            sums = (rewards[:, better] + rewards[:, worse])[valid]
            loss = loss + self.options.center_rewards * (sums ** 2).mean()
        self._logged["accuracy"].append((gaps > 0).float().mean().item())
        self._logged["margin"].append(gaps.mean().item())
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._logged and "loss" in logs:
            logs.update(mean_across_ranks({k: sum(v) / len(v) for k, v in self._logged.items()}))
            self._logged.clear()
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluate_pairs(self, pairs: list[dict], batch_size: int = 8) -> dict[str, float]:
        """Pairwise accuracy and mean margin on held-out pairs (all ranks run all pairs)."""
        from train.preference_data import collate_pairs

        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        chosen_all, rejected_all = [], []
        for start in range(0, len(pairs), batch_size):
            batch = self._prepare_inputs(collate_pairs(pairs[start:start + batch_size], self.processing_class.pad_token_id))
            chosen, rejected = self.rewards(model, batch)
            chosen_all.append(chosen.float().cpu())
            rejected_all.append(rejected.float().cpu())
        model.train()
        chosen, rejected = torch.cat(chosen_all), torch.cat(rejected_all)
        return {"eval_accuracy": (chosen > rejected).float().mean().item(),
                "eval_margin": (chosen - rejected).mean().item(),
                "eval_loss": pairwise_rm_loss(chosen, rejected).item(), "eval_pairs": len(pairs)}


def run_reward_model(cfg: TrainConfig, rows, run_dir, max_steps: int, resume_from: str | None = None,
                     extra_callbacks: list | None = None, rank: int = 0) -> dict:
    """Train a reward model on a stream of tokenized pairs: the shared Trainer worker body with
    the classifier model, the pair collator and the ranking loss; then eval and save."""
    from train.preference_data import PreferenceCollator
    from train.worker import run_causal_lm

    run_dir = Path(run_dir)
    options = PreferenceOptions.from_config(cfg)
    trainer_class = type("RewardTrainer", (RewardStreamTrainer,), {"options": options})

    def build_model(cfg: TrainConfig, tokenizer):
        return apply_reward_finetuning(load_reward_backbone(cfg, tokenizer), cfg)

    def after_training(trainer, tokenizer, metrics: dict) -> dict:
        extra = {}
        eval_pairs = read_eval_pairs(run_dir)
        if eval_pairs:
            extra = trainer.evaluate_pairs(eval_pairs)
            publish_eval(trainer, extra, run_dir)
        _save(trainer, tokenizer, run_dir / "model", cfg, {**metrics, **extra}, is_main=trainer.args.process_index == 0)
        return extra

    return run_causal_lm(cfg, rows, None, run_dir, max_steps, resume_from=resume_from,
                         extra_callbacks=extra_callbacks, trainer_class=trainer_class, save_final=False, rank=rank,
                         build_model=build_model, after_training=after_training,
                         make_collate=lambda tokenizer: PreferenceCollator(tokenizer.pad_token_id))


def _save(trainer, tokenizer, path: Path, cfg: TrainConfig, metrics: dict, is_main: bool) -> None:
    """A plain reward model (adapters merged) that load_reward_model reads; ZeRO-3 and QLoRA
    fall back to the Trainer's own save (sharded gather / adapters only)."""
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    if zero3 or cfg.finetuning.finetuning_type == "qlora":
        trainer.save_model(str(path))
        return
    if is_main:
        info = {"base_model": cfg.model.model, "finetuning_type": cfg.finetuning.finetuning_type,
                "cutoff_len": cfg.data.cutoff_len, "template": cfg.data.template,
                "eval_accuracy": metrics.get("eval_accuracy"), "eval_margin": metrics.get("eval_margin")}
        save_reward_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, path, info)


def train_loop(loop_config: dict) -> None:
    """Ray Train `train_loop_per_worker` for rm."""
    run_in_ray_worker(run_reward_model, loop_config)


WORKFLOW = register_stage(Workflow(name=STAGE, build_dataset=build_preference_dataset, train_loop=train_loop,
                                   card_kind="preference", options=PreferenceOptions))
