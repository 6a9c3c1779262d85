"""Optional vLLM rollout engine (`data_options.rollout_engine=vllm`, GPU only).

Each Ray Train worker holds its own vLLM `LLM` next to the policy it trains (colocated on the
worker's GPU, `vllm_gpu_memory_utilization` of its memory). A rollout gives the engine the
prompts as token ids with the loop's sampling settings (temperature, top_p, top_k,
max_new_tokens, stop at an EOS id, G samples per prompt) and turns what comes back into the
RolloutBatch layout `train.rl.rollout.sample_responses` returns: prompts left-padded, responses
right-padded, the mask 1 through the first EOS. Everything after the rollout (log-probs,
reference, update) runs on the HF policy as with the `hf` engine.

Weights: the engine starts with dummy weights (`load_format="dummy"`: nothing is read twice, and
a LoRA, resumed or from-scratch policy has no file vLLM could read anyway); before a rollout the
policy's current weights are pushed when they changed since the last push (the loop's weight
version), a LoRA adapter added to its base weights. The push runs in this process (vLLM's in-process engine core,
a worker extension method called through `LLM.collective_rpc`, then `reset_prefix_cache`, whose
cached prompt keys/values belong to the old weights). Written against vLLM 0.15's offline API
(`worker_extension_cls`, `collective_rpc`, `reset_prefix_cache`, `TokensPrompt`; the extension
route exists since 0.8.3); vLLM's newer weight-transfer engines (NCCL/IPC) are for an engine in
another process and are not needed here.

The conversion from vLLM's outputs (`completion_token_ids`, `rollout_batch_from_token_ids`) is
plain Python on token-id lists, tested without vLLM.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Sequence

import torch

from train.rl.rollout import RolloutBatch, SamplingSettings, left_pad, response_mask

log = logging.getLogger(__name__)

EXTENSION = "train.rl.vllm_rollout.PolicyWeightsExtension"
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ---------------------------------------------------------------- vLLM outputs -> RolloutBatch (pure)
def completion_token_ids(output: Any, eos_ids: Sequence[int]) -> list[int]:
    """A vLLM CompletionOutput's response tokens, ending with the EOS it stopped at.

    vLLM keeps the EOS in `token_ids`; should a version leave a stop token out, `finish_reason`
    "stop" with `stop_reason` (the stop token id, or None for the model's EOS) says which one
    ended it, and it is put back: the policy must learn to emit it, as with HF generate."""
    ids = [int(t) for t in output.token_ids]
    stopped = getattr(output, "finish_reason", None) == "stop"
    if stopped and (not ids or ids[-1] not in eos_ids):
        reason = getattr(output, "stop_reason", None)
        ids.append(int(reason) if isinstance(reason, int) and reason in eos_ids else int(eos_ids[0]))
    return ids


def rollout_batch_from_token_ids(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                                 samples_per_prompt: int, eos_ids: Sequence[int], pad_id: int,
                                 device: torch.device | str = "cpu") -> RolloutBatch:
    """RolloutBatch from prompt ids and the responses to them (`samples_per_prompt` consecutive
    responses per prompt, as token-id lists): the layout of `sample_responses`."""
    if len(responses) != len(prompts) * samples_per_prompt:
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts x {samples_per_prompt} samples")
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    prompt_ids, prompt_mask = left_pad(repeated, pad_id)
    width = max(1, max(len(r) for r in responses))  # an all-empty rollout keeps one padded column, as HF's path
    response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(responses):
        if ids:
            response_ids[row, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    lengths = torch.tensor([len(r) for r in responses])
    inside = torch.arange(width)[None, :] < lengths[:, None]
    # Through the first EOS, and never over the padding of a response that ended without one.
    mask = response_mask(response_ids, eos_ids) * inside.long()
    response_ids = response_ids.masked_fill(mask == 0, pad_id)
    index = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    return RolloutBatch(prompt_ids.to(device), prompt_mask.to(device), response_ids.to(device), mask.to(device),
                        prompt_index=index)


def policy_weights(actor) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of the policy's full weights as its checkpoint names them; a LoRA
    policy's active adapter is added to its base weights out of place (base + B·A·scale), so the
    policy itself is never merged and unmerged (which would drift its weights by rounding).
    vLLM's `load_weights` maps HF names onto its own fused parameters and skips a tied lm_head."""
    from train.rl.models import is_peft

    if not is_peft(actor):
        for name, tensor in actor.state_dict().items():
            yield name, tensor.detach()
        return
    from peft.tuners.lora import LoraLayer

    adapter = actor.active_adapter
    base = actor.get_base_model()
    deltas = {f"{name}.base_layer.weight": module for name, module in base.named_modules()
              if isinstance(module, LoraLayer) and adapter in module.lora_A}
    for name, tensor in base.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:  # adapters (the reward one too) are not model weights
            continue
        weight = tensor.detach()
        if name in deltas:
            weight = weight + deltas[name].get_delta_weight(adapter).to(weight.dtype)
        yield name.replace(".base_layer.", "."), weight


class PolicyWeightsExtension:
    """Mixed into vLLM's GPU worker (`worker_extension_cls`): loads pushed weights into its model."""

    def load_policy_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        self.model_runner.model.load_weights(weights=weights)
        return len(weights)


# ---------------------------------------------------------------- the engine
def check_vllm_available(use_gpu: bool) -> None:
    """Preflight: vllm importable and a CUDA device here (one line naming the option)."""
    import importlib.util

    from schemas.options import OptionsError

    if importlib.util.find_spec("vllm") is None:
        raise OptionsError("data_options.rollout_engine=vllm needs the vllm package (pip install vllm); "
                           "use rollout_engine=hf to sample with HF generate")
    if not use_gpu:
        raise OptionsError("data_options.rollout_engine=vllm needs a GPU run (--use-gpu); vLLM does not run the "
                           "RL rollout on CPU here, use rollout_engine=hf")
    import torch as _torch

    if not _torch.cuda.is_available():
        raise OptionsError("data_options.rollout_engine=vllm: no CUDA device is visible; use rollout_engine=hf")


class VLLMRollout:
    """One vLLM engine in this worker, sampling for the loop's policy."""

    def __init__(self, cfg, options, eos_ids: Sequence[int], pad_id: int, seed: int):
        import torch.distributed as dist
        from vllm import LLM

        from train.model_loading import resolve_model_path

        # The engine core in this process: pushed weights are handed over as tensors, not serialised.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # Config and tokenizer only: the weights come from the policy at the first push.
        source = cfg.model.model_config if cfg.model.from_scratch and cfg.model.model_config \
            else resolve_model_path(cfg.model.model)
        tokenizer = resolve_model_path(cfg.model.tokenizer) if cfg.model.tokenizer else source
        kwargs: dict[str, Any] = {}
        if dist.is_initialized():
            # A Ray Train worker already has a process group: vLLM joins it instead of making its own,
            # each rank one engine (tensor parallel 1), as TRL's colocated mode does.
            kwargs["distributed_executor_backend"] = "external_launcher"
        self.llm = LLM(model=source, tokenizer=tokenizer,
                       dtype=VLLM_DTYPES.get(cfg.model.dtype, "auto"), load_format="dummy", seed=seed,
                       gpu_memory_utilization=options.vllm_gpu_memory_utilization,
                       max_model_len=cfg.data.cutoff_len, enable_prefix_caching=True, tensor_parallel_size=1,
                       worker_extension_cls=EXTENSION, trust_remote_code=cfg.model.trust_remote_code, **kwargs)
        self.eos_ids, self.pad_id = list(eos_ids), pad_id
        self.pushed_version: int | None = None

    def push_weights(self, actor, version: int) -> bool:
        """Load the policy's weights into the engine if `version` differs from the last push."""
        if version == self.pushed_version:
            return False
        with torch.no_grad():
            weights = list(policy_weights(actor))
            self.llm.collective_rpc("load_policy_weights", args=(weights,))
        self.llm.reset_prefix_cache()
        self.pushed_version = version
        return True

    def sample(self, prompts: Sequence[Sequence[int]], samples_per_prompt: int, settings: SamplingSettings,
               seed: int, device: torch.device) -> RolloutBatch:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # One seeded request per prompt (n = G samples): the draws are a function of (seed, step, rank,
        # prompt), so a resumed run samples what the uninterrupted one would have.
        params = [SamplingParams(n=samples_per_prompt, temperature=settings.temperature, top_p=settings.top_p,
                                 top_k=settings.top_k if settings.top_k > 0 else -1,
                                 max_tokens=settings.max_new_tokens, stop_token_ids=list(self.eos_ids),
                                 seed=seed * 1_000_003 + i, detokenize=False)
                  for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        responses = [completion_token_ids(sample, self.eos_ids) for request in outputs for sample in request.outputs]
        return rollout_batch_from_token_ids(prompts, responses, samples_per_prompt, self.eos_ids, self.pad_id, device)
