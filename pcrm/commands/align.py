"""`pcrm align`: align a policy against trained reward models, and track the reward scale.

`--method bon` (best-of-N, `pcrm.alignment.bon`), `ppo` (`pcrm.alignment.ppo`), `rloo` / `grpo` (TRL,
`pcrm.alignment.rl_trl`), the RL runs driven by `pcrm.alignment.rl`. Several `--reward-model`s run the same experiment
(same seed, prompts and samples) once per RM, so RMs compare side by side. RL runs write, per RM,
`OUTPUT/<rm>/log.jsonl` (one row per step: raw proxy reward mean/std/max, KL, length, value explained variance, and
every `--probe-every` steps the probe: proxy and judge reward, KL and judge win rate against the starting policy on
`--prompts` fixed held-out prompts) and the aligned policy `OUTPUT/<rm>/policy`; then `OUTPUT/summary.json`,
`table.md` and plots (reward vs KL, reward scale and length over steps).
The tables and plots are stored as report sections of OUTPUT (`pcrm report --input OUTPUT`);
`--report DIR` adds them to the report of a `pcrm evaluate` directory.
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import require
from pcrm.io import atomic_write_text, versions, write_json

METHODS = ("bon", "ppo", "rloo", "grpo")


@dataclass
class Config:
    """Best-of-N, PPO, RLOO or GRPO against one or several trained reward models, judged by an independent one."""

    method: str = field(default="bon", metadata={"help": f"{', '.join(METHODS)}", "choices": METHODS})
    reward_model: list[str] = field(
        default_factory=list, metadata={"help": "proxy reward-model directory (repeat to compare several)"}
    )
    judge: str | None = field(
        default=None, metadata={"help": "independent reward-model directory that judges responses (none: no judge)"}
    )
    policy: str = field(
        default="smollm2", metadata={"help": "starting policy: bundled name, model directory or Hub id"}
    )
    data: str = field(
        default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory of the prompts"}
    )
    train_split: str = field(default="train", metadata={"help": "split of the RL training prompts"})
    eval_split: str = field(
        default="test", metadata={"help": "held-out split: best-of-N prompts and the RL probe prompts"}
    )
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    prompts: int = field(default=32, metadata={"help": "held-out prompts (best-of-N; the fixed probe set of RL)"})
    n: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "best-of-N: N (repeat; default 1 2 4 8 16)"}
    )
    temperature: float = field(default=1.0, metadata={"help": "best-of-N sampling temperature (RL samples at 1)"})
    max_new_tokens: int = field(default=48, metadata={"help": "max tokens of a response"})
    max_prompt_length: int = field(
        default=128, metadata={"help": "prompts are cut from the left to this many policy tokens"}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "max tokens a reward model reads, the prompt's start cut "
            "(default: the --max-length it was trained with)"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "prompts per RL step; batch size of generation and scoring"})
    steps: int = field(default=20, metadata={"help": "RL optimizer steps"})
    learning_rate: float = field(default=1e-5, metadata={"help": "RL learning rate (constant)"})
    value_learning_rate: float = field(
        default=1e-4, metadata={"help": "PPO learning rate of the value head (zero-initialised)"}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "KL penalty coefficient β (PPO: per token in the reward; RLOO/GRPO: TRL's beta)"},
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO/RLOO/GRPO ratio clip ε"})
    value_clip: float = field(default=0.2, metadata={"help": "PPO value clip (in reward units)"})
    vf_coef: float = field(default=0.1, metadata={"help": "PPO value-loss weight"})
    gamma: float = field(default=1.0, metadata={"help": "PPO discount γ"})
    lam: float = field(default=0.95, metadata={"help": "PPO GAE λ"})
    ppo_epochs: int = field(default=2, metadata={"help": "PPO passes over each rollout batch"})
    minibatch_size: int = field(default=4, metadata={"help": "PPO minibatch size (responses)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    generations: int = field(default=4, metadata={"help": "RLOO/GRPO completions per prompt"})
    reward_norm: bool = field(
        default=False,
        metadata={"help": "standardise rewards by the running mean/std of raw scores (baseline scale control)"},
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "clip rewards (after --reward-norm) to [-C, C] (baseline scale control)"}
    )
    probe_every: int = field(
        default=5,
        metadata={"help": "RL: judge the policy on the probe prompts every K steps (and at the start and end)"},
    )
    save_steps: int = field(default=0, metadata={"help": "RL: checkpoint every N steps, for --resume (0: none)"})
    resume: bool = field(
        default=False,
        metadata={
            "help": "PPO/RLOO/GRPO: resume every reward model's run from its last checkpoint "
            "(best-of-N reuses its cached samples instead)"
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing output directory of pcrm align (any method)"}
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the win-rate CIs"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt order, sampling and bootstrap"})
    report: str | None = field(
        default=None, metadata={"help": "pcrm evaluate directory whose report gets the table and plots"}
    )
    output: str = field(default="runs/align", metadata={"help": "output directory"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (generation, scoring, training)"})

    def __post_init__(self):
        from pcrm.preflight import check_numbers

        check_numbers(self)  # every float option finite
        checks = (
            (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (
                bool(self.reward_model),
                "--reward-model is required (a reward-model directory; repeat to compare several)",
            ),
            (len(set(self.reward_model)) == len(self.reward_model), "--reward-model: the same model is given twice"),
            (bool(self.n) and min(self.n) >= 1, f"--n must be >= 1, got {self.n}"),
            (
                min(
                    self.prompts,
                    self.max_new_tokens,
                    self.max_prompt_length,
                    self.max_length or 1,
                    self.batch_size,
                    self.steps,
                    self.ppo_epochs,
                    self.minibatch_size,
                    self.probe_every,
                    self.bootstrap,
                )
                >= 1,
                "--prompts, --max-new-tokens, --max-prompt-length, --max-length, --batch-size, --steps, --ppo-epochs, "
                "--minibatch-size, --probe-every and --bootstrap must be >= 1",
            ),
            (
                min(
                    self.temperature,
                    self.learning_rate,
                    self.value_learning_rate,
                    self.clip_range,
                    self.value_clip,
                    self.max_grad_norm,
                )
                > 0,
                "--temperature, --learning-rate, --value-learning-rate, --clip-range, --value-clip and "
                "--max-grad-norm must be > 0",
            ),
            (self.kl_coef >= 0 and self.vf_coef >= 0, "--kl-coef and --vf-coef must be >= 0"),
            (0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "--gamma and --lam must be in [0, 1]"),
            (self.generations >= 2, f"--generations must be >= 2 (RLOO/GRPO need a group), got {self.generations}"),
            (self.reward_clip is None or self.reward_clip > 0, f"--reward-clip must be > 0, got {self.reward_clip}"),
            (self.save_steps >= 0, f"--save-steps must be >= 0, got {self.save_steps}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        )
        require(checks)
        self.n = sorted(set(self.n))


def run(config: Config) -> dict:
    """`_align` with the libraries' bars off unless `config.progress`."""
    from pcrm.console import progress_bars

    with progress_bars(config.progress):
        return _align(config)


