"""Evaluate reward models on preference data: per-response scores, per-pair arrays and their metrics.

Each response is scored once (ranked data is not expanded into pairs for scoring) and its
score cached under `cache_dir()/scores/`, keyed by a content hash of the model's weights and config,
the data and the truncation length, so re-running costs a tokenizer load.
"""

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pcrm.constraints import ConstraintConfig, PriorOptions
from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import PcrmError
from pcrm.evaluation.metrics import compute_metrics, format_estimate, ranked_pairs
from pcrm.io import cache_path, read_cached_npz, unique_labels, write_cache, write_json, write_npz
from pcrm.models import check_reward_model, default_device, model_fingerprint

PRIORS = ("length", "cosine")
SCHEMA_VERSION = 1


@dataclass
class EvalData:
    """A dataset as a flat list of responses, with its labelled pairs as indices into them."""

    source: str
    kind: str  # "pairs" or "ranked"
    prompts: list
    responses: list
    human: np.ndarray  # human score per response; NaN for pairwise data
    group: np.ndarray  # row (prompt) of each response
    chosen: np.ndarray
    rejected: np.ndarray
    rewardbench: dict | None = None  # subset (and v2 ids) per row of RewardBench-format data (`rewardbench.load_rows`)
    report: object = None  # the `pcrm.data.LoadReport` of the loading

    @functools.cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item in zip(self.prompts, self.responses):
            digest.update(json.dumps(item, ensure_ascii=False, sort_keys=True).encode() + b"\0")
        return digest.hexdigest()[:16]

    def pairs(self):
        """The labelled pairs as a `prompt`/`chosen`/`rejected` dataset."""
        from datasets import Dataset

        return Dataset.from_dict(
            {
                "prompt": [self.prompts[i] for i in self.chosen],
                "chosen": [self.responses[i] for i in self.chosen],
                "rejected": [self.responses[i] for i in self.rejected],
            }
        )


