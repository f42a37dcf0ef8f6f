"""The shipped accelerate configs on the CPU do what the README says.

- `pcrm/configs/zero2.yaml` / `zero3.yaml`: DeepSpeed ZeRO-2 / ZeRO-3 with two CPU processes (gloo) train the same
  weights as one process with the same global batch (fp32: `--mixed_precision no`). Needs the `deepspeed` extra.
- `pcrm/configs/fsdp.yaml`: accelerate turns FSDP on only for GPU runs, so on the CPU `pcrm train-rm` refuses with
  one line (exit 2) instead of silently training with DDP.
"""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rm_fixtures import free_port
import torch
from safetensors.torch import load_file

from pcrm.commands.train_rm import Config, train
from pcrm.errors import PcrmError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "pcrm" / "configs"
SLOW = bool(os.environ.get("CI") or os.environ.get("PCRM_SLOW"))

cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU behaviour of the configs (on GPUs they shard for real)"
)
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed: .venv/bin/pip install -c constraints.txt -e '.[deepspeed]' "
    "(scripts/setup.sh does)",
)
slow = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SLOW, reason="two DeepSpeed processes and a reference run, 25-60 s each on 2 CPU cores: CI or PCRM_SLOW=1"
    ),
]


def _launch(args: list[str], timeout: int = 420) -> subprocess.CompletedProcess:
    """`accelerate launch ARGS` in its own session: on a timeout (a collective waiting for a rank that never comes)
    the launcher and its workers are all killed, and the test fails instead of hanging."""
    # DS_ACCELERATOR: DeepSpeed would pick the CPU by itself here; explicit so that a stray GPU build cannot change it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()), *args]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"accelerate launch {' '.join(args[:4])} did not finish in {timeout} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, output, "")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from tests.conftest import PAIRS
    from tests.rm_fixtures import write_jsonl

    return write_jsonl(
        tmp_path_factory.mktemp("pairs") / "pairs.jsonl",
        [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS],
    )


@pytest.fixture(scope="module")
def one_process(tiny_rm_dir, pairs, tmp_path_factory) -> dict:
    """The reference: the same command in one plain process with 4 pairs a step."""
    output = tmp_path_factory.mktemp("one") / "rm"
    run = subprocess.run(
        [sys.executable, "-m", "pcrm.cli", *_train_rm(tiny_rm_dir, pairs, output), "--batch-size", "4"],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(output / "model.safetensors")


def _train_rm(model: Path, pairs: Path, output: Path) -> list[str]:
    # three steps of a global batch of 4 pairs: 2 processes x 2 pairs, or 1 process x 4 pairs
    return [
        "train-rm",
        "--model",
        str(model),
        "--data",
        str(pairs),
        "--eval-data",
        str(pairs),
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
        "--output",
        str(output),
    ]


def _compare(actual: dict, expected: dict, initial: dict) -> None:
    """All weights as one process trained them, up to float noise magnified by Adam.

    Measured (3 steps, lr 1e-3, the largest update of a weight 2.0e-3): max |difference| 4.8e-5 for plain DDP and
    ZeRO-2, 7.0e-5 for ZeRO-3, both at one element of the position embeddings whose gradient nearly cancels (Adam
    divides it by its own size, so the order of the float reductions shows); in norm over the model the difference is
    3.5e-4 (DDP, ZeRO-2) and 4.5e-4 (ZeRO-3) of the update. Allowed: 10% of the largest update per weight, 0.5% in
    norm. Ranks that do not average their gradients, a wrong global batch or unsaved training move weights by about
    the update itself. `classifier.bias` is left out: it cancels in r_w − r_l, so its gradient is pure float noise
    that Adam scales to lr-sized steps (as in the DDP test)."""
    assert actual.keys() == expected.keys()
    names = [name for name in expected if name != "classifier.bias"]
    largest = max((expected[n] - initial[n]).abs().max().item() for n in names)
    assert largest > 0
    for name in names:
        assert actual[name].dtype == torch.float32, name
        torch.testing.assert_close(
            actual[name], expected[name], rtol=0, atol=0.1 * largest, msg=lambda m: f"{name}: {m}"
        )
    difference = torch.cat([(actual[n] - expected[n]).flatten() for n in names]).norm()
    update = torch.cat([(expected[n] - initial[n]).flatten() for n in names]).norm()
    assert difference / update < 5e-3, f"difference / update = {difference / update:.3g}"


@cpu_only
@needs_deepspeed
@pytest.mark.parametrize("engine", [pytest.param("zero2", marks=slow), pytest.param("zero3", marks=slow)])
def test_deepspeed_on_two_cpu_processes_matches_one_process(engine, tiny_rm_dir, pairs, one_process, tmp_path):
    """The shipped config as is, but 2 processes and fp32; the held-out evaluation runs too (on rank 0 alone: under
    ZeRO-3 it once waited forever on a collective from the encoder's from_pretrained)."""
    output = tmp_path / engine
    run = _launch(
        [
            "--config_file",
            str(CONFIGS / f"{engine}.yaml"),
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
            "-m",
            "pcrm.cli",
            *_train_rm(tiny_rm_dir, pairs, output),
            "--batch-size",
            "2",
        ]
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "held-out (8 pairs)" in run.stdout
    _compare(load_file(output / "model.safetensors"), one_process, load_file(tiny_rm_dir / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.skipif(
    not SLOW,
    reason="a real accelerate launch, about 10 s (the in-process refusal test runs by default): CI or PCRM_SLOW=1",
)
@cpu_only
def test_fsdp_config_refuses_on_cpu_with_one_line(tiny_rm_dir, pairs, tmp_path):
    output = tmp_path / "fsdp"
    run = _launch(
        [
            "--config_file",
            str(CONFIGS / "fsdp.yaml"),
            "--num_processes",
            "1",
            "-m",
            "pcrm.cli",
            "train-rm",
            "--model",
            str(tiny_rm_dir),
            "--data",
            str(pairs),
            "--max-steps",
            "1",
            "--output",
            str(output),
        ],
        timeout=300,
    )
    assert run.returncode != 0  # torchrun reports the failed worker (exit 1) after pcrm's line
    errors = [line for line in run.stdout.splitlines() if line.startswith("pcrm train-rm: error:")]
    assert len(errors) == 1 and "FSDP needs CUDA GPUs" in errors[0] and "zero2.yaml" in errors[0], run.stdout[-3000:]
    assert "Traceback" not in run.stdout.split(errors[0])[0]  # none from pcrm (the launcher's own follows the line)
    assert "exitcode  : 2" in run.stdout  # pcrm's user-error status
    assert not output.exists()


@cpu_only
def test_fsdp_request_on_cpu_refused_before_anything_is_written(tiny_rm_dir, pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    output = tmp_path / "fsdp"
    with pytest.raises(PcrmError, match="FSDP needs CUDA GPUs"):
        train(
            Config(
                model=str(tiny_rm_dir), data=str(pairs), output=str(output), method="bt", max_steps=1, progress=False
            )
        )
    assert not output.exists()
