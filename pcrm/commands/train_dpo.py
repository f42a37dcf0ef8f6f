"""`pcrm train-dpo`: align a policy with DPO, IPO or SLiC hinge, with PCRM's prior term (or without: --method dpo).

Parse -> `pcrm.pipelines.dpo.train_dpo_policy` -> print; the options are `DPOPolicyConfig`'s."""

from pathlib import Path

from pcrm.pipelines.dpo import (  # noqa: F401 (the names tests and older callers import from here)
    DPO_PRIOR,
    PRECISIONS,
    RESUME_FREE,
    DPOPolicyConfig,
    format_result,
    train_dpo_policy,
)

Config = DPOPolicyConfig


def run(config: Config) -> dict:
    summary = train_dpo_policy(config)
    print(format_result(summary))
    print(f"wrote {Path(config.output)}")
    return summary
