"""Stage ppo: PPO with a GAE critic, the KL to the reference in the reward (train.rl).

    python jobs/train.py --stage ppo --model SFT_MODEL --data PROMPTS \
        data_options.reward_model=runs/rm/model data_options.target_kl=6
With no model and no data: the tiny policy against the built-in rule reward (train.rl.default).
"""
from train.rl.stage import make_workflow
from train.stages import register_stage

STAGE = "ppo"
WORKFLOW = register_stage(make_workflow(STAGE))
