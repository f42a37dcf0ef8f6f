"""The study's stages in order, each cached in the study folder: `run_study` runs (or resumes) them all.

A stage is skipped when its output exists; the cheap derived stages (best-of-N, fit, report) re-run whenever an
earlier stage ran. study.json records the settings the cached outputs depend on, and a resumed study must use the
same ones.
"""

import json
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.io import write_json
from pcrm.study.fit import stage_analysis, stage_bestofn, stage_fit
from pcrm.study.labels import stage_labels
from pcrm.study.pool import stage_pool
from pcrm.study.proxies import ENSEMBLE, proxy_dirs, stage_proxies, stage_scores
from pcrm.study.report import format_summary, write_report

STAGES = ("labels", "proxies", "pool", "bestofn", "fit", "analysis", "on-policy", "report")
# What the cached outputs depend on: a resumed study must use the same values (or a new --output).
FINGERPRINT = (
    "gold",
    "data",
    "proxy_model",
    "label_noise",
    "label_seed",
    "max_pairs",
    "test_pairs",
    "max_length",
    "learning_rate",
    "epochs",
    "batch_size",
    "betas",
    "encoder",
    "policy",
    "prompts",
    "pool_size",
    "max_new_tokens",
    "max_prompt_tokens",
    "temperature",
    "seed",
    "folds",
    "pairs_per_prompt",
)


def check_study(config, out: Path, write: bool = True) -> None:
    """Record the settings the cached outputs depend on (unless not `write`); refuse to resume a study made with
    other ones, or whose study.json is unreadable."""
    path = out / "study.json"
    current = {key: getattr(config, key) for key in FINGERPRINT}
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PcrmError(
                f"{path}: unreadable ({type(err).__name__}); use a new --output, or remove the study"
            ) from None
        if not isinstance(saved, dict):
            raise PcrmError(f"{path}: not a study.json of pcrm overoptimization; use a new --output")
        changed = [key for key in FINGERPRINT if key in saved and saved[key] != current[key]]
        if changed:
            what = ", ".join(f"--{k.replace('_', '-')} {saved[k]!r} (now {current[k]!r})" for k in changed)
            raise PcrmError(f"--output {out} holds a study made with {what}: use a new --output, or the same options")
        return
    if write:
        write_json(path, current)


def _read_json(path: Path):
    return json.loads(path.read_text())


def _same_proxies(config, out: Path) -> bool:
    """Whether bestofn.json covers exactly this run's proxies (a run with other --methods/--seeds re-derives it)."""
    saved = _read_json(out / "bestofn.json")["proxies"]
    return {k for k in saved if k != ENSEMBLE} == set(proxy_dirs(config, out))


def _same_settings(config, out: Path) -> bool:
    """Whether analysis.json was made with this run's proxies and --uwo-lambda (not in study.json: cheap to redo)."""
    from pcrm.study.onpolicy import analysis_settings

    return _read_json(out / "analysis.json").get("settings") == analysis_settings(config, proxy_dirs(config, out))


def _check_pool_file(config, out: Path) -> None:
    """The on-policy arm's --folds and --pairs-per-prompt against a --pool file (or the pool already made) before
    study.json records them and the off-policy arm trains; a sampled pool's were checked with the options."""
    from pcrm.study.onpolicy import check_pool
    from pcrm.study.pool import read_pool

    made = out / "pool" / "pool.jsonl"
    source = made if made.is_file() else config.pool
    if "on-policy" in config.arms and source is not None:
        prompts, _, gold = read_pool(source)
        check_pool(config, len(prompts), gold.shape[1])


def _off_policy(config, out: Path, done) -> tuple:
    """The off-policy arm before the pool (labels, proxies); returns the labels summary."""
    cached = (out / "labels" / "summary.json").is_file()
    labels = _read_json(out / "labels" / "summary.json") if cached else stage_labels(config, out)
    done("labels", cached)
    done("proxies", not stage_proxies(config, out))
    return labels


def _off_policy_results(config, out: Path, done, upstream: bool) -> tuple:
    """The off-policy arm after the pool: scores, best-of-N, fit, analysis (re-derived when anything before ran)."""
    scored = stage_scores(config, out)
    cached = not (upstream or scored) and (out / "bestofn.json").is_file() and _same_proxies(config, out)
    curves = _read_json(out / "bestofn.json") if cached else stage_bestofn(config, out)
    done("bestofn", cached)
    cached = cached and (out / "fit.json").is_file()
    fit = _read_json(out / "fit.json") if cached else stage_fit(config, out, curves)
    done("fit", cached)
    cached = cached and (out / "analysis.json").is_file() and _same_settings(config, out)
    analysis = _read_json(out / "analysis.json") if cached else stage_analysis(config, out)
    done("analysis", cached)
    return curves, fit, analysis, not cached


def run_study(config) -> dict:
    """Run (or resume) every stage of the study under `config.output`; returns summary.json's content plus
    `stages`: which stages ran now and which were served from the output folder."""
    from pcrm.study import onpolicy

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    _check_pool_file(config, out)
    check_study(config, out)
    ran = {}

    def done(name, cached):
        ran[name] = "cached" if cached else "ran"
        if cached:
            print(f"== {name}: cached in {out}", flush=True)

    labels = _off_policy(config, out, done) if "off-policy" in config.arms else None
    cached = (out / "pool" / "pool.jsonl").is_file() and (out / "pool" / "meta.json").is_file()
    pool = _read_json(out / "pool" / "meta.json") if cached else stage_pool(config, out)
    done("pool", cached)
    upstream = any(v == "ran" for v in ran.values())
    curves = fit = analysis = arm = None
    fresh = upstream
    if "off-policy" in config.arms:
        curves, fit, analysis, fresh = _off_policy_results(config, out, done, upstream)
    if "on-policy" in config.arms:
        arm_labels, arm_analysis, arm_ran = onpolicy.run_arm(config, out, not cached)
        arm = {"labels": arm_labels, "analysis": arm_analysis}
        done("on-policy", not arm_ran)
        fresh = fresh or arm_ran
    names = ("report.html", "report.md", "summary.json")
    cached = not fresh and all((out / name).is_file() for name in names)
    summary = (
        _read_json(out / "summary.json")
        if cached
        else write_report(config, out, labels, pool, curves, fit, analysis, on_policy=arm)
    )
    done("report", cached)
    print(format_summary(fit, arm, out), flush=True)
    return {**summary, "stages": ran}
