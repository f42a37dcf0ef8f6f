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
from dataclasses import asdict
from pathlib import Path

from pcrm.alignment.config import METHODS, AlignConfig  # noqa: F401 (re-exported)
from pcrm.io import atomic_write_text, versions, write_json

Config = AlignConfig


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
