"""Stage sft: supervised finetuning on conversations, loss on assistant turns only, packed.

Data: SFT records (schemas kind "sft") or any format train.ingest reads; with no
`data` the embedded SFT sample trains the tiny model in minutes on 2 CPUs.
The template (the tokenizer's own unless `template` names a built-in) renders each
conversation and masks every non-assistant token (labels -100) before packing, so the
worker is the plain causal-LM loop.
"""
from __future__ import annotations

from train.ingest import IngestOptions, dataset_for_config
from train.stages import Workflow, register_stage

STAGE = "sft"


def build_dataset(cfg):
    """(ray.data.Dataset of packed rows, DataStats) for this run."""
    return dataset_for_config(cfg, "examples")


def train_loop(loop_config: dict) -> None:
    """The Ray Train worker body (train.worker's causal-LM loop), imported in the worker: the
    driver only builds the data and need not load transformers' Trainer."""
    from train.worker import causal_lm_train_loop

    causal_lm_train_loop(loop_config)


WORKFLOW = register_stage(Workflow(name=STAGE, card_kind="sft", build_dataset=build_dataset,
                                   train_loop=train_loop, options=IngestOptions,
                                   evaluates=True))
