"""Reinforcement learning for language models: one loop, pluggable advantages and rewards.

    rollout (train.rl.rollout)  ->  score (train.rl.reward_sources)
      ->  advantages (train.rl.advantages)  ->  policy epochs (train.rl.objective)

`train.rl.loop.RLLoop` runs that cycle inside each Ray Train worker; the stages `ppo` and
`grpo` (train.stages.ppo / train.stages.grpo) differ only in their default options.
The formula modules (advantages, objective, kl_control) import nothing but torch.
"""
