"""`pcrm evaluate-policy`: judge aligned policies against their starting policy.

On held-out pairs: the implicit reward margin `m = β·[log π/π_ref (y_w) − log π/π_ref (y_l)]`,
computed by the training code path (TRL's tokenisation, `PcrmDPOTrainer.sequence_logps`): accuracy
(m > 0), margin scale, log-prob drift. On held-out prompts: one response per policy (greedy, or
seeded sampling), its length, and, with `--judge` (a reward-model directory), the judge's score and
the win rate against the starting policy and against `--baseline` (e.g. plain DPO) with percentile
bootstrap CIs over prompts. Policies are assumed to share the starting policy's tokenizer. The table is also stored
as a report section of the output (`pcrm report --input OUTPUT`) and, with `--report DIR`, added to the report of a
`pcrm evaluate` directory.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field

from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import require
from pcrm.evaluation.policies import (
    PairScorer,
    format_table,
    generate,
    judge_responses,
    length_stats,
    prompt_texts,
    table_rows,
    training_info,
    write_responses,
)
from pcrm.io import atomic_write_text, write_json


@dataclass
class Config:
    """Implicit rewards on held-out pairs, judge win rates and response lengths on held-out prompts."""

    policy: list[str] = field(
        default_factory=list, metadata={"help": "policy directory to evaluate (repeat for several)"}
    )
    reference: str = field(
        default="smollm2", metadata={"help": "starting policy: π_ref of the implicit rewards, opponent of the win rate"}
    )
    baseline: str | None = field(
        default=None, metadata={"help": "second opponent of the win rates, e.g. a plain DPO policy"}
    )
    judge: str | None = field(
        default=None, metadata={"help": "reward-model directory that scores responses (none: no win rates)"}
    )
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="test", metadata={"help": "held-out split"})
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    pairs: int = field(default=64, metadata={"help": "held-out pairs for the implicit rewards"})
    prompts: int = field(default=32, metadata={"help": "held-out prompts to generate responses for"})
    beta: float | None = field(
        default=None, metadata={"help": "β of the implicit reward (default: the policy's pcrm_config.json, else 0.1)"}
    )
    max_length: int = field(default=256, metadata={"help": "max tokens of prompt + response (as in training)"})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "prompts are cut from the left to this many tokens (default: max-length/2)"}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "max tokens of a generated response"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0: greedy)"})
    batch_size: int = field(default=8, metadata={"help": "batch size of scoring and generation"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the win-rate CIs"})
    seed: int = field(default=0, metadata={"help": "seed of the subsets, sampling and bootstrap"})
    output: str = field(
        default="runs/policy-eval", metadata={"help": "directory for metrics.json, table.md, responses.jsonl"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace an existing --output of pcrm evaluate-policy (only once this run succeeds)"},
    )
    report: str | None = field(
        default=None, metadata={"help": "pcrm evaluate directory whose report gets the policy table"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars (generation, reference log-probs)"})

    def __post_init__(self):
        from pcrm.preflight import check_numbers

        check_numbers(self)
        if self.max_prompt_length is None:
            self.max_prompt_length = self.max_length // 2
        checks = (
            (bool(self.policy), "--policy is required (a policy directory; repeat for several)"),
            (
                self.beta is None or (math.isfinite(self.beta) and self.beta > 0),
                f"--beta must be a finite number > 0, got {self.beta}",
            ),
            (
                self.pairs >= 1 and self.prompts >= 1,
                f"--pairs and --prompts must be >= 1, got {self.pairs} and {self.prompts}",
            ),
            (
                0 < self.max_prompt_length < self.max_length,
                f"--max-prompt-length must be in [1, --max-length), got {self.max_prompt_length}",
            ),
            (self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1, got {self.max_new_tokens}"),
            (
                math.isfinite(self.temperature) and self.temperature >= 0,
                f"--temperature must be >= 0, got {self.temperature}",
            ),
            (self.batch_size >= 1 and self.bootstrap >= 1, "--batch-size and --bootstrap must be >= 1"),
        )
        require(checks)


def run(config: Config) -> dict:
    """`_evaluate_policies` with the libraries' bars off unless `config.progress`."""
    from pcrm.console import progress_bars

    with progress_bars(config.progress):
        return _evaluate_policies(config)


