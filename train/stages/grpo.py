"""Stage grpo: group-relative advantages over G samples per prompt, the KL in the loss (train.rl).
`data_options.advantage=dr_grpo | rloo | reinforce_pp` selects the other critic-free estimators.

    python jobs/train.py --stage grpo --model SFT_MODEL --data PROMPTS \
        data_options.reward_function=my_rewards:exact_match data_options.num_generations=8
"""
from train.rl.stage import make_workflow
from train.stages import register_stage

STAGE = "grpo"
WORKFLOW = register_stage(make_workflow(STAGE))
