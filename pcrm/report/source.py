"""What `pcrm report --input` names: a `pcrm evaluate` folder or its metrics.json, a `pcrm reproduce` folder, or an
output with stored sections; its metrics and per-pair arrays read and checked (one line when something is missing)."""

import json
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError
from pcrm.evaluation.reward_models import SCHEMA_VERSION
from pcrm.outputs import read_record
from pcrm.report.sections import SECTIONS_DIR, read_json

# Default titles by the command that wrote the folder.
TITLES = {
    "evaluate": "Reward model evaluation",
    "reproduce": "pcrm reproduction",
    "align": "Alignment",
    "evaluate-policy": "Policy evaluation",
    "overoptimization": "Reward over-optimisation against a gold reward model",
}

# What the report reads of metrics.json: per result and per result's metrics (a file missing one: one line).
RESULT_KEYS = ("model", "model_path", "data", "kind", "pairs", "arrays", "metrics")
METRIC_KEYS = ("accuracy", "rank_correlation", "scores", "margins", "priors", "length_bias", "calibration")


def read_summary(input: str | Path) -> tuple[Path, dict]:
    """(metrics.json, its content) of a `pcrm evaluate` directory or its metrics.json, checked (one line if not)."""
    source = Path(input)
    metrics_file = source if source.suffix == ".json" else source / "metrics.json"
    summary = read_json(metrics_file, "run pcrm evaluate first")
    if not isinstance(summary, dict) or summary.get("schema_version") != SCHEMA_VERSION or "results" not in summary:
        raise PcrmError(f"{metrics_file}: not a metrics.json of pcrm evaluate (schema_version {SCHEMA_VERSION})")
    _check_summary(summary, metrics_file)
    return metrics_file, summary


def report_source(input: str | Path) -> tuple[Path, dict | None]:
    """(folder, its `pcrm evaluate` summary or None) of what `pcrm report --input` names: a `pcrm evaluate` folder or
    its metrics.json; a `pcrm reproduce` folder (its evaluation/); or an output with stored sections and no evaluate
    metrics (align, evaluate-policy, overoptimization: None). Checked; one line if none of these."""
    source = Path(input)
    if source.suffix == ".json":
        return source.parent, read_summary(source)[1]
    if not (source / "metrics.json").exists() and (source / "evaluation" / "metrics.json").is_file():  # pcrm reproduce
        source = source / "evaluation"
    if any((source / SECTIONS_DIR).glob("*.json")) and not _evaluate_metrics(source / "metrics.json"):
        return source, None
    return source, read_summary(source)[1]


def default_title(folder: Path) -> str:
    record = read_record(folder) or read_record(folder.parent) or {}
    return TITLES.get(record.get("command"), TITLES["evaluate"])


def load_arrays(path: Path) -> dict:
    """The per-pair arrays of one `pcrm evaluate` result (score, chosen, rejected, length, ...), checked."""
    if not path.is_file():
        raise PcrmError(f"{path}: per-pair arrays not found (rerun pcrm evaluate)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except Exception as err:  # a truncated or foreign file: zipfile, numpy or OS errors
        raise PcrmError(f"{path}: unreadable score file ({type(err).__name__}; rerun pcrm evaluate)") from None
    missing = [key for key in ("score", "chosen", "rejected", "length") if key not in loaded]
    if missing:
        raise PcrmError(f"{path}: not a score file of pcrm evaluate (no {', '.join(missing)}; rerun pcrm evaluate)")
    return loaded


def _evaluate_metrics(path: Path) -> bool:
    """Whether `path` is (or claims to be, possibly broken) a metrics.json of `pcrm evaluate`."""
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # read_summary says what is wrong
    return not isinstance(data, dict) or "schema_version" in data or "results" in data


def _check_summary(summary: dict, path: Path) -> None:
    config, results = summary.get("config"), summary["results"]
    problems = [] if isinstance(config, dict) and {"priors", "bootstrap", "seed"} <= set(config) else ["config"]
    for i, result in enumerate(results if isinstance(results, list) else [None]):
        if not isinstance(result, dict):
            problems.append(f"results[{i}]")
            continue
        problems += [f"results[{i}].{key}" for key in RESULT_KEYS if key not in result]
        metrics = result.get("metrics")
        problems += [
            f"results[{i}].metrics.{key}" for key in METRIC_KEYS if isinstance(metrics, dict) and key not in metrics
        ]
    if problems:
        raise PcrmError(
            f"{path}: not a complete metrics.json of pcrm evaluate (missing {', '.join(problems[:3])}); "
            "rerun pcrm evaluate"
        )