def _evaluate_policies(config: Config) -> dict:
    from pcrm.io import versions
    from pcrm.models import load_causal_lm, load_tokenizer
    from pcrm.outputs import OutputFolder
    from pcrm.report import store_sections

    start = time.perf_counter()
    _check_inputs(config)
    folder = OutputFolder(config.output, "evaluate-policy", overwrite=config.overwrite)
    folder.plan()  # every check before generating
    pairs, prompts = _held_out(config)
    tokenizer = load_tokenizer(config.reference)
    reference = load_causal_lm(config.reference)
    scorer = PairScorer(  # computes the reference log-probs
        reference,
        tokenizer,
        pairs,
        output_dir=config.output,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        batch_size=config.batch_size,
        device=config.device,
        progress=config.progress,
    )
    rows = _responses_and_rewards(
        config, reference, tokenizer, scorer, prompt_texts(prompts, tokenizer, config.max_prompt_length)
    )
    for row in rows.values():
        row["length"] = length_stats(row["responses"], tokenizer)
    if config.judge:
        _judge(config, rows, prompts, scorer.device)
    metrics = {
        "config": asdict(config),
        "pairs": len(pairs),
        "prompts": len(prompts),
        "seconds": time.perf_counter() - start,
        "policies": [{k: v for k, v in row.items() if k != "responses"} for row in rows.values()],
    }
    section = _report_section(config, metrics)
    table = format_table(metrics)
    with folder:
        write_json(folder.work / "metrics.json", metrics)
        write_responses(folder.work / "responses.jsonl", rows, prompts)
        atomic_write_text(folder.work / "table.md", table + "\n")
        store_sections(folder.work, [section])
        output = folder.commit({"kind": "evaluate-policy", "config": asdict(config), "versions": versions()})
    print(table)
    if config.report:
        _add_to_report(config.report, section)
    print(f"wrote {output / 'metrics.json'}, {output / 'table.md'} and {output / 'responses.jsonl'}")
    return metrics


def _check_inputs(config: Config) -> None:
    """The device, every policy, the judge and the report directory, before anything is loaded or written."""
    from pcrm.preflight import check_device, check_model, check_report_dir

    check_device(config.device)
    for option, names in (
        ("--policy", config.policy),
        ("--reference", [config.reference]),
        ("--baseline", [config.baseline]),
    ):
        for name in filter(None, names):
            check_model(name, "causal", config.max_length, option)
    if config.judge:
        check_model(config.judge, "reward", None, "--judge")
    if config.report:
        check_report_dir(config.report)


def _held_out(config: Config) -> tuple:
    """(seeded `--pairs` held-out pairs, the first `--prompts` distinct held-out prompts)."""
    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences

    report = LoadReport()
    held_out = load_preferences(
        config.data, split=config.split, config_name=config.data_config, columns=config.columns, report=report
    ).shuffle(seed=config.seed)
    pairs = held_out.select(range(min(config.pairs, len(held_out))))
    unique = {}
    for prompt in held_out["prompt"]:
        unique.setdefault(json.dumps(prompt, sort_keys=True), prompt)
    prompts = list(unique.values())[: config.prompts]
    print_data_summary(
        report, f"held-out: {len(pairs)} pairs for the implicit rewards, {len(prompts)} prompts for responses"
    )
    return pairs, prompts


def _responses_and_rewards(config: Config, reference, tokenizer, scorer: PairScorer, inputs: list[str]) -> dict:
    """policy name -> its row: responses to `inputs`; implicit rewards and training facts (not for the reference)."""
    from pcrm.models import load_causal_lm

    def respond(model) -> list[str]:
        return generate(
            model,
            tokenizer,
            inputs,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed,
            batch_size=config.batch_size,
        )

    names = list(dict.fromkeys([config.reference, *([config.baseline] if config.baseline else []), *config.policy]))
    rows = {config.reference: {"policy": config.reference, "responses": respond(reference)}}
    for name in names[1:]:
        model = load_causal_lm(name).to(scorer.device)
        info = training_info(name)
        rows[name] = {
            "policy": name,
            **info,
            "implicit": scorer.implicit_rewards(model, config.beta or info.get("beta") or 0.1),
            "responses": respond(model),
        }
        print(f"{name}: implicit-reward accuracy {rows[name]['implicit']['accuracy']:.3f}", flush=True)
        del model
    return rows


def _judge(config: Config, rows: dict, prompts: list, device) -> None:
    judge_responses(
        rows,
        prompts,
        judge=config.judge,
        reference=config.reference,
        baseline=config.baseline,
        bootstrap=config.bootstrap,
        seed=config.seed,
        batch_size=config.batch_size,
        device=device,
    )


def _report_section(config: Config, metrics: dict):
    """The policy table as a report section (`pcrm report`)."""
    from pcrm.report import Section

    judged = f"; judge {config.judge}, win rates with 95% bootstrap CIs over prompts" if config.judge else ""
    return Section(
        f"Policy evaluation ({len(metrics['policies']) - 1} policies against {config.reference})",
        f"Implicit rewards on {metrics['pairs']} held-out pairs of {config.data}; one "
        f"{'greedy' if config.temperature == 0 else 'sampled'} response per policy on {metrics['prompts']} held-out "
        f"prompts{judged}.",
        table_rows(metrics),
    )


def _add_to_report(report: str, section) -> None:
    from pcrm.outputs import holding
    from pcrm.report import add_section

    with holding(report):
        print(f"added section {add_section(report, section.title, section.rows, text=section.text)}")
