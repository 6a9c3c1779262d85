"""Stage sft: supervised finetuning on conversations, loss on assistant turns only, packed.

Data: SFT records (schemas kind "sft") or any format train.ingest reads; with no
`data` the embedded SFT sample trains the tiny model in minutes on 2 CPUs.
The template renders each conversation and masks every non-assistant token
(labels -100) before packing, so the worker is the plain causal-LM loop.
"""
from __future__ import annotations

from train.args import TrainConfig
from train.stages import Workflow, register_stage
from train.worker import causal_lm_train_loop

STAGE = "sft"


def build_dataset(cfg: TrainConfig):
    """(ray.data.Dataset of packed rows, DataStats) for this run."""
    from train.ingest import build_train_dataset

    options = dict(cfg.data.data_options)
    if cfg.data.template:
        if cfg.data.template != "tokenizer":
            from train.templates import get_template

            get_template(cfg.data.template)  # an unknown name fails here, not inside a Ray actor
        options["template"] = cfg.data.template
    # No data: the ingest writes and reads the embedded default sample for this stage.
    return build_train_dataset(
        STAGE, cfg.data.data or None, tokenizer_path=cfg.model.tokenizer or cfg.model.model,
        cutoff_len=cfg.data.cutoff_len, packing=cfg.data.packing, seed=cfg.training.seed, **options,
    )


WORKFLOW = register_stage(Workflow(name=STAGE, build_dataset=build_dataset, train_loop=causal_lm_train_loop))
