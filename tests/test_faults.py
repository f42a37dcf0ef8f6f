"""Bad inputs and faults across the commands: one-line errors (exit 2, no traceback), nothing written before the checks,
no previous output lost, no half-written output without its INCOMPLETE marker, kill -9 / Ctrl-C / SIGTERM / ENOSPC,
concurrent runs, corrupt or unusable caches, and reproducible training."""

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from pcrm.cli import main
from pcrm.commands.train_rm import Config, train
from pcrm.constraints import PriorOptions
from pcrm.outputs import MARKER, OutputFolder

REPO = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------------------


def tree_hashes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_whole_or_marked(output: Path) -> None:
    """An output folder is complete (pcrm_config.json, no marker), carries the INCOMPLETE marker, or is absent."""
    if output.exists() and any(output.iterdir()):
        assert (output / "pcrm_config.json").exists() != (output / MARKER).exists(), sorted(os.listdir(output))


def one_line_error(capsys, argv, message) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("pcrm ")]
    assert len(lines) == 1 and lines[0] == err.splitlines()[-1], err
    assert message in lines[0], lines[0]
    return lines[0]


def rm_options(**overrides) -> dict:
    options = dict(
        method="bt", max_length=64, batch_size=2, learning_rate=1e-3, max_steps=6, save_steps=2, progress=False
    )
    options.update(overrides)
    return options


def rm_config(tiny_rm_dir, pairs_file, output, **overrides) -> Config:
    return Config(
        model=str(tiny_rm_dir),
        data=str(pairs_file),
        eval_data=str(pairs_file),
        eval_split="train",
        output=str(output),
        **rm_options(**overrides),
        prior=PriorOptions(unit="chars"),
    )


def weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_rm_dir):
    """A tiny Llama policy, a 2-label classifier, a model with cut weights, a non-UTF-8 data file, a good RM output."""
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("faults")
    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=32,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    two = BertConfig(
        vocab_size=384,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        architectures=["BertForSequenceClassification"],
    )
    BertForSequenceClassification(two).save_pretrained(root / "two-labels")
    tokenizer.save_pretrained(root / "two-labels")
    truncated = root / "truncated"
    truncated.mkdir()
    for f in Path(tiny_rm_dir).iterdir():
        data = f.read_bytes()
        (truncated / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    (root / "latin1.jsonl").write_bytes('{"prompt": "café?", "chosen": "oui", "rejected": "non"}\n'.encode("latin-1"))
    (root / "a-file").write_text("not a folder")
    return root


# -- 1. option and input errors: one line, exit 2, nothing written -----------------------------------------

RM = "train-rm"
CASES = [
    # (command, extra options, expected message); {rm} {pairs} {root} are filled in
    (RM, ["--scheduler", "sometimes"], "--scheduler must be one of"),
    (RM, ["--seed", "-1"], "--seed must be >= 0"),
    (RM, ["--warmup-ratio", "-0.1"], "--warmup-ratio must be in [0, 1)"),
    (RM, ["--warmup-ratio", "1"], "--warmup-ratio must be in [0, 1)"),
    (RM, ["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    (RM, ["--max-length", "100000"], "above the limit"),
    (RM, ["--max-length", "1"], "--max-length must be >= 2"),
    (RM, ["--learning-rate", "nan"], "--learning-rate must be a finite number"),
    (RM, ["--center-coefficient", "inf"], "--center-coefficient must be a finite number"),
    (RM, ["--method", "length", "--beta3", "nan"], "--beta3 must be a finite number"),
    (RM, ["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (RM, ["--max-steps", "0"], "--max-steps must be -1 or >= 1"),
    (RM, ["--resume", "--overwrite"], "exclude each other"),
    (RM, ["--resume"], "no checkpoint to resume from"),
    (RM, ["--output", "{root}/a-file"], "is not a directory"),
    (RM, ["--output", "{root}/a-file/sub"], "is not a directory"),
    (RM, ["--model", "{root}/two-labels"], "2 labels, not a reward model"),
    (RM, ["--model", "{root}/truncated"], "truncated or not a safetensors file"),
    (RM, ["--model", "{root}/nowhere"], "no such model directory"),
    (RM, ["--data", "{root}/latin1.jsonl"], "UTF-8"),
    (RM, ["--data", "{root}/missing.jsonl"], "missing.jsonl"),
    (RM, ["--method", "length", "--beta3", "-5"], "δ* ≤ 0"),
    (RM, ["--bogus-option", "1"], "unrecognized arguments"),
    ("constraints", ["--seed", "-2"], "--seed must be >= 0"),
    ("constraints", ["--method", "fixed", "--fixed-delta", "nan"], "--fixed-delta must be a finite number"),
    ("constraints", ["--beta1", "inf"], "--beta1 must be a finite number"),
    ("constraints", ["--method", "length", "--unit", "chars", "--beta3", "-5"], "δ* ≤ 0"),
    ("constraints", ["--data", "{root}/latin1.jsonl", "--method", "length", "--unit", "chars"], "UTF-8"),
    ("evaluate", ["--model", "{rm}", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("evaluate", ["--model", "{root}/two-labels"], "not a reward model"),
    ("evaluate", ["--model", "{rm}", "--seed", "-1"], "--seed must be >= 0"),
    ("evaluate", ["--model", "{rm}", "--data", "{root}/missing.jsonl"], "missing.jsonl"),
    ("report", ["--input", "{root}/missing-dir"], "missing-dir"),
    ("train-dpo", ["--policy", "{root}/policy", "--seed", "-1"], "--seed must be >= 0"),
    ("train-dpo", ["--policy", "{root}/policy", "--beta", "nan"], "--beta must be a finite number"),
    ("train-dpo", ["--policy", "{root}/policy", "--max-length", "100000"], "above the limit"),
    ("train-dpo", ["--policy", "{root}/policy", "--output", "{root}/a-file"], "is not a directory"),
    ("train-dpo", ["--policy", "{root}/truncated"], "truncated or not a safetensors file"),
    ("evaluate-policy", ["--policy", "{root}/policy", "--seed", "-1"], "--seed must be >= 0"),
    ("evaluate-policy", ["--policy", "{root}/policy", "--temperature", "nan"], "--temperature must be a finite number"),
    ("align", ["--reward-model", "{rm}", "--seed", "-1"], "--seed must be >= 0"),
    ("align", ["--reward-model", "{rm}", "--temperature", "inf"], "--temperature must be a finite number"),
    ("align", ["--reward-model", "{root}/two-labels"], "not a reward model"),
    ("align", ["--reward-model", "{rm}", "--max-new-tokens", "500"], "above the limit"),
    ("align", ["--reward-model", "{rm}", "--output", "{root}/a-file"], "is not a directory"),
]


@pytest.mark.parametrize("command,extra,message", CASES, ids=[f"{c}-{' '.join(e)[:40]}" for c, e, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(
    models, tiny_rm_dir, pairs_file, tmp_path, capsys, command, extra, message
):
    fill = {"rm": str(tiny_rm_dir), "pairs": str(pairs_file), "root": str(models)}
    extra = [e.format(**fill) for e in extra]
    output = tmp_path / "out"
    base = {
        RM: [
            "--model",
            str(tiny_rm_dir),
            "--data",
            str(pairs_file),
            "--eval-data",
            str(pairs_file),
            "--eval-split",
            "train",
            "--max-length",
            "64",
            "--max-steps",
            "2",
            "--no-progress",
        ],
        "constraints": ["--data", str(pairs_file), "--model", str(tiny_rm_dir)],
        "evaluate": ["--data", str(pairs_file), "--split", "train", "--bootstrap", "0"],
        "report": [],
        "train-dpo": ["--data", str(pairs_file), "--max-length", "64", "--method", "dpo"],
        "evaluate-policy": ["--reference", str(models / "policy"), "--data", str(pairs_file)],
        "align": [
            "--policy",
            str(models / "policy"),
            "--data",
            str(pairs_file),
            "--max-new-tokens",
            "4",
            "--max-prompt-length",
            "32",
            "--max-length",
            "64",
        ],
    }[command]
    argv = [command, *base, *(["--output", str(output)] if "--output" not in extra else []), *extra]
    before = sorted(os.listdir(tmp_path))
    one_line_error(capsys, argv, message)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a lock file or an empty folder


def test_debug_env_shows_the_traceback_and_bugs_are_not_hidden(tiny_rm_dir, pairs_file, tmp_path, capsys, monkeypatch):
    argv = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(tmp_path / "missing.jsonl"),
        "--output",
        str(tmp_path / "o"),
    ]
    monkeypatch.setenv("PCRM_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("pcrm train-rm: error:")
    monkeypatch.delenv("PCRM_DEBUG")
    import pcrm.commands.report as report

    monkeypatch.setattr(report, "run", lambda config: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a genuine bug keeps its traceback
        main(["report", "--input", str(tmp_path)])


def test_library_option_errors_and_os_errors_are_one_line():
    from transformers import TrainingArguments

    from pcrm.cli import user_error

    with pytest.raises(ValueError) as caught:
        TrainingArguments(output_dir="x", warmup_steps=-1)
    assert user_error(caught.value).startswith("invalid option value:")
    assert "no space left" in user_error(OSError(errno.ENOSPC, "No space left on device", "/data/x"))
    assert user_error(PermissionError(errno.EACCES, "Permission denied", "/root/f")) == "/root/f: Permission denied"
    assert user_error(ValueError("a bug in pcrm")) is None


def test_unwritable_output_parent_is_refused_before_writing(tiny_rm_dir, pairs_file, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, *a, **k: False if Path(p) == parent else real_access(p, mode, *a, **k)
    )
    argv = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--output",
        str(parent / "out"),
        "--no-progress",
    ]
    one_line_error(capsys, argv, "is not writable")
    assert os.listdir(parent) == []


# -- 2. the output folder: --overwrite swaps only on success, lock, marker ---------------------------------


@pytest.fixture(scope="module")
def good_output(tmp_path_factory, tiny_rm_dir):
    """A finished train-rm output (max_steps 6, save_steps 2), its file hashes and its data file."""
    from tests.conftest import PAIRS, write_jsonl

    root = tmp_path_factory.mktemp("good")
    pairs = write_jsonl(root / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PCRM_CACHE", str(root / "cache"))
        train(rm_config(tiny_rm_dir, pairs, root / "rm"))
    return root / "rm", pairs, tree_hashes(root / "rm")


def _copy_good(good_output, tmp_path) -> Path:
    import shutil

    output = tmp_path / "rm"
    shutil.copytree(good_output[0], output)
    return output


FAILURES = {
    "enospc-final-save": (
        "save_pretrained",
        OSError(errno.ENOSPC, "No space left on device", "model.safetensors"),
        "no space left",
    ),
    "enospc-checkpoint": (
        "_save_optimizer_and_scheduler",
        OSError(errno.ENOSPC, "No space left on device", "optimizer.pt"),
        "no space left",
    ),
    "permission": (
        "save_pretrained",
        PermissionError(errno.EACCES, "Permission denied", "model.safetensors"),
        "Permission denied",
    ),
    "non-finite-loss": (None, None, "non-finite loss"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_overwrite_never_costs_the_previous_output(
    good_output, tiny_rm_dir, tmp_path, capsys, monkeypatch, failure
):
    from transformers import PreTrainedModel

    from pcrm.trainers.reward import PCRMRewardTrainer

    _, pairs, hashes = good_output
    output = _copy_good(good_output, tmp_path)
    method, error, message = FAILURES[failure]
    extra = ["--learning-rate", "1e30"] if method is None else []
    if method == "save_pretrained":
        real = PreTrainedModel.save_pretrained

        def failing(self, path, *args, **kwargs):
            if Path(path).name != "rm" and "checkpoint-" not in str(path):  # the final save only
                raise error
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(PreTrainedModel, "save_pretrained", failing)
    elif method:
        monkeypatch.setattr(PCRMRewardTrainer, method, lambda self, *a, **k: (_ for _ in ()).throw(error))
    argv = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs),
        "--eval-data",
        str(pairs),
        "--eval-split",
        "train",
        "--output",
        str(output),
        "--method",
        "bt",
        "--max-length",
        "64",
        "--batch-size",
        "2",
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--no-progress",
        "--overwrite",
        *extra,
    ]
    one_line_error(capsys, argv, message)
    assert tree_hashes(output) == hashes  # every file of the previous output, byte for byte
    new = tmp_path / ".rm.pcrm-new"
    assert not new.exists() or (new / MARKER).exists()  # what is kept for --resume is marked


@contextlib.contextmanager
def held_by_another_process(output, command: str):
    """Another process holding `output` as `command`'s folder (its lock and marker) while the block runs."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom pcrm.outputs import OutputFolder\n"
            f"held = OutputFolder({str(output)!r}, {command!r}).open(); print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_run_into_the_same_output_is_refused_naming_the_holder(good_output, tiny_rm_dir, tmp_path, capsys):
    _, pairs, _ = good_output
    output = tmp_path / "busy"
    with held_by_another_process(output, "train-rm") as holder:
        argv = ["train-rm", "--model", str(tiny_rm_dir), "--data", str(pairs), "--output", str(output), "--no-progress"]
        line = one_line_error(capsys, argv, "in use by another pcrm run")
        assert f"pid {holder.pid}" in line
        assert sorted(os.listdir(output)) == [MARKER]  # the holder's folder, untouched
    folder = OutputFolder(output, "train-rm", overwrite=True)  # the lock dies with its holder
    assert folder.plan() == tmp_path / ".busy.pcrm-new"


# -- 3. interruptions: Ctrl-C / SIGTERM in process, kill -9 in a subprocess; resume matches --------------


class Interrupt(TrainerCallback):
    def __init__(self, sig, step):
        self.sig, self.step = sig, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_leave_a_folder_resume_and_overwrite_accept(good_output, tiny_rm_dir, tmp_path, capsys, sig):
    # Python's own Ctrl-C handler: a process started in the background (CI runners, nohup, `cmd &`) ignores SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_then_resume(good_output, tiny_rm_dir, tmp_path, capsys, sig)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_then_resume(good_output, tiny_rm_dir, tmp_path, capsys, sig):
    reference, pairs, _ = good_output
    output = tmp_path / "run"
    config = rm_config(tiny_rm_dir, pairs, output)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(sig, 3)])
    assert (output / MARKER).exists() and not (output / "pcrm_config.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert OutputFolder(output, "train-rm", overwrite=True).plan() == tmp_path / ".run.pcrm-new"
    config.resume = True
    capsys.readouterr()
    result = train(config)
    assert f"resuming from {output / 'checkpoints' / 'checkpoint-2'}" in capsys.readouterr().out
    assert result["steps"] == 6 and not (output / MARKER).exists()
    for name, value in weights(reference).items():
        torch.testing.assert_close(weights(output)[name], value, rtol=1e-4, atol=1e-5)


KILL_SCRIPT = """
import os, signal
from transformers import PreTrainedModel
from pcrm.commands.train_rm import Config, train
from pcrm.constraints import PriorOptions
from pcrm.trainers.reward import PCRMRewardTrainer

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if {where!r} == "mid-checkpoint":  # checkpoint-4 has its weights, but neither optimizer nor trainer_state.json
    real = PCRMRewardTrainer._save_optimizer_and_scheduler
    PCRMRewardTrainer._save_optimizer_and_scheduler = (
        lambda self, d: die() if self.state.global_step == 4 else real(self, d))
else:  # half of the final model file written (checkpoints are saved as usual)
    real = PreTrainedModel.save_pretrained
    def half(self, path, *a, **k):
        if "checkpoint-" in str(path):
            return real(self, path, *a, **k)
        open(os.path.join(path, "model.safetensors"), "wb").write(b"\\0" * 100)
        die()
    PreTrainedModel.save_pretrained = half
train(Config(**{config!r}))
"""


@pytest.mark.parametrize("where,resumed_from", [("mid-checkpoint", "checkpoint-2"), ("mid-final-save", "checkpoint-6")])
def test_kill_9_mid_save_then_resume_matches_an_uninterrupted_run(
    good_output, tiny_rm_dir, tmp_path, capsys, where, resumed_from
):
    reference, pairs, _ = good_output
    output = tmp_path / "killed"
    config = rm_config(tiny_rm_dir, pairs, output)
    script = KILL_SCRIPT.format(where=where, config=dict(vars(config)))
    proc = subprocess.run(
        [sys.executable, "-c", "from pcrm.constraints import PriorOptions\n" + script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert_whole_or_marked(output)
    assert (output / MARKER).exists()
    one_line_error(
        capsys, ["train-rm", "--model", str(tiny_rm_dir), "--data", str(pairs), "--output", str(output)], "--overwrite"
    )
    config.resume = True
    result = train(config)
    out = capsys.readouterr().out
    assert f"resuming from {output / 'checkpoints' / resumed_from}" in out
    if where == "mid-checkpoint":
        assert "skipping incomplete checkpoint" in out and "checkpoint-4" in out
    assert result["steps"] == 6 and not (output / MARKER).exists()
    for name, value in weights(reference).items():
        torch.testing.assert_close(weights(output)[name], value, rtol=1e-4, atol=1e-5)


def test_checkpoint_completeness(tmp_path):
    from pcrm.outputs import last_complete_checkpoint

    for step, files in (
        (2, ("trainer_state.json", "model.safetensors", "optimizer.pt")),
        (4, ("model.safetensors", "optimizer.pt")),
        (6, ("trainer_state.json", "optimizer.pt")),
    ):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"trunc')
    found, skipped = last_complete_checkpoint(tmp_path)
    assert found.name == "checkpoint-2" and [p.name for p in skipped] == [
        "checkpoint-8",
        "checkpoint-6",
        "checkpoint-4",
    ]


# -- 4. caches: keyed on content, verified on read, optional ----------------------------------------------


def test_corrupt_and_unusable_caches_are_recomputed_with_a_warning(good_output, tmp_path, capsys, monkeypatch):
    reference, pairs, _ = good_output
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    argv = [
        "evaluate",
        "--model",
        str(reference),
        "--data",
        str(pairs),
        "--split",
        "train",
        "--bootstrap",
        "0",
        "--priors",
        "length",
        "--output",
        str(tmp_path / "eval"),
        "--overwrite",
    ]
    assert main(argv) == 0
    first = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (cached,) = (tmp_path / "cache" / "scores").glob("*.npz")
    for corrupt in (b"garbage", None):
        if corrupt is None:
            np.savez(cached, score=np.zeros(3))  # wrong shape
        else:
            cached.write_bytes(corrupt)
        capsys.readouterr()
        assert main(argv) == 0
        assert "ignoring the corrupt cache file" in capsys.readouterr().err
        assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["results"] == first["results"]
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "not-a-dir" / "cache"))
    assert main(argv) == 0
    assert "running without a cache" in capsys.readouterr().err


def test_corrupt_embedding_and_sample_caches(pairs_file, tmp_path, capsys, monkeypatch):
    from pcrm.alignment.bon import _read_passes

    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    argv = [
        "constraints",
        "--method",
        "cosine",
        "--data",
        str(pairs_file),
        "--output",
        str(tmp_path / "c"),
        "--overwrite",
    ]
    assert main(argv) == 0
    (cached,) = (tmp_path / "cache" / "embeddings").glob("*.npz")
    np.savez(cached, chosen=np.zeros((2, 3)), rejected=np.zeros((2, 3)))  # wrong number of rows
    capsys.readouterr()
    assert main(argv) == 0
    assert "ignoring the corrupt cache file" in capsys.readouterr().err
    bon = tmp_path / "bon.json"
    for text in ("{not json", json.dumps([{"responses": ["a"], "lengths": [1]}])):  # corrupt; wrong number of prompts
        bon.write_text(text)
        assert _read_passes(bon, 2) == []
    bon.write_text(json.dumps([{"responses": ["a", "b"], "lengths": [1, 1]}]))
    assert len(_read_passes(bon, 2)) == 1


def test_model_fingerprint_is_content_not_mtime(tiny_rm_dir, tmp_path):
    import shutil

    from pcrm.models import model_fingerprint

    copy = tmp_path / "m"
    shutil.copytree(tiny_rm_dir, copy)
    key = model_fingerprint(str(copy))
    os.utime(copy / "model.safetensors", (1, 1))
    assert model_fingerprint(str(copy)) == key  # touched: same content, same key
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(str(copy)) != key  # same size, other weights


# -- 5. reproducibility --------------------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_weights(good_output, models, tmp_path):
    """From a backbone without a score head (initialised at random), twice with the same seed: the same bits."""
    from transformers import BertConfig, BertModel, ByT5Tokenizer

    _, pairs, _ = good_output
    base = tmp_path / "base"
    BertModel(
        BertConfig(vocab_size=384, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(base)
    ByT5Tokenizer().save_pretrained(base)
    for name in ("a", "b"):
        train(rm_config(base, pairs, tmp_path / name, max_steps=2, save_steps=50))
    expected, actual = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert set(expected) == set(actual) and all(torch.equal(actual[name], expected[name]) for name in expected)
