"""The optional vLLM rollout engine: its options and preflight errors (everywhere), the conversion
of vLLM-shaped outputs into the RolloutBatch layout of HF generate (plain token-id lists, no vLLM),
the weight push (merged LoRA weights under the base model's names, pushed only when they changed),
and a real vLLM engine, skipped without vllm and a CUDA device."""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from schemas.options import OptionsError
from train.args import parse_train_config
from train.launcher import preflight
from train.rl.options import rl_options
from train.rl.rollout import SamplingSettings, eos_token_ids, sample_responses
from train.rl.vllm_rollout import VLLMRollout, completion_token_ids, policy_weights, rollout_batch_from_token_ids

HAS_VLLM_GPU = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


# ---------------------------------------------------------------- options and preflight
@pytest.mark.parametrize("options, message", [
    ({"rollout_engine": "sglang"}, r"data_options.rollout_engine: 'sglang'; choose one of hf, vllm"),
    ({"vllm_gpu_memory_utilization": 0}, r"data_options.vllm_gpu_memory_utilization must be in \(0, 1\], got 0"),
    ({"vllm_gpu_memory_utilization": 1.5}, r"vllm_gpu_memory_utilization must be in \(0, 1\], got 1.5"),
])
def test_bad_rollout_engine_options_name_the_option(options, message):
    with pytest.raises(OptionsError, match=message):
        rl_options(options, "grpo")
    assert rl_options({}, "grpo").rollout_engine == "hf"


def _preflight_vllm(monkeypatch, *, installed: bool, cuda: bool, **raw):
    real = importlib.util.find_spec
    spec = real("torch")  # any spec stands in for an installed vllm
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (spec if installed else None) if name == "vllm" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    return preflight(parse_train_config({"stage": "grpo", "data_options": {"rollout_engine": "vllm"}, **raw}))


def test_preflight_vllm_without_the_package(monkeypatch):
    with pytest.raises(ValueError, match=r"^data_options.rollout_engine=vllm needs the vllm package \(pip install vllm\)"):
        _preflight_vllm(monkeypatch, installed=False, cuda=True, use_gpu=True)


def test_preflight_vllm_without_a_gpu(monkeypatch):
    with pytest.raises(ValueError, match=r"^data_options.rollout_engine=vllm needs a GPU run \(--use-gpu\)"):
        _preflight_vllm(monkeypatch, installed=True, cuda=False)
    with pytest.raises(ValueError, match=r"^data_options.rollout_engine=vllm: no CUDA device is visible"):
        _preflight_vllm(monkeypatch, installed=True, cuda=False, use_gpu=True)


def test_preflight_vllm_refuses_a_qlora_policy():
    with pytest.raises(ValueError, match="rollout_engine=vllm: a qlora policy's 4-bit base cannot be pushed"):
        preflight(parse_train_config({"stage": "ppo", "finetuning_type": "qlora",
                                      "data_options": {"rollout_engine": "vllm"}}))


# ---------------------------------------------------------------- vLLM outputs -> RolloutBatch
EOS, IM_END, PAD = 0, 2, 3


def test_completion_token_ids_keep_or_restore_the_stop_token():
    assert completion_token_ids(SimpleNamespace(token_ids=[5, 6, EOS], finish_reason="stop", stop_reason=None),
                                [EOS, IM_END]) == [5, 6, EOS]
    # A stop token left out of token_ids comes back: the policy is trained to emit it.
    assert completion_token_ids(SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=IM_END),
                                [EOS, IM_END]) == [5, 6, IM_END]
    assert completion_token_ids(SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=None),
                                [EOS, IM_END]) == [5, 6, EOS]
    assert completion_token_ids(SimpleNamespace(token_ids=(5, 6, 7), finish_reason="length", stop_reason=None),
                                [EOS, IM_END]) == [5, 6, 7]


