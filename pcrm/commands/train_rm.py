"""`pcrm train-rm`: train a reward model with the ranking loss, PCRM, or a scale control.

Parse -> `pcrm.pipelines.reward.train_reward_model` -> print; the options are `RewardModelConfig`'s."""

import os

from pcrm.pipelines.reward import (  # noqa: F401 (the names tests and older callers import from here)
    RESUME_FREE,
    RewardModelConfig,
    format_result,
    heldout_split,
    preflight,
    refuse_fsdp_on_cpu,
    train,
    train_reward_model,
)

Config = RewardModelConfig


def run(config: Config) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = train_reward_model(config)
    if result:  # the main process
        print(format_result(result))
    return result
