"""The library's front door: `from pcrm import …`, a TRL reward-model script turned PCRM, the two-sided loss."""

import json
import math
import runpy
from pathlib import Path

import pytest
import torch

from tests.rm_fixtures import slow

REPO = Path(__file__).resolve().parents[1]


def test_names_import():
    from pcrm import PCRMRewardConfig, PCRMRewardTrainer, add_constraints, load_preferences, load_reward_function  # noqa: F401
    import pcrm

    assert set(pcrm.__all__) <= set(dir(pcrm))
    for name in pcrm.__all__:
        assert getattr(pcrm, name) is not None


def test_trl_script_trains_and_saves_a_pcrm_folder(tiny_rm_dir, pairs_file, tmp_path):
    """examples/trl_script.py: TRL's own script with pcrm's config, trainer and constraints."""
    from transformers import AutoConfig, AutoTokenizer

    out = tmp_path / "trl"
    script = runpy.run_path(str(REPO / "examples" / "trl_script.py"))
    trainer = script["main"](
        [
            "--model_name_or_path",
            str(tiny_rm_dir),
            "--dataset_name",
            str(pairs_file),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
        ]
    )
    assert trainer.state.global_step == 2
    logs = [entry for entry in trainer.state.log_history if "loss_constraint" in entry]
    assert logs and all(math.isfinite(entry["loss_constraint"]) for entry in logs)  # the prior term was trained
    assert AutoConfig.from_pretrained(out).problem_type == "regression"
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.truncation_side, tokenizer.model_max_length, tokenizer.split_special_tokens) == (
        "left",
        128,
        True,
    )


def test_prior_method_needs_delta(tiny_rm_dir, pairs_file, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pcrm import PCRMRewardConfig, PCRMRewardTrainer
    from pcrm.errors import PcrmError

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir, num_labels=1)
    args = PCRMRewardConfig(
        output_dir=str(tmp_path),
        method="length",
        max_steps=1,
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=4,
    )
    trainer = PCRMRewardTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=load_dataset("json", data_files=str(pairs_file), split="train"),
    )
    with pytest.raises(PcrmError, match="δ"):  # no add_constraints: refuse, do not train plain BT
        trainer.train()
    with pytest.raises(PcrmError, match="method"):
        PCRMRewardConfig(output_dir=str(tmp_path), method="nope")


def test_two_sided_loss_matches_the_hand_formula(tiny_rm_dir, tmp_path):
    """A lower margin (fixed or TRL's per-pair `margin` column) with a prior: −log σ(m − m₀) − log σ(δ* − m)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pcrm import PCRMRewardConfig, PCRMRewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir, num_labels=1)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)  # margins of order 1: every term matters
    rows = {
        "prompt": ["Q1 ", "Q2 ", "Q3 "],
        "chosen": ["yes indeed", "fine", "ok then"],
        "rejected": ["no", "bad one", "x"],
        "delta": [0.3, 0.8, 1.5],
        "margin": [0.1, -0.2, 0.5],
    }
    args = PCRMRewardConfig(
        output_dir=str(tmp_path),
        method="length",
        lower_margin=0.25,
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=3,
    )
    for with_column in (False, True):
        data = Dataset.from_dict(rows if with_column else {k: v for k, v in rows.items() if k != "margin"})
        trainer = PCRMRewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=data)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        deltas = batch["delta"].tolist()  # in the batch's order (the sampler may reorder the rows)
        lower = batch["margin"].tolist() if with_column else [0.25] * 3
        loss = trainer.compute_loss(model, dict(batch)).item()
        with torch.no_grad():
            rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].tolist()
        margins = [rewards[i] - rewards[i + 3] for i in range(3)]
        log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
        expected = sum(-log_sigmoid(m - m0) - log_sigmoid(d - m) for m, m0, d in zip(margins, lower, deltas)) / 3
        assert loss == pytest.approx(expected, abs=1e-6)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", section.index("```python"))]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 8
    scores = namespace["reward"](["Q"], [" A"])
    assert len(scores) == 1 and math.isfinite(scores[0])
    record = json.loads((tmp_path / "runs" / "api-rm" / "config.json").read_text())
    assert record["problem_type"] == "regression"


def test_train_reward_model_twice_leaves_the_process_as_it_was(tiny_rm_dir, pairs_file, tmp_path):
    """No process-wide side effects: a process group the caller set up stays up (and is the same group), and the
    SIGTERM/SIGINT handlers are the caller's after each call."""
    import signal

    import torch.distributed as dist

    from pcrm import RewardModelConfig, train_reward_model

    def handler(signum, frame):  # the caller's own
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        for run in range(2):
            config = RewardModelConfig(
                method="length",
                model=str(tiny_rm_dir),
                data=str(pairs_file),
                eval_data=str(pairs_file),
                eval_split="train",
                output=str(tmp_path / f"rm{run}"),
                max_steps=1,
                batch_size=4,
                max_length=64,
                progress=False,
            )
            config.prior.unit = "chars"
            result = train_reward_model(config)
            assert result["steps"] == 1 and (tmp_path / f"rm{run}" / "pcrm_config.json").is_file()
            assert dist.is_initialized() and dist.group.WORLD is group and dist.get_world_size() == 1
            assert signal.getsignal(signal.SIGTERM) is handler
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        dist.destroy_process_group()
        signal.signal(signal.SIGTERM, previous)


def _readme_python_blocks() -> list[str]:
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## From Python", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python")[1:]]


@slow("trains the bundled MiniLM for 4 steps and evaluates it on the 498 bundled test pairs (about a minute)")
def test_readme_pipeline_example_runs(tmp_path, monkeypatch):
    """The README's second example: the train-rm and evaluate pipelines as library calls, with their outputs."""
    code = _readme_python_blocks()[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    record = namespace["record"]
    assert record["method"] == "length" and record["steps"] == 4 and 0 <= record["heldout"]["accuracy"] <= 1
    metrics = json.loads((tmp_path / "runs" / "api-evaluate" / "metrics.json").read_text())
    assert metrics == namespace["summary"] or metrics["models"] == namespace["summary"]["models"]


def test_plots_leave_the_process_matplotlib_alone(tmp_path):
    """pcrm draws without pyplot: importing and plotting changes neither the backend nor the global rcParams (a
    notebook's own plots stay as they are); the PNG is still written."""
    import subprocess
    import sys

    code = """
import matplotlib
matplotlib.use("svg")  # a user's backend
before = (matplotlib.get_backend(), dict(matplotlib.rcParams))
from pcrm.plots import new_figure, save_figure
fig, axes = new_figure(2)
axes[0].plot([0, 1e-4], [0, 2e-4])
save_figure(fig, sys.argv[1])
assert (matplotlib.get_backend(), dict(matplotlib.rcParams)) == before
assert list(axes[0].xaxis.get_major_formatter()._powerlimits) == [-3, 4]  # pcrm's style, on its own axes only
"""
    png = tmp_path / "figure.png"
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(png)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
