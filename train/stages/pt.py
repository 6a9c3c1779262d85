"""Stage pt: (continued) pretraining on packed plain text, loss on every token.

`from_scratch` starts from random weights built from `model_config` (or the model's
own config); otherwise training continues from the loaded weights. With no `data`
the embedded text sample is used. Documents are concatenated with EOS and cut into
blocks of `cutoff_len`; conversations mixed in (annealing) are rendered as plain text.
"""
from __future__ import annotations

from train.ingest import IngestOptions, dataset_for_config
from train.stages import Workflow, register_stage

STAGE = "pt"


def build_dataset(cfg):
    """(ray.data.Dataset of packed rows, DataStats) for this run."""
    return dataset_for_config(cfg, "blocks")


def train_loop(loop_config: dict) -> None:
    """The Ray Train worker body (train.worker's causal-LM loop), imported in the worker: the
    driver only builds the data and need not load transformers' Trainer."""
    from train.worker import causal_lm_train_loop

    causal_lm_train_loop(loop_config)


WORKFLOW = register_stage(Workflow(name=STAGE, card_kind="document", build_dataset=build_dataset,
                                   train_loop=train_loop, options=IngestOptions,
                                   evaluates=True))
