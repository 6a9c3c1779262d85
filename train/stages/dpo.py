"""Stage dpo: direct preference optimisation inside Ray Train.

The worker is the causal-LM worker (train.worker.run_causal_lm) with a Trainer whose
loss is train.losses.dpo_loss on summed completion log-probs; the loss is checked
against TRL's DPOTrainer on the same batch in tests/unit/test_dpo_loss.py. We do not
run TRL's DPOTrainer itself because it wants a `datasets.Dataset` it tokenizes on its
own, while our pairs stream from a Ray Data shard already tokenized and accounted for.

The reference model is the frozen starting policy, obtained one of three ways:
- `adapter` (default for lora/qlora): the same backbone with the adapter disabled
  (peft's `disable_adapter`), so no second copy of the weights exists;
- `copy` (default for full/freeze): a second, frozen copy loaded from the same path;
- `precompute`: before the first step, one pass over this worker's shard with the
  starting weights stores each pair's reference log-probs, so no copy is kept.
Reference-free losses (`orpo`, `simpo`, or `reference_free: true`) resolve to `none`: no
reference model, no precompute pass, no adapter switching.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import torch

from train.args import TrainConfig
from train.distributed import mean_across_ranks
from train.completion_logps import add_completion_head, completion_logps
from train.losses import dpo_loss
from train.packed_pairs import is_packed, packed_logps
from train.stages import Workflow, register_stage
from train.stages.preference_stage import (NO_REFERENCE, PreferenceOptions, build_preference_dataset, publish_eval,
                                          read_eval_pairs)
from train.worker import StreamTrainer, run_in_ray_worker

STAGE = "dpo"


def _unwrap(model):
    while hasattr(model, "module"):  # DDP / DeepSpeed engine
        model = model.module
    return model


def _hf_model(model):
    model = _unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_peft(model) -> bool:
    return hasattr(_unwrap(model), "disable_adapter")


class DPOStreamTrainer(StreamTrainer):
    """HF Trainer on a stream of [chosen; rejected] batches with the DPO loss.

    Subclasses made by `dpo_trainer_class` set `options`, `reference`, `train_config`,
    `eval_pairs` and `run_dir`.
    """

    options: PreferenceOptions
    reference: str
    train_config: TrainConfig
    eval_pairs: list[dict] = []
    run_dir: str = "."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Our loss is a mean per pair, not a sum over label tokens: let the Trainer divide
        # by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self._logged: dict[str, list[float]] = defaultdict(list)
        self.ref_model = None
        self.ref_logps: dict[str, tuple[float, float]] = {}
        if self.reference == "adapter" and not is_peft(self.model):
            raise ValueError("reference=adapter needs a LoRA/QLoRA model")
        if self.reference == "copy":
            self.ref_model = self._load_reference_copy()
        # Log-probs of the response tokens only, without the [batch, T, vocab] logits.
        for model in (self.model, self.ref_model):
            if model is not None:
                add_completion_head(_hf_model(model))

    def _load_reference_copy(self):
        import dataclasses

        from train.model_loading import load_model

        cfg = self.train_config
        finetuning = dataclasses.replace(cfg.finetuning, finetuning_type="full") \
            if cfg.finetuning.finetuning_type != "qlora" else cfg.finetuning
        model = load_model(cfg.model, finetuning, cfg.launch.use_gpu)
        model.requires_grad_(False)
        return model.eval().to(self.args.device)

    # ------------------------------------------------------------ log-probs
    @staticmethod
    def _logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if is_packed(batch):  # padding-free training batch (train.packed_pairs)
            return packed_logps(model, batch)
        out = completion_logps(model, batch)
        return out.logps, out.counts

    @torch.no_grad()
    def reference_logps(self, model, batch) -> torch.Tensor | None:
        if self.reference == NO_REFERENCE:
            return None
        if "ref_chosen_logps" in batch:
            return torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).to(self.args.device)
        if self.reference == "precompute":
            ids = batch["ids"]
            missing = [i for i in ids if i not in self.ref_logps]
            if missing:
                raise RuntimeError(f"no precomputed reference log-probs for pairs {missing[:3]}")
            chosen = [self.ref_logps[i][0] for i in ids]
            rejected = [self.ref_logps[i][1] for i in ids]
            return torch.tensor(chosen + rejected, device=self.args.device)
        if self.ref_model is not None:
            return self._logps(self.ref_model, batch)[0]
        # The starting policy is the backbone without the (LoRA) adapter.
        with _unwrap(model).disable_adapter():
            return self._logps(model, batch)[0]

    # ------------------------------------------------------------ loss
    def dpo_outputs(self, model, inputs):
        logps, counts = self._logps(model, inputs)
        ref = self.reference_logps(model, inputs)
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = ref.float().chunk(2) if ref is not None else (None, None)
        n_chosen, n_rejected = counts.chunk(2)
        o = self.options
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=o.beta, loss_type=o.loss_type,
                        sft_weight=o.sft_weight, chosen_lengths=n_chosen, rejected_lengths=n_rejected,
                        label_smoothing=o.label_smoothing, reference_free=o.reference_free,
                        simpo_gamma=o.simpo_gamma)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.dpo_outputs(model, inputs)
        for key, value in out.metrics().items():
            self._logged[key].append(value)
        return (out.loss, {"chosen_rewards": out.chosen_rewards}) if return_outputs else out.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._logged and "loss" in logs:
            logs.update(mean_across_ranks({k: sum(v) / len(v) for k, v in self._logged.items()}))
            self._logged.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------ precompute + eval around training
    @torch.no_grad()
    def precompute_reference(self) -> None:
        """Reference log-probs of this worker's shard and of the eval pairs, from the
        starting weights (before any step, also on resume: checkpoints load inside train())."""
        from train.preference_data import collate_pairs

        model = self.model.to(self.args.device)
        was_training = model.training
        model.eval()
        pad = self.processing_class.pad_token_id
        eval_batches = (collate_pairs(self.eval_pairs[i:i + 8], pad) for i in range(0, len(self.eval_pairs), 8))
        for batch in itertools.chain(_one_epoch(self.train_dataset), eval_batches):
            batch = self._prepare_inputs(batch)
            chosen, rejected = self._logps(model, batch)[0].chunk(2)
            for pair_id, c, r in zip(batch["ids"], chosen.tolist(), rejected.tolist()):
                self.ref_logps[pair_id] = (c, r)
        model.train(was_training)

    def train(self, *args, **kwargs):
        if self.reference == "precompute":
            self.precompute_reference()
        result = super().train(*args, **kwargs)
        if self.eval_pairs:
            metrics = self.evaluate_pairs(self.eval_pairs)
            publish_eval(self, metrics, self.run_dir)
            result.metrics.update(metrics)
        return result

    @torch.no_grad()
    def evaluate_pairs(self, pairs: list[dict], batch_size: int = 8) -> dict[str, float]:
        """Reward accuracy and margins on held-out pairs (every rank runs all of them:
        the eval set is small, and ZeRO-3 needs every rank in each forward)."""
        from train.preference_data import collate_pairs

        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        totals: dict[str, float] = defaultdict(float)
        pad = self.processing_class.pad_token_id
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = self._prepare_inputs(collate_pairs(chunk, pad))
            out = self.dpo_outputs(model, batch)
            for key, value in out.metrics("eval_").items():
                totals[key] += value * len(chunk)
            totals["eval_loss"] += out.loss.item() * len(chunk)
        model.train()
        return {k: v / len(pairs) for k, v in totals.items()}


def _one_epoch(stream) -> Any:
    """Collated batches of one pass over a StreamBatches stream."""
    rows = iter(stream.open_epoch())
    while chunk := list(itertools.islice(rows, stream.batch_size)):
        yield stream.collate(chunk)


def dpo_trainer_class(cfg: TrainConfig, options: PreferenceOptions, eval_pairs: list[dict], run_dir: str = ".") -> type:
    return type("DPOTrainer", (DPOStreamTrainer,), {
        "options": options, "reference": options.reference_mode(cfg.finetuning.finetuning_type),
        "train_config": cfg, "eval_pairs": eval_pairs, "run_dir": str(run_dir),
    })


def run_dpo(cfg: TrainConfig, rows, run_dir, max_steps: int, resume_from: str | None = None,
            extra_callbacks: list | None = None, rank: int = 0) -> dict:
    """Train DPO on a stream of tokenized pairs (rows of the preference dataset)."""
    from train.model_loading import load_tokenizer
    from train.packed_pairs import PackedPairCollator
    from train.preference_data import PreferenceCollator
    from train.worker import run_causal_lm

    options = PreferenceOptions.from_config(cfg)
    tokenizer = load_tokenizer(cfg.model)
    if padding_free(options):
        collate = PackedPairCollator()
    else:
        collate = PreferenceCollator(tokenizer.pad_token_id)
    trainer_class = dpo_trainer_class(cfg, options, read_eval_pairs(run_dir), run_dir)
    return run_causal_lm(cfg, rows, collate, run_dir, max_steps, resume_from=resume_from,
                         extra_callbacks=extra_callbacks, trainer_class=trainer_class, rank=rank)


def padding_free(options: PreferenceOptions, cfg: TrainConfig | None = None, tokenizer=None) -> bool:
    """Whether training batches are packed (train.packed_pairs) rather than padded: `true` /
    `false` as given; `auto` packs too. Packed log-probs go through the same chunked LM head as
    padded ones, so no vocabulary makes the packed step's logits larger than the padded one's.
    (`cfg` and `tokenizer` are not consulted; callers such as bench/peers/step_ab.py pass them.)"""
    return options.padding_free != "false"


def train_loop(loop_config: dict) -> None:
    """Ray Train `train_loop_per_worker` for dpo."""
    run_in_ray_worker(run_dpo, loop_config)


WORKFLOW = register_stage(Workflow(name=STAGE, build_dataset=build_preference_dataset, train_loop=train_loop,
                                   card_kind="preference", options=PreferenceOptions))