@dataclass
class RewardModelEvaluationConfig:
    """Evaluate reward models on preference data: accuracy, rank correlation, score scale,
    margins against the priors' δ*, length bias and calibration, with bootstrap CIs."""

    model: list[str] = field(
        default_factory=list,
        metadata={"help": "reward model directory (required, no default; repeat to compare several)"},
    )
    data: list[str] = field(
        default_factory=lambda: ["hh-rlhf-harmless"],
        metadata={"help": "bundled dataset name or file/directory, repeatable (default: hh-rlhf-harmless)"},
    )
    split: str = field(default="test", metadata={"help": "split of bundled data or of a DatasetDict directory"})
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    output: str = field(default="runs/evaluate", metadata={"help": "directory for metrics.json and scores/*.npz"})
    priors: list[str] = field(
        default_factory=lambda: list(PRIORS),
        metadata={
            "help": "priors whose δ* the margins are compared with, repeatable (default: length and cosine)",
            "choices": PRIORS,
        },
    )
    encoder: str = field(default="minilm", metadata={"help": "sentence encoder of the cosine prior"})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "tokens per scored text, longer ones lose the prompt's start "
            "(default: the --max-length each model was trained with)"
        },
    )
    batch_size: int = field(default=32, metadata={"help": "scoring batch size"})
    device: str = field(default="auto", metadata={"help": "torch device for scoring: auto, cpu, cuda, ..."})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples per confidence interval (0: no CIs)"})
    bins: int = field(default=10, metadata={"help": "reliability bins of the calibration metrics"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing --output of pcrm evaluate (only once this run succeeds)"}
    )

    def __post_init__(self):
        from pcrm.preflight import check_at_least, check_numbers

        check_numbers(self)
        check_at_least(self, 2, "max_length")  # one token is the end token alone: every text would score the same
        if not self.model:
            raise PcrmError("--model is required (a reward model directory; repeat it to compare several)")
        if not self.data:
            raise PcrmError("--data needs at least one dataset")
        for prior in self.priors:
            if prior not in PRIORS:
                raise PcrmError(f"--priors must be among {', '.join(PRIORS)}, got {prior!r}")
        for name in ("max_length", "batch_size", "bins"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PcrmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.bootstrap < 0:
            raise PcrmError(f"--bootstrap must be >= 0, got {self.bootstrap}")


def load_data(source: str, split: str, config_name: str | None = None, columns: str | None = None) -> EvalData:
    """Load pairwise or ranked preference data (errors name the file, row and field); RewardBench's two
    formats are recognised (`pcrm.evaluation.rewardbench`)."""
    from pcrm.data import LoadReport
    from pcrm.evaluation.rewardbench import load_rows

    report = LoadReport()
    rows, benchmark = load_rows(source, split, config_name, columns, report)
    if "responses" in rows.column_names:
        group = np.repeat(np.arange(len(rows)), [len(r) for r in rows["responses"]])
        responses = [r for row in rows["responses"] for r in row]
        human = np.concatenate([np.asarray(s, dtype=float) for s in rows["scores"]])
        chosen, rejected = ranked_pairs(human, group)
        if not len(chosen):
            raise PcrmError(f"{source}: ranked data has no pair with different scores")
        kind = "ranked"
    else:
        group = np.repeat(np.arange(len(rows)), 2)
        responses = [r for pair in zip(rows["chosen"], rows["rejected"]) for r in pair]
        human = np.full(len(responses), math.nan)
        chosen = np.arange(0, len(responses), 2)
        rejected = chosen + 1
        kind = "pairs"
    prompts = rows["prompt"]
    return EvalData(
        source, kind, [prompts[g] for g in group], responses, human, group, chosen, rejected, benchmark, report
    )


def cached_scores(path: str, data: EvalData, scorer, config) -> np.ndarray:
    """Reward of every response of `data`, from the disk cache when this model and data were scored before
    (`cache_dir()/scores/<key>.npz`, keyed on the model's content, the data, and how it is read: max length,
    dtype, device type, special-token handling, pcrm's version)."""
    from pcrm.tokenization import splits_special_tokens

    key = {
        "model": model_fingerprint(path),
        "data": data.fingerprint,
        "max_length": scorer.max_length,
        "dtype": scorer.dtype,
        "device": scorer.device_type,
        "split_special_tokens": splits_special_tokens(scorer.tokenizer, data.responses),
    }
    cache = cache_path("scores", key, ".npz")
    n = len(data.responses)
    cached = read_cached_npz(cache, ("score",), lambda a: a["score"].shape == (n,) and a["score"].dtype.kind == "f")
    if cached is not None:
        return cached["score"]
    scores = scorer.responses(data.prompts, data.responses, config.progress)
    write_cache(write_npz, cache, {"score": scores})
    return scores


def prior_configs(path: str, config) -> dict:
    """prior -> (ConstraintConfig, source): β (and unit/encoder) from the model's pcrm_config.json
    when it was trained with that prior, else the `ConstraintConfig` defaults."""
    from pcrm.constraints import ConstraintConfig

    trained_file = Path(path) / "pcrm_config.json"
    trained = {}
    if trained_file.is_file():
        try:
            trained = json.loads(trained_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PcrmError(f"{trained_file}: invalid JSON ({err.msg})") from None
        if not isinstance(trained, dict):
            raise PcrmError(f"{trained_file}: expected a JSON object")
    result = {}
    for prior in config.priors:
        options = {"encoder": config.encoder, "encoder_batch_size": config.batch_size}
        source = "default"
        if trained.get("method") == prior:
            keys = ("beta1", "beta2", "beta3", "unit", "encoder")
            options |= {k: trained[k] for k in keys if trained.get(k) is not None}
            source = "pcrm_config.json"
        result[prior] = (ConstraintConfig(method=prior, **options), source)
    return result


def evaluation_arrays(path: str, data: EvalData, scorer, priors: dict, config) -> dict:
    """Per-response and per-pair arrays of one (model, data) evaluation (saved as scores/*.npz)."""
    from pcrm.constraints import add_constraints
    from pcrm.data import as_text

    tokenizer = scorer.tokenizer
    texts = [as_text(r) for r in data.responses]
    arrays = {
        "score": cached_scores(path, data, scorer, config),
        "length": np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]),
        "human": data.human,
        "group": data.group,
        "chosen": data.chosen,
        "rejected": data.rejected,
    }
    pairs = data.pairs()
    for prior, (prior_config, _) in priors.items():
        constrained = add_constraints(pairs, prior_config, tokenizer, show_progress=config.progress)
        arrays[f"similarity_{prior}"] = np.asarray(constrained["similarity"], dtype=float)
        arrays[f"delta_{prior}"] = np.asarray(constrained["delta"], dtype=float)
    return arrays


def evaluate_reward_models(config: RewardModelEvaluationConfig) -> dict:
    """`pcrm evaluate` as a library call: every model on every dataset, into `config.output` (metrics.json,
    scores/*.npz) under `pcrm.outputs.OutputFolder` (lock; refuses a folder it did not write unless --overwrite;
    nothing half-written); returns the summary. Every check runs before the first write."""
    from dataclasses import asdict

    from pcrm.console import progress_bars
    from pcrm.io import versions
    from pcrm.outputs import OutputFolder
    from pcrm.preflight import check_device, check_model

    check_device(config.device)
    for name in config.model:
        check_model(name, "reward", config.max_length)
    folder = OutputFolder(config.output, "evaluate", overwrite=config.overwrite)
    folder.plan()
    with progress_bars(config.progress), folder:
        summary = evaluate_into(config, folder.work)
        folder.commit({"kind": "evaluate", "config": asdict(config), "versions": versions()})
    return summary


def evaluate_into(config: RewardModelEvaluationConfig, output: str | Path | None = None) -> dict:
    """The evaluation itself, written into `output` (default `config.output`) with no folder guard: for a caller that
    holds the folder already (`pcrm reproduce` writes its evaluation inside its own output)."""
    from pcrm.scoring import LazyRewardScorer

    paths = [check_reward_model(m) for m in config.model]  # fail on a bad model before any scoring
    from pcrm.console import print_data_summary

    datasets = [load_data(d, config.split, config.data_config, config.columns) for d in config.data]
    for data in datasets:
        scored = (
            f"{len(data.chosen)} {'labelled ' if data.kind == 'ranked' else ''}pairs ({len(data.responses)} responses)"
        )
        print_data_summary(data.report, f"{scored} scored by {len(config.model)} reward model(s)")
    output = Path(config.output if output is None else output)
    data_labels = unique_labels([_data_name(d, config.split) for d in config.data])
    device = default_device(config.device)
    results = []
    for name, path, model_label in zip(config.model, paths, unique_labels(config.model)):
        scorer = LazyRewardScorer(path, config.max_length, device, config.batch_size)  # weights loaded on a cache miss
        priors = prior_configs(path, config)
        for data, data_label in zip(datasets, data_labels):
            arrays = evaluation_arrays(path, data, scorer, priors, config)
            arrays_file = Path("scores") / f"{model_label}--{data_label}.npz"
            write_npz(output / arrays_file, arrays)
            metrics = compute_metrics(arrays, tuple(priors), config.bootstrap, config.seed, config.bins)
            for prior, (prior_config, source) in priors.items():
                betas = {k: getattr(prior_config, k) for k in ("beta1", "beta2", "beta3")}
                metrics["priors"][prior] = {**betas, "beta_source": source, **metrics["priors"][prior]}
            results.append(
                {
                    "model": model_label,
                    "model_path": str(Path(path).resolve()) if Path(path).exists() else name,
                    "data": data_label,
                    "data_source": data.source,
                    "kind": data.kind,
                    "max_length": scorer.max_length,
                    "responses": len(data.responses),
                    "pairs": len(data.chosen),
                    "prompts": int(len(np.unique(data.group))),
                    "arrays": arrays_file.as_posix(),
                    "metrics": metrics,
                    **_rewardbench(data, arrays),
                }
            )
    summary = {"schema_version": SCHEMA_VERSION, "config": asdict(config), "results": results}
    write_json(output / "metrics.json", summary)
    return summary


evaluate = evaluate_into  # the name callers used before


def _rewardbench(data: EvalData, arrays: dict) -> dict:
    """`{"rewardbench": per-subset, section and overall results}` for RewardBench-format data, else `{}`."""
    if not data.rewardbench:
        return {}
    from pcrm.evaluation.rewardbench import results

    return {"rewardbench": results(data.rewardbench, arrays["score"], data.group, data.chosen, data.rejected)}


def format_table(summary: dict) -> str:
    """The console table: one row per (model, data); estimates with their 95% CI."""
    header = ["model", "data", "pairs", "accuracy [95% CI]", "τ pairs", "ρ prompt", "margin μ±σ"]
    priors = list(summary["config"]["priors"])
    header += [f">δ* {p}" for p in priors] + ["ρ(score,len)", "acc shorter", "ECE"]
    rows = []
    for result in summary["results"]:
        m = result["metrics"]
        rows.append(
            [
                result["model"],
                result["data"],
                str(result["pairs"]),
                format_estimate(m["accuracy"]),
                format_estimate(m["rank_correlation"]["kendall_tau_pairs"], ci=False),
                format_estimate(m["rank_correlation"]["spearman_per_prompt"], ci=False),
                f"{m['margins']['mean']:.3g}±{m['margins']['std']:.3g}",
                *(format_estimate(m["priors"][p]["fraction_above_delta"], ci=False) for p in priors),
                format_estimate(m["length_bias"]["score_length_spearman"], ci=False),
                format_estimate(m["length_bias"]["accuracy_chosen_shorter"], ci=False),
                format_estimate(m["calibration"]["ece"], ci=False),
            ]
        )
    from pcrm.console import text_table

    return text_table([dict(zip(header, row)) for row in rows])


def _data_name(source: str, split: str) -> str:
    from pcrm.data import BUNDLED

    return f"{source}-{split}" if source in BUNDLED else str(Path(source).with_suffix(""))


def evaluate_heldout(
    model,
    tokenizer,
    pairs,
    *,
    max_length: int,
    batch_size: int = 32,
    progress: bool = True,
    prior: ConstraintConfig | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy and margin statistics of a trained reward model on held-out `pairs`, and the share of margins above
    δ* under each prior: `prior` (the run's own, None: none) for its method, the defaults (at `seed`) for the other."""
    from pcrm.constraints import add_constraints
    from pcrm.evaluation.metrics import margin_statistics
    from pcrm.scoring import score_pairs

    chosen, rejected = score_pairs(model, tokenizer, pairs, max_length, batch_size, progress)
    margin = chosen - rejected
    stats = margin_statistics(margin)
    stats["pairs"] = len(margin)
    for method in ("length", "cosine"):
        options = prior if prior is not None and prior.method == method else PriorOptions().resolve(method, seed)
        deltas = np.asarray(add_constraints(pairs, options, tokenizer, show_progress=False)["delta"])
        stats[f"frac_above_delta_{method}"] = float(np.mean(margin > deltas))
    return stats