def _align(config: Config) -> dict:
    from pcrm.io import unique_labels, usable_cache_dir
    from pcrm.preflight import check_device, check_model, check_report_dir

    start = time.perf_counter()
    check_device(config.device)
    for name in (*config.reward_model, *([config.judge] if config.judge else [])):  # fail before any sampling
        check_model(name, "reward", config.max_length, "--reward-model" if name in config.reward_model else "--judge")
    check_model(
        config.policy,
        "causal",
        config.max_prompt_length + config.max_new_tokens,
        "--policy",
        "--max-prompt-length + --max-new-tokens",
    )
    if config.report:
        check_report_dir(config.report)
    usable_cache_dir()
    labels = unique_labels(config.reward_model)
    folder = _output_folder(config, labels)
    folder.plan()  # all checks before the first write
    if config.resume and config.method == "ppo":
        from pcrm.alignment.ppo import load_state

        for label in labels:
            load_state(folder.resume_from / label / "checkpoint" / "state.pt")  # tensors only, checked before the run
    with folder:
        results, sections = _run(config, labels, folder.work, start)
        from pcrm.report import Section, store_sections

        store_sections(
            folder.work,
            [
                Section(title, text, rows, [Path(p).relative_to(folder.work).as_posix() for p in images])
                for title, rows, images, text in sections
            ],
        )  # `pcrm report --input OUTPUT`
        folder.commit({"kind": "align", "method": config.method, "config": asdict(config), "versions": versions()})
    output = folder.path
    if config.report:
        from pcrm.outputs import holding
        from pcrm.report import add_section

        with holding(config.report):
            for title, rows, images, text in sections:
                images = [output / Path(p).relative_to(folder.work) for p in images]  # the work folder was swapped in
                print(f"added section {add_section(config.report, title, rows, images, text)}")
    print(f"wrote {output}")
    return results


