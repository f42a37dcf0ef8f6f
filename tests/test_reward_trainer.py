"""Reward-model training end to end on a tiny random model: methods, outputs, faults, resume, distributed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rm_fixtures import slow, free_port
import torch
from safetensors.torch import load_file

from pcrm.cli import main
from pcrm.errors import PcrmError
from pcrm.commands.train_rm import Config, train
from pcrm.constraints import PriorOptions

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tiny_rm_dir, pairs_file, output, **overrides) -> Config:
    options = dict(
        model=str(tiny_rm_dir),
        data=str(pairs_file),
        eval_data=str(pairs_file),
        eval_split="train",
        output=str(output),
        method="bt",
        max_length=64,
        batch_size=4,
        learning_rate=1e-3,
        max_steps=4,
        save_steps=2,
        progress=False,
    )
    options.update(overrides)
    return Config(**options, prior=PriorOptions(unit="chars"))


@pytest.mark.parametrize("method", ["bt", "length", "fixed", "random", "lower-margin", "center"])
def test_every_method_trains_and_saves_a_standard_reward_model(tiny_rm_dir, pairs_file, tmp_path, method):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    output = tmp_path / method
    result = train(tiny_config(tiny_rm_dir, pairs_file, output, method=method))
    model = AutoModelForSequenceClassification.from_pretrained(output)
    AutoTokenizer.from_pretrained(output)
    assert model.config.num_labels == 1
    saved = json.loads((output / "pcrm_config.json").read_text())
    assert saved["method"] == method and saved["steps"] == 4 and saved["train_pairs"] == 8
    assert "data_fingerprint" in saved and "versions" in saved
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    steps = [entry for entry in log if "loss" in entry]
    assert len(steps) == 4
    expected = {"loss_rank", "loss_constraint", "accuracy", "margin_mean", "margin_std", "reward_mean", "reward_std"}
    assert expected <= set(steps[0])
    # the loss values themselves are checked against the formulas in test_trainer_losses.py
    assert ("frac_above_delta" in steps[0]) == (method in ("length", "fixed", "random"))
    if method not in ("length", "fixed", "random"):
        assert steps[0]["loss_constraint"] == 0
    if method != "center":
        assert steps[0]["loss_center"] == 0
    assert result["heldout"]["pairs"] == 8


def test_cli_trains_and_refuses_to_overwrite(tiny_rm_dir, pairs_file, tmp_path, capsys):
    output = tmp_path / "cli"
    args = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--eval-data",
        str(pairs_file),
        "--eval-split",
        "train",
        "--output",
        str(output),
        "--method",
        "length",
        "--unit",
        "words",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "held-out (8 pairs): accuracy" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--method", "ppo", "--method must be one of"),
        ("--beta1", "-1", "--beta1 must be > 0"),
        ("--learning-rate", "0", "--learning-rate must be > 0"),
        ("--precision", "fp8", "--precision"),
        ("--data", "nope.jsonl", "nope.jsonl: no such file"),
    ],
)
def test_bad_options_give_one_line(tiny_rm_dir, pairs_file, tmp_path, capsys, option, value, message):
    args = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--output",
        str(tmp_path / "o"),
        option,
        value,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_non_finite_loss_stops_with_a_clear_message(tiny_rm_dir, pairs_file, tmp_path):
    config = tiny_config(tiny_rm_dir, pairs_file, tmp_path / "nan", learning_rate=1e30, max_steps=6)
    with pytest.raises(PcrmError, match="non-finite loss at step"):
        train(config)


KILL_SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from pcrm.commands.train_rm import Config, train
from pcrm.constraints import PriorOptions

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {kill_step}:
            os.kill(os.getpid(), signal.SIGKILL)

train(Config(**{config!r}), callbacks=[KillAfterSave()])
"""


def weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_rm_dir, pairs_file, tmp_path):
    common = dict(max_steps=6, save_steps=2, batch_size=2, method="random")
    reference = tiny_config(tiny_rm_dir, pairs_file, tmp_path / "reference", **common)
    train(reference)
    killed = tiny_config(tiny_rm_dir, pairs_file, tmp_path / "killed", **common)
    fields = {k: v for k, v in vars(killed).items()}
    script = KILL_SCRIPT.format(kill_step=4, config=fields)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=os.environ.copy()
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-4").is_dir()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    with pytest.raises(PcrmError, match="--overwrite"):
        train(killed)
    killed.resume = True
    result = train(killed)
    assert result["steps"] == 6
    expected, actual = weights(tmp_path / "reference"), weights(tmp_path / "killed")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5)


@slow("two processes under accelerate (DDP over gloo), about 25 s")
def test_two_processes_match_one_with_the_same_global_batch(tiny_rm_dir, pairs_file, tmp_path):
    common = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--eval-data",
        str(pairs_file),
        "--eval-split",
        "train",
        "--method",
        "length",
        "--unit",
        "chars",
        "--max-steps",
        "3",
        "--learning-rate",
        "1e-3",
        "--sampler",
        "sequential",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `--multi_gpu` selects accelerate's torchrun launcher; pcrm runs DDP over gloo when there is no GPU.
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    two = subprocess.run(
        launch
        + [
            "--num_processes",
            "2",
            "--main_process_port",
            str(free_port()),
            "-m",
            "pcrm.cli",
            *common,
            "--batch-size",
            "2",
            "--output",
            str(tmp_path / "two"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "pcrm.cli", *common, "--batch-size", "4", "--output", str(tmp_path / "one")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    from tests.test_distributed_engines import _compare

    # up to float noise magnified by Adam: the same rule as the DeepSpeed engines (max 4.8e-5 measured, one element)
    _compare(weights(tmp_path / "two"), weights(tmp_path / "one"), weights(tiny_rm_dir))


def test_lora_and_gradient_checkpointing_save_a_merged_standard_model(tiny_rm_dir, pairs_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    output = tmp_path / "lora"
    train(tiny_config(tiny_rm_dir, pairs_file, output, lora_r=4, gradient_checkpointing=True, max_steps=2))
    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert not any("lora" in name for name, _ in model.named_parameters())
    saved, initial = weights(output), weights(tiny_rm_dir)
    assert not torch.allclose(saved["classifier.weight"], initial["classifier.weight"])