def test_token_id_lists_become_the_rollout_layout():
    prompts = [[10, 11, 12], [13]]
    responses = [[5, EOS], [5, 6, 7, 8], [IM_END], [9, 9, EOS, 9]]  # the last: tokens after an EOS are masked
    batch = rollout_batch_from_token_ids(prompts, responses, 2, [EOS, IM_END], PAD)
    assert batch.prompt_ids.tolist() == [[10, 11, 12]] * 2 + [[PAD, PAD, 13]] * 2
    assert batch.prompt_mask.tolist() == [[1, 1, 1]] * 2 + [[0, 0, 1]] * 2
    assert batch.response_ids.tolist() == [[5, EOS, PAD, PAD], [5, 6, 7, 8], [IM_END, PAD, PAD, PAD],
                                           [9, 9, EOS, PAD]]
    assert batch.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert batch.prompt_index == [0, 0, 1, 1]
    assert batch.position_ids[2].tolist() == [0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="3 responses for 2 prompts x 2 samples"):
        rollout_batch_from_token_ids(prompts, responses[:3], 2, [EOS], PAD)


def test_the_layout_equals_hf_generates_for_the_same_tokens(tiny_model_dir):
    """The tokens HF generate sampled, given back as vLLM would (lists, EOS kept), make the same batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = eos_token_ids(model, tokenizer)
    prompts = [tokenizer("Say the word.")["input_ids"], tokenizer("A much longer prompt about the river.")["input_ids"]]
    torch.manual_seed(0)
    hf = sample_responses(model, prompts, 3, SamplingSettings(max_new_tokens=8), eos, tokenizer.pad_token_id)
    lists = [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(hf.response_ids.tolist(),
                                                                       hf.response_mask.tolist())]
    ours = rollout_batch_from_token_ids(prompts, lists, 3, eos, tokenizer.pad_token_id)
    if hf.response_mask.sum(1).max() < hf.response_ids.size(1):  # every row stopped early: HF keeps the pad columns
        ours.response_ids = torch.nn.functional.pad(ours.response_ids, (0, hf.response_ids.size(1) -
                                                                        ours.response_ids.size(1)),
                                                    value=tokenizer.pad_token_id)
        ours.response_mask = torch.nn.functional.pad(ours.response_mask, (0, hf.response_mask.size(1) -
                                                                          ours.response_mask.size(1)))
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask"):
        assert torch.equal(getattr(ours, name), getattr(hf, name)), name
    assert ours.prompt_index == hf.prompt_index


# ---------------------------------------------------------------- the weight push
class RecordingLLM:
    def __init__(self):
        self.pushes: list[dict[str, torch.Tensor]] = []
        self.cache_resets = 0

    def collective_rpc(self, method, args=()):
        assert method == "load_policy_weights"
        self.pushes.append({name: tensor.clone() for name, tensor in args[0]})
        return [len(args[0])]

    def reset_prefix_cache(self):
        self.cache_resets += 1


def test_weights_are_pushed_merged_and_only_when_they_changed(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_names = set(base.state_dict())
    actor = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, param in actor.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    import copy

    merged = copy.deepcopy(actor).merge_and_unload().state_dict()  # what the push must send

    engine = VLLMRollout.__new__(VLLMRollout)
    engine.llm, engine.pushed_version = RecordingLLM(), None
    assert engine.push_weights(actor, version=0) is True
    assert engine.push_weights(actor, version=0) is False  # unchanged since the last push
    assert engine.push_weights(actor, version=1) is True
    assert len(engine.llm.pushes) == 2 and engine.llm.cache_resets == 2
    pushed = engine.llm.pushes[0]
    assert set(pushed) == base_names
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(pushed[q], merged[q]) and not torch.allclose(pushed[q], base.state_dict()[q])
    # ... computed out of place: the actor's own base weight is untouched (no merge/unmerge rounding).
    assert torch.equal(actor.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, base.state_dict()[q])
    plain = dict(policy_weights(base))  # a plain model's weights pass through as they are
    assert plain.keys() == base_names and torch.equal(plain[q], base.state_dict()[q])


# ---------------------------------------------------------------- a real engine
@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM_GPU, reason="needs the vllm package and a CUDA device")
def test_a_real_vllm_engine_samples_from_the_pushed_policy(tiny_model_dir):
    """vLLM with the tiny policy's weights pushed in: the batch has the HF layout; with top_k=1 (the
    argmax) it samples what HF generate does; after new weights are pushed its samples follow them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = parse_train_config({"stage": "grpo", "model": str(tiny_model_dir), "use_gpu": True, "cutoff_len": 256,
                              "data_options": {"rollout_engine": "vllm", "vllm_gpu_memory_utilization": 0.2}})
    options = rl_options(cfg.data.data_options, "grpo")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    actor = AutoModelForCausalLM.from_pretrained(tiny_model_dir).cuda()
    eos = eos_token_ids(actor, tokenizer)
    engine = VLLMRollout(cfg, options, eos, tokenizer.pad_token_id, seed=0)
    engine.push_weights(actor, version=0)
    prompts = [tokenizer(text)["input_ids"] for text in ("Say the word.", "Tell me about the city.")]
    greedy = SamplingSettings(max_new_tokens=8, top_k=1)

    def same_as_hf() -> torch.Tensor:
        batch = engine.sample(prompts, 2, greedy, seed=0, device=torch.device("cuda"))
        hf = sample_responses(actor, prompts, 2, greedy, eos, tokenizer.pad_token_id)
        assert torch.equal(batch.prompt_ids, hf.prompt_ids) and batch.prompt_index == [0, 0, 1, 1]
        assert batch.response_mask.sum(1).tolist() == hf.response_mask.sum(1).tolist()
        width = min(batch.response_ids.size(1), hf.response_ids.size(1))
        assert torch.equal(batch.response_ids[:, :width], hf.response_ids[:, :width])
        return batch.response_ids

    before = same_as_hf()
    with torch.no_grad():  # another policy
        torch.manual_seed(1)
        for param in actor.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    assert engine.push_weights(actor, version=1)
    after = same_as_hf()  # vLLM samples the new weights' argmax, not the old one's
    assert not torch.equal(before, after)