def _run(config: Config, labels: list[str], output: Path, start: float):
    from pcrm.report import markdown_table

    if config.method == "bon":
        from pcrm.alignment.bon import plot_bon, run_bon, scale_rows, table_rows

        results = run_bon(config, labels, output)
        text = (
            f"Best-of-N on {results['prompts']} held-out prompts, {results['samples_per_prompt']} seeded samples each "
            "shared by all reward models; the selection is the proxy's argmax among the first N. KL = log N − (N−1)/N. "
            "Proxy gain: (mean proxy of the selections − mean of all samples) / std of all samples."
        )
        sections = [
            (
                f"Alignment: best-of-N ({Path(config.policy).name})",
                table_rows(results),
                [plot_bon(results, output / "bon.png")],
                text,
            ),
            (
                "Alignment: reward scale on policy samples",
                scale_rows(results),
                [],
                "Scores of every reward model on all best-of-N samples; Spearman ρ with the judge's scores and "
                "with length (tokens).",
            ),
        ]
    else:
        from pcrm.alignment.rl import plot_rl, rl_table_rows, run_rl

        results = run_rl(config, labels, output)
        text = (
            f"{config.method.upper()}, {config.steps} steps of {config.batch_size} prompts, seed {config.seed}, "
            f"the same prompts for every reward model; probe: {config.prompts} held-out prompts, one seeded sample "
            "each. Proxy gain in units of the proxy's std on the starting policy's probe responses; "
            "KL = Σ log π/π_ref over the probe responses."
        )
        sections = [
            (
                f"Alignment: {config.method.upper()} ({Path(config.policy).name})",
                rl_table_rows(results),
                plot_rl(results, output),
                text,
            )
        ]
    results["seconds"] = time.perf_counter() - start
    write_json(output / ("bon.json" if config.method == "bon" else "summary.json"), results)
    tables = "\n\n".join(markdown_table(rows) for _, rows, _, _ in sections)
    atomic_write_text(output / "table.md", tables + "\n")
    print(tables)
    return results, sections


def _output_folder(config: Config, labels: list[str]):
    """The output held by `pcrm.outputs.OutputFolder`; --resume (RL) needs a complete checkpoint in every run
    directory."""
    from pcrm.outputs import OutputFolder, last_complete_checkpoint, settings_of

    def resumable(work: Path) -> bool:
        if config.method == "bon":
            return False
        if config.method == "ppo":
            return all((work / label / "checkpoint" / "state.pt").is_file() for label in labels)
        return all(last_complete_checkpoint(work / label / "checkpoints")[0] is not None for label in labels)

    free = (
        "output",
        "overwrite",
        "resume",
        "steps",
        "save_steps",
        "probe_every",
        "bootstrap",
        "report",
        "device",
        "progress",
    )
    return OutputFolder(
        config.output,
        "align",
        settings_of(config, free),
        overwrite=config.overwrite,
        resume=config.resume,
        checkpoint_dir=None,
        resumable=resumable,
    )
