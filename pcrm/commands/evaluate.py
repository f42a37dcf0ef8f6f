"""`pcrm evaluate`: score reward models on preference data; write metrics.json and per-pair arrays.

Each response is scored once (ranked data is not expanded into pairs for scoring) and its
score cached under `cache_dir()/scores/`, so re-running costs a tokenizer load
(`pcrm.evaluation.reward_models` does the work; metrics in `pcrm.evaluation.metrics`).
"""

from pathlib import Path

from pcrm.evaluation.reward_models import (  # noqa: F401 (evaluate: the name tests and older callers import from here)
    RewardModelEvaluationConfig,
    evaluate,
    evaluate_reward_models,
    format_table,
)
from pcrm.evaluation.rewardbench import format_results as format_rewardbench


Config = RewardModelEvaluationConfig


def run(config: Config) -> dict:
    summary = evaluate_reward_models(config)
    print(format_table(summary))
    if benchmark := format_rewardbench(summary):  # per-subset and section results of RewardBench-format data
        print(f"\n{benchmark}\n")
    print(f"wrote {Path(config.output) / 'metrics.json'}")
    return summary
