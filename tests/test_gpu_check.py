"""scripts/gpu_check.sh --dry-run end to end: every step of the GPU check on tiny models, on the CPU.

The dry run is the GPU check's own code path (the same pcrm commands and options, the same figure
extraction) at tiny sizes, so a GPU session only has to run it. Checked here: the JSON has every figure,
each a finite number, and the figures are those of the runs (recomputed from what the runs wrote),
not constants. No timing is asserted.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.rm_fixtures import slow

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("smollm2-135m", "llama-1b")
TRAIN = {
    "steps",
    "train_seconds",
    "steps_per_s",
    "pairs",
    "real_tokens",
    "real_tokens_per_s",
    "peak_memory_gib",
    "heldout_accuracy",
    "command_wall_s",
}
EVALUATE = {
    "responses",
    "max_abs_score_diff",
    "mean_abs_score_diff",
    "score_std_cpu",
    "accuracy_accelerator",
    "accuracy_cpu_fp32",
    "accuracy_diff",
    "command_wall_s_accelerator",
    "command_wall_s_cpu_fp32",
}
BON = {"prompts", "samples", "samples_per_s", "samples_per_s_end_to_end", "command_wall_s", "peak_memory_gib"}
DPO = {"steps", "train_seconds", "steps_per_s", "pairs_per_s", "peak_memory_gib", "command_wall_s"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu-check")
    output = work / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--work", str(work), "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(output.read_text()), work


def leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def expected_keys(report) -> set[str]:
    variants = ["full", "lora"] + (["full-padding-free"] if report["settings"]["padding_free_option"] else [])
    keys = {"build_models.seconds"} | {f"constraints.cosine.{k}" for k in ("pairs", "seconds", "pairs_per_s")}
    keys |= {f"train_rm.{shape}.{variant}.{k}" for shape in SHAPES for variant in variants for k in TRAIN}
    keys |= {f"launch.smollm2-135m.full.{k}" for k in TRAIN}
    keys |= {f"evaluate.{k}" for k in EVALUATE} | {f"bon.{k}" for k in BON} | {f"train_dpo.{k}" for k in DPO}
    return keys


@slow("the dry run of scripts/gpu_check.sh, 40-100 s")
def test_every_figure_is_a_finite_number(dry_run):
    report, _ = dry_run
    assert report["mode"] == "dry-run" and report["errors"] == {} and report["skipped"] == {}
    figures = dict(leaves(report["figures"]))
    assert set(figures) == expected_keys(report)
    for key, value in figures.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        assert math.isfinite(value), key
    timings = [v for k, v in figures.items() if k.endswith(("seconds", "_s", "per_s")) or "per_s" in k]
    assert all(v > 0 for v in timings)
    assert all(v > 0 for k, v in figures.items() if k.endswith("peak_memory_gib"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@slow("the dry run of scripts/gpu_check.sh, 40-100 s")
def test_training_figures_are_those_of_the_runs(dry_run):
    from transformers import AutoTokenizer

    report, work = dry_run
    settings = report["settings"]
    pairs = _jsonl(work / "data" / "train.jsonl")
    # Real tokens recomputed without pcrm: prompt + response, at most --max-length tokens (kept by left truncation).
    tokenizer = AutoTokenizer.from_pretrained(work / "models" / "smollm2-135m")
    cap = settings["max_length"]
    tokens = sum(
        min(len(tokenizer(p["prompt"] + p[side])["input_ids"]), cap) for p in pairs for side in ("chosen", "rejected")
    )
    runs = [
        (f"train-rm/{shape}/{variant}", figures)
        for shape, by_variant in report["figures"]["train_rm"].items()
        for variant, figures in by_variant.items()
    ]
    runs.append(("launch/smollm2-135m/full", report["figures"]["launch"]["smollm2-135m"]["full"]))
    for name, figures in runs:
        output = Path(report["runs"][name]["argv"][report["runs"][name]["argv"].index("--output") + 1])
        record = json.loads((output / "pcrm_config.json").read_text())
        assert figures["train_seconds"] == record["train_seconds"] and figures["steps"] == record["steps"], name
        assert figures["steps"] == math.ceil(len(pairs) / settings["batch_size"]), name
        assert figures["steps_per_s"] == pytest.approx(figures["steps"] / figures["train_seconds"]), name
        assert figures["pairs"] == len(pairs) == record["train_pairs"], name
        assert figures["real_tokens"] == tokens, name
        assert figures["real_tokens_per_s"] == pytest.approx(tokens / figures["train_seconds"]), name
        assert figures["heldout_accuracy"] == record["heldout"]["accuracy"], name
        assert figures["peak_memory_gib"] == pytest.approx(report["runs"][name]["stats"]["peak_rss_gib"]), name
    assert "--lora-r" in report["runs"]["train-rm/llama-1b/lora"]["argv"]
    # No CUDA here: the launch step is a plain one-process accelerate launch, and says so.
    assert settings["launch_deepspeed_zero2"] is False
    assert report["runs"]["launch/smollm2-135m/full"]["launcher"][:2] == ["--num_processes", "1"]
    assert "no ZeRO-2" in settings["launch"]
    # The shapes are the dry run's, recorded with their parameter counts.
    models = settings["models"]
    assert models["llama-1b"]["parameters"] > models["smollm2-135m"]["parameters"] > 0
    assert models["smollm2-135m"]["vocab_size"] == len(tokenizer)
    dpo = report["figures"]["train_dpo"]
    assert dpo["steps"] == settings["dpo_steps"]
    assert dpo["steps_per_s"] == pytest.approx(dpo["steps"] / dpo["train_seconds"])
    assert (
        dpo["train_seconds"]
        == json.loads((work / "runs" / "train-dpo" / "pcrm_config.json").read_text())["train_seconds"]
    )


@slow("the dry run of scripts/gpu_check.sh, 40-100 s")
def test_evaluate_and_bon_figures_are_those_of_the_runs(dry_run):
    report, work = dry_run
    figures = report["figures"]["evaluate"]
    scores, accuracy = {}, {}
    for label in ("accelerator", "cpu_fp32"):
        metrics = json.loads((work / "runs" / f"evaluate-{label}" / "metrics.json").read_text())["results"][0]
        arrays = np.load(work / "runs" / f"evaluate-{label}" / metrics["arrays"])
        scores[label] = arrays["score"]
        accuracy[label] = float(np.mean(arrays["score"][arrays["chosen"]] > arrays["score"][arrays["rejected"]]))
    diff = np.abs(scores["accelerator"] - scores["cpu_fp32"])
    assert figures["max_abs_score_diff"] == pytest.approx(diff.max()) and figures[
        "mean_abs_score_diff"
    ] == pytest.approx(diff.mean())
    assert figures["accuracy_accelerator"] == pytest.approx(accuracy["accelerator"])
    assert figures["accuracy_cpu_fp32"] == pytest.approx(accuracy["cpu_fp32"])
    assert figures["responses"] == len(scores["cpu_fp32"]) == 2 * report["settings"]["heldout_pairs"]
    assert figures["score_std_cpu"] > 0  # the model scores responses differently: the scores are real
    # Both runs are on the CPU in fp32 here (no accelerator): two separate caches, one result.
    assert report["settings"]["evaluate_devices"] == {"accelerator": "cpu", "cpu_fp32": "cpu"}
    assert figures["max_abs_score_diff"] == 0.0
    bon = report["figures"]["bon"]
    settings = report["settings"]
    samples = _jsonl(work / "runs" / "bon" / "samples.jsonl")
    assert bon["samples"] == len(samples) == settings["bon_prompts"] * max(settings["bon_n"])
    assert bon["samples_per_s_end_to_end"] == pytest.approx(
        bon["samples"] / json.loads((work / "runs" / "bon" / "bon.json").read_text())["seconds"]
    )


def test_environment_check_accepts_this_environment_and_names_what_is_missing(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert gpu_check.environment_problems() == []  # the test environment is the pinned one
    monkeypatch.setattr(gpu_check, "PINNED", (*gpu_check.PINNED, "no-such-package-pcrm"))
    assert gpu_check.environment_problems() == ["no-such-package-pcrm is missing"]
