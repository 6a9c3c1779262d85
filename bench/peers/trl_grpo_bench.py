"""TRL GRPOTrainer on the side-by-side RL setup: the peer bench/bench_rl.py compares raymill's GRPO with.

    .venv/bin/python bench/peers/trl_grpo_bench.py --data PROMPTS.jsonl --out DIR [--steps 20]

Same model (bench/bench_train.py's ~9.6M Llama, full finetuning; TRL loads the frozen
reference copy itself because beta > 0), the same conversational prompts, the same rule
reward as a TRL reward function (bench.peers.common.rl_rule_reward), plain HF `generate`
(no vLLM), fp32, 2 torch threads. Settings matched to raymill's `--stage grpo`:
- G completions per prompt, `prompts_per_step` prompts per optimizer step: TRL counts its
  batch in completions, so per_device_train_batch_size = prompts x G (one generation batch
  per step, one optimizer step per rollout: num_iterations = 1, no gradient accumulation);
- loss_type "grpo" (per-sequence token mean, raymill's `sequence_mean`), scale_rewards "group"
  (raymill's grpo advantage), epsilon 0.2, beta with the k3 KL in the loss weighted by π/π_old
  (use_bias_correction_kl, raymill's kl_importance_weighted);
- temperature 1, top_p 1, top_k 0 (off), max_completion_length = raymill's max_new_tokens;
- gradient_checkpointing off and bf16 off (GRPOConfig turns both on by default; raymill's run
  has neither), AdamW "adamw_torch" (raymill's loop uses torch.optim.AdamW, not the fused one),
  lr, linear schedule, no warm-up, max_grad_norm 1.0, weight decay 0.

Writes DIR/steps.jsonl (one line per step: time_s and TRL's logged metrics, plus this script's
phase clocks `bench/generate_s`, `bench/score_s`, `bench/generate_and_score_s`) and DIR/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers.common import (  # noqa: E402
    RL_BETA, RL_CLIP_EPSILON, RL_LEARNING_RATE, RL_MAX_NEW_TOKENS, RL_NUM_GENERATIONS, RL_PROMPTS_PER_STEP,
)


def timed_trainer_class():
    """GRPOTrainer with per-step phase clocks, logged through TRL's own metrics buffer.

    TRL times these phases only for wandb/mlflow/trackio (trl.extras.profiling); the subclass
    adds three perf_counter reads per step and changes nothing else.
    """
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def _record(self, name: str, seconds: float) -> None:
            self._metrics["train" if self.model.training else "eval"][name].append(seconds)

        def _generate(self, prompts):  # tokenize prompts, HF generate, decode: raymill's rollout_s
            started = time.perf_counter()
            out = super()._generate(prompts)
            self._record("bench/generate_s", time.perf_counter() - started)
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # raymill's score_s
            started = time.perf_counter()
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._record("bench/score_s", time.perf_counter() - started)
            return out

        def _generate_and_score_completions(self, inputs):  # + reference log-probs and advantages
            started = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            self._record("bench/generate_and_score_s", time.perf_counter() - started)
            return out

    return TimedGRPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="prompt JSONL (conversational `prompt` column)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None, help="default: the bench model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-generations", type=int, default=RL_NUM_GENERATIONS, dest="num_generations")
    parser.add_argument("--prompts-per-step", type=int, default=RL_PROMPTS_PER_STEP, dest="prompts_per_step")
    parser.add_argument("--max-new-tokens", type=int, default=RL_MAX_NEW_TOKENS, dest="max_new_tokens")
    parser.add_argument("--beta", type=float, default=RL_BETA)
    parser.add_argument("--learning-rate", type=float, default=RL_LEARNING_RATE, dest="learning_rate")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from datasets import load_dataset
    from trl import GRPOConfig

    from bench.peers.common import load_peer_model, rl_rule_reward, step_clock_callback, torch_versions

    out = Path(args.out)
    model_path, tokenizer, model = load_peer_model(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train").select_columns(["prompt"])
    completions_per_step = args.prompts_per_step * args.num_generations
    config = GRPOConfig(
        output_dir=str(out / "hf"), max_steps=args.steps, per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1, num_generations=args.num_generations, num_iterations=1,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=args.beta, loss_type="grpo", scale_rewards="group", epsilon=RL_CLIP_EPSILON, use_bias_correction_kl=True,
        learning_rate=args.learning_rate, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", gradient_checkpointing=False, bf16=False, fp16=False,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=42,
        dataloader_num_workers=0, log_completions=False,
    )
    clock = step_clock_callback(out / "steps.jsonl")
    setup_s = time.perf_counter() - START
    trainer = timed_trainer_class()(model=model, reward_funcs=[rl_rule_reward], args=config, train_dataset=dataset,
                                    processing_class=tokenizer, callbacks=[clock])
    trainer_init_s = time.perf_counter() - START - setup_s  # the reference copy is made here
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    summary = {"peer": "trl.GRPOTrainer", "steps": trainer.state.global_step,
               "train_runtime_s": result.metrics["train_runtime"], "setup_s": round(setup_s, 3),
               "trainer_init_s": round(trainer_init_s, 3), "prompts": len(dataset),
               "completions_per_step": completions_per_step, "reference_model": trainer.ref_model is not None,
               "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
               "versions": torch_versions(), "in_process_s": round(time.perf_counter() - START, 3)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
