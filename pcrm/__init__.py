"""pcrm: reward models and preference-optimised policies trained with prior constraints (PCRM).

Layout, in pipeline order: data -> constraints -> losses -> trainers (reward, DPO) ->
evaluation / alignment -> pipelines (train_reward_model, train_dpo_policy) -> commands (thin: parse, call, print)
-> report.

The public API is importable from here (`from pcrm import add_constraints, PCRMRewardTrainer`); names are
loaded on first use, so `import pcrm` stays light (the CLI imports it before it parses its options).
"""

import importlib

from pcrm.console import quiet_imports

__version__ = "0.2.0"
quiet_imports()  # before any library import: DeepSpeed's "Setting accelerator to CPU" notice

_EXPORTS = {
    "load_preferences": "pcrm.data",
    "DataOptions": "pcrm.data.options",
    "ConstraintConfig": "pcrm.constraints",
    "PriorOptions": "pcrm.constraints",
    "add_constraints": "pcrm.constraints",
    "delta_star": "pcrm.constraints",
    "suggest_betas": "pcrm.constraints",
    "bradley_terry_loss": "pcrm.losses",
    "pcrm_loss": "pcrm.losses",
    "lower_margin_loss": "pcrm.losses",
    "centering_penalty": "pcrm.losses",
    "pcrm_dpo_loss": "pcrm.losses",
    "PCRMRewardConfig": "pcrm.trainers.reward",
    "PCRMRewardTrainer": "pcrm.trainers.reward",
    "PcrmDPOTrainer": "pcrm.trainers.dpo",
    "RewardModelConfig": "pcrm.pipelines.reward",
    "train_reward_model": "pcrm.pipelines.reward",
    "DPOPolicyConfig": "pcrm.pipelines.dpo",
    "train_dpo_policy": "pcrm.pipelines.dpo",
    "RewardModelEvaluationConfig": "pcrm.evaluation.reward_models",
    "evaluate_reward_models": "pcrm.evaluation.reward_models",
    "save_reward_model": "pcrm.models",
    "recorded_max_length": "pcrm.models",
    "RewardScorer": "pcrm.scoring",
    "load_reward_function": "pcrm.rewards",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pcrm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
