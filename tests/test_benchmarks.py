"""Smoke tests of benchmarks/*.py on a tiny random model: each script runs end to end and writes its JSON.

No timing is asserted (figures on a shared machine are noise at this size); the scripts are
only kept from rotting. The real figures: README "Benchmarks".
"""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from tests.rm_fixtures import slow
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    threads = torch.get_num_threads()
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCHMARKS))
    torch.set_num_threads(threads)  # the scripts set it


def run(module, tiny_rm_dir, pairs_file, tmp_path, *options) -> dict:
    output = tmp_path / f"{module.__name__}.json"
    result = module.main(
        [
            "--quick",
            "--model",
            str(tiny_rm_dir),
            "--data",
            str(pairs_file),
            "--repeats",
            "1",
            "--output",
            str(output),
            *options,
        ]
    )
    saved = json.loads(output.read_text())
    assert saved["figures"] == json.loads(json.dumps(result["figures"]))
    assert saved["table"] and saved["machine"]["load_average"] and saved["settings"]["quick"]
    return saved


@slow("times PCRM and BT training steps (about 7 s)")
def test_rm_step(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("rm_step"), tiny_rm_dir, pairs_file, tmp_path, "--methods", "bt", "length", "--unit", "chars")
    assert [row["method"] for row in saved["table"]] == ["bt", "length"]
    assert all(row["same_batches"] for row in saved["table"])
    assert "step_time_ratio_length_vs_bt" in saved["figures"] and "pcrm" in saved["figures"]["loss_only_us"]


@slow("trains pcrm's and TRL's trainers (about 7 s)")
def test_vs_trl_uses_the_same_pairs(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(
        bench("vs_trl"),
        tiny_rm_dir,
        pairs_file,
        tmp_path,
        "--method",
        "length",
        "--max-length",
        "128",
        "--trl-stock-variant",
    )
    rows = {row["trainer"]: row for row in saved["table"]}
    assert set(rows) == {"pcrm", "pcrm-padded", "pcrm-random", "trl", "trl-stock-gc"}
    assert {row["pairs"] for row in rows.values()} == {8}  # the 8 pairs of pairs_file, none dropped
    assert "speedup_pcrm_vs_trl" in saved["figures"]


@slow("runs the reference procedure (about 4 s)")
def test_vs_reference_procedure(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("vs_reference_procedure"), tiny_rm_dir, pairs_file, tmp_path, "--encoder-size", "tiny")
    assert [row["procedure"] for row in saved["table"]] == ["pcrm", "reference"]
    assert all(row["same_rm_batches"] for row in saved["table"])
    assert "step_time_ratio_reference_vs_pcrm" in saved["figures"]


def test_reference_loss_is_the_pcrm_formula(bench):
    """The reference's per-pair loop computes δ* = β1/(s+β2)+β3 from the angular similarity and
    mean(−log σ(m) − log σ(δ* − m)), evaluated here by hand in plain Python."""
    reference_loss = bench("vs_reference_procedure").reference_loss
    torch.manual_seed(0)
    rewards = torch.randn(10)
    embeddings = torch.randn(10, 16)
    loss, delta = reference_loss(rewards, embeddings, 2.0, 0.001, -1.5)
    r, e = rewards.tolist(), embeddings.tolist()
    softplus = lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))  # noqa: E731  −log σ(−x)
    expected_delta, expected_loss = [], 0.0
    for i in range(5):
        a, b = e[i], e[i + 5]
        cosine = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        similarity = (math.pi - math.acos(min(max(cosine, 0.0), 1.0))) / math.pi
        d = 2.0 / (similarity + 0.001) - 1.5
        m = r[i] - r[i + 5]
        expected_delta.append(d)
        expected_loss += (softplus(-m) + softplus(m - d)) / 5
    assert delta.tolist() == pytest.approx(expected_delta, rel=1e-5)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)


def test_constraints(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("constraints"), tiny_rm_dir, pairs_file, tmp_path)
    figures = saved["figures"]
    assert figures["pairs"] == 8
    assert {"cosine_fresh_vs_raw_encoder", "cosine_cached_seconds", "length_tokens_pairs_per_s"} <= set(figures)


@slow("replays padded and packed batches under the memory tracker (about 15 s)")
def test_memory(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("memory"), tiny_rm_dir, pairs_file, tmp_path, "--method", "length")
    rows = {row["variant"]: row for row in saved["table"]}
    assert set(rows) == {"plain forward+backward", "plain + AdamW step", "pcrm trainer"}
    assert all(row["same_batches"] for row in rows.values())


@slow("trains at several sizes (about 6 s)")
def test_scaling(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(
        bench("scaling"), tiny_rm_dir, pairs_file, tmp_path, "--method", "length", "--pairs", "2", "--factors", "1", "2"
    )
    assert [row["pairs"] for row in saved["table"] if row["axis"] == "pairs"] == [2, 4]
    assert "exponent_epoch_time_vs_pairs" in saved["figures"]


def test_every_script_has_a_readme_command():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"benchlib"}
    readme = (BENCHMARKS.parent / "README.md").read_text()
    missing = {name for name in scripts if f".venv/bin/python benchmarks/{name}.py" not in readme}
    assert scripts and not missing, missing
