"""Stage pt: (continued) pretraining on packed plain text, loss on every token.

`from_scratch` starts from random weights built from `model_config` (or the model's
own config); otherwise training continues from the loaded weights. With no `data`
the embedded text sample is used.
"""
from __future__ import annotations

from train.args import TrainConfig
from train.stages import Workflow, register_stage
from train.worker import causal_lm_train_loop

STAGE = "pt"


def build_dataset(cfg: TrainConfig):
    """(ray.data.Dataset of packed rows, DataStats) for this run."""
    from train.ingest import build_train_dataset

    options = dict(cfg.data.data_options)
    if cfg.data.template:
        options["template"] = cfg.data.template
    # No data: the ingest writes and reads the embedded default sample for this stage.
    return build_train_dataset(
        STAGE, cfg.data.data or None, tokenizer_path=cfg.model.tokenizer or cfg.model.model,
        cutoff_len=cfg.data.cutoff_len, packing=cfg.data.packing, seed=cfg.training.seed, **options,
    )


WORKFLOW = register_stage(Workflow(name=STAGE, build_dataset=build_dataset, train_loop=causal_lm_train_loop))
