"""Ray Train jobs: data path, templates, packing; stages pt / sft / rm / dpo / ppo / grpo (train/stages)."""
