"""Smoke tests of benchmarks/*.py on a tiny random model: each script runs end to end and writes its JSON.

No timing is asserted (figures on a shared machine are noise at this size); the scripts are
only kept from rotting. The real figures: README "Benchmarks".
"""

import importlib
import json
import sys
from pathlib import Path

import pytest
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
    result = module.main(["--quick", "--model", str(tiny_rm_dir), "--data", str(pairs_file), "--repeats", "1",
                          "--output", str(output), *options])
    saved = json.loads(output.read_text())
    assert saved["figures"] == json.loads(json.dumps(result["figures"]))
    assert saved["table"] and saved["machine"]["load_average"] and saved["settings"]["quick"]
    return saved


def test_rm_step(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("rm_step"), tiny_rm_dir, pairs_file, tmp_path, "--methods", "bt", "length", "--unit", "chars")
    assert [row["method"] for row in saved["table"]] == ["bt", "length"]
    assert all(row["same_batches"] for row in saved["table"])
    assert "step_time_ratio_length_vs_bt" in saved["figures"] and saved["figures"]["loss_only_us"]["pcrm"] > 0


def test_vs_trl_uses_the_same_pairs(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("vs_trl"), tiny_rm_dir, pairs_file, tmp_path, "--method", "length", "--max-length", "128",
                "--trl-stock-variant")
    rows = {row["trainer"]: row for row in saved["table"]}
    assert set(rows) == {"pcrm", "pcrm-random", "trl", "trl-stock-gc"}
    assert len({row["pairs"] for row in rows.values()}) == 1 and rows["trl"]["pairs"] > 0
    assert saved["figures"]["speedup_pcrm_vs_trl"]["value"] > 0


def test_vs_reference_procedure(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("vs_reference_procedure"), tiny_rm_dir, pairs_file, tmp_path, "--encoder-size", "tiny")
    assert [row["procedure"] for row in saved["table"]] == ["pcrm", "reference"]
    assert all(row["same_rm_batches"] for row in saved["table"])
    assert saved["figures"]["step_time_ratio_reference_vs_pcrm"] > 0


def test_reference_loss_is_pcrm_loss(bench):
    """The reference's per-pair loop computes the same objective as pcrm's cached δ* and vectorised loss."""
    from pcrm.constraints import angular_similarity, delta_star
    from pcrm.losses import pcrm_loss

    reference_loss = bench("vs_reference_procedure").reference_loss
    torch.manual_seed(0)
    rewards = torch.randn(10, requires_grad=True)
    embeddings = torch.nn.functional.normalize(torch.randn(10, 16), dim=1)
    loss, delta = reference_loss(rewards, embeddings, 2.0, 0.001, -1.5)
    expected_delta = delta_star(angular_similarity(embeddings[:5], embeddings[5:]), 2.0, 0.001, -1.5)
    torch.testing.assert_close(delta, expected_delta)
    torch.testing.assert_close(loss, pcrm_loss(rewards[:5], rewards[5:], expected_delta).mean())


def test_constraints(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("constraints"), tiny_rm_dir, pairs_file, tmp_path)
    figures = saved["figures"]
    assert figures["pairs"] == 8 and figures["cosine_fresh_vs_raw_encoder"]["value"] > 0
    assert figures["cosine_cached_seconds"] > 0 and figures["length_tokens_pairs_per_s"] > 0


def test_memory(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("memory"), tiny_rm_dir, pairs_file, tmp_path, "--method", "length")
    rows = {row["variant"]: row for row in saved["table"]}
    assert set(rows) == {"plain forward+backward", "plain + AdamW step", "pcrm trainer"}
    assert all(row["same_batches"] and row["peak_rss_MiB"] >= row["setup_rss_MiB"] > 0 for row in rows.values())


def test_scaling(bench, tiny_rm_dir, pairs_file, tmp_path):
    saved = run(bench("scaling"), tiny_rm_dir, pairs_file, tmp_path, "--method", "length", "--pairs", "2", "--factors", "1", "2")
    assert [row["pairs"] for row in saved["table"] if row["axis"] == "pairs"] == [2, 4]
    assert "exponent_epoch_time_vs_pairs" in saved["figures"]


def test_every_script_has_a_test_and_a_readme_command():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"benchlib"}
    source = Path(__file__).read_text()
    readme = (BENCHMARKS.parent / "README.md").read_text()
    assert all(f'bench("{name}")' in source and f".venv/bin/python benchmarks/{name}.py" in readme for name in scripts)