def test_the_loop_pushes_changed_weights_before_each_vllm_rollout(tiny_model_dir, tmp_path, monkeypatch):
    """RLLoop with rollout_engine=vllm, the engine replaced by one that samples with HF generate
    and records its pushes: a push before every rollout that follows an optimizer step (PPO's
    2 epochs x 2 minibatches: 4 steps per RL step), none when nothing changed."""
    import train.rl.vllm_rollout as vllm_rollout
    from train.model_loading import load_tokenizer
    from train.rl.default import default_prompts
    from train.rl.loop import RLLoop
    from train.rl.prompts import tokenize_prompts

    class HFBackedEngine:
        def __init__(self, cfg, options, eos_ids, pad_id, seed):
            self.eos_ids, self.pad_id, self.versions, self.samples = list(eos_ids), pad_id, [], 0

        def push_weights(self, actor, version):
            self.actor = actor
            if not self.versions or self.versions[-1] != version:
                self.versions.append(version)

        def sample(self, prompts, samples_per_prompt, settings, seed, device):
            self.samples += 1
            torch.manual_seed(seed)
            return sample_responses(self.actor, prompts, samples_per_prompt, settings, self.eos_ids, self.pad_id)

    monkeypatch.setattr(vllm_rollout, "VLLMRollout", HFBackedEngine)
    torch.set_num_threads(2)
    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": "ppo", "max_steps": 3, "save_steps": 10,
                              "data_options": {"rollout_engine": "vllm", "prompts_per_step": 4, "max_new_tokens": 4,
                                               "critic": "shared"}})
    prompts, _ = tokenize_prompts([(r["id"], r) for r in default_prompts(12)], load_tokenizer(cfg.model), 200)
    loop = RLLoop(cfg, rl_options(cfg.data.data_options, "ppo"), prompts, tmp_path, 3)
    loop.run()
    assert loop.vllm.samples == 3 and loop.vllm.versions == [0, 4, 8]
    loop.vllm.push_weights(loop.models.actor, loop.weights_version)
    assert loop.vllm.versions == [0, 4, 8, 12]  # the last step's update is pushed before a next rollout
