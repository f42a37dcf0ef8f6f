"""`pcrm train-dpo` and `pcrm evaluate-policy` end to end on a tiny random Llama with a byte tokenizer."""

import json

import pytest
import torch

from pcrm.cli import main

PAIRS = [
    ("Q: capital of France?\nA:", " Paris.", " I think it is probably Lyon, or maybe Marseille."),
    ("Q: 2+2?\nA:", " 4", " 5, or six."),
    ("Q: say hi\nA:", " Hello there, nice to meet you!", " no"),
    ("Q: colour of the sky?\nA:", " Blue on a clear day.", " Green."),
    ("Q: opposite of hot?\nA:", " Cold.", " Warm, sort of, depending on context."),
    ("Q: largest planet?\nA:", " Jupiter is the largest planet.", " Mars."),
    ("Q: a fruit?\nA:", " An apple.", " A chair."),
    ("Q: freezing point of water?\nA:", " 0 °C at sea level.", " Hot."),
]
FAST = ["--max-length", "64", "--batch-size", "4", "--gradient-accumulation", "1", "--learning-rate", "1e-3"]


def _tiny_models(root):
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = ByT5Tokenizer()
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    for name, model in (
        ("policy", LlamaForCausalLM(LlamaConfig(**config))),
        ("judge", LlamaForSequenceClassification(LlamaConfig(**config, num_labels=1))),
    ):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny policy and judge, the pairs, and two trained policies (plain DPO and PCRM-DPO with fixed δ*)."""
    root = tmp_path_factory.mktemp("dpo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PCRM_CACHE", str(root / "cache"))
        _tiny_models(root)
        for method in ("dpo", "fixed"):
            assert main(["train-dpo", *_base(root), "--method", method, "--output", str(root / method)]) == 0
    return root


def _base(root):
    return ["--policy", str(root / "policy"), "--data", str(root / "pairs.jsonl"), *FAST]


def _error(capsys, argv) -> str:
    """The one-line error of a failing command (progress bars may precede it, a traceback may not)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "length", "--unit", "chars"],
        ["--method", "cosine", "--encoder", "minilm"],
        ["--method", "random"],
        ["--method", "length", "--unit", "words", "--loss", "ipo", "--label-smoothing", "0.1"],
        ["--method", "fixed", "--loss", "hinge"],
    ],
    ids=["length", "cosine", "random", "ipo", "hinge"],
)
def test_train_dpo_methods_and_losses(tiny, tmp_path, monkeypatch, extra):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    assert main(["train-dpo", *_base(tiny), *extra, "--output", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "pcrm_config.json").read_text())
    assert saved["method"] == extra[1] and saved["prior"]["beta2"] == 0.001
    assert saved["data"]["pairs"] == len(PAIRS) and len(saved["data"]["fingerprint"]) == 16
    assert set(saved["versions"]) >= {"pcrm", "torch", "transformers", "trl"}
    assert {"loss/constraint", "rewards/above_delta", "delta/mean"} <= set(saved["metrics"]["last_step"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.hidden_size == 32


def test_plain_dpo_and_pcrm_outputs(tiny):
    from transformers import AutoModelForCausalLM

    plain = json.loads((tiny / "dpo" / "pcrm_config.json").read_text())
    assert plain["prior"] is None and "constraints" not in plain["data"]
    steps = [e for e in json.loads((tiny / "dpo" / "log_history.json").read_text()) if "loss/base" in e]
    assert len(steps) == 2 and all(e["loss/constraint"] == 0 for e in steps)
    assert {
        "rewards/accuracies",
        "rewards/margins",
        "rewards/margins_std",
        "logps/chosen_drift",
        "logps/rejected_drift",
    } <= set(steps[0])
    fixed = json.loads((tiny / "fixed" / "pcrm_config.json").read_text())
    assert fixed["data"]["constraints"]["delta"]["mean"] == pytest.approx(2.5)
    AutoModelForCausalLM.from_pretrained(tiny / "fixed")


def test_delta_reaches_the_loss_but_not_the_model(tiny, monkeypatch):
    """The loss's value is checked against the hand formula in test_trainer_losses.py."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig

    from pcrm.trainers.dpo import PcrmDPOTrainer
    from pcrm.models import load_causal_lm

    monkeypatch.setenv("PCRM_CACHE", str(tiny / "cache"))
    rows = [{"prompt": p, "chosen": c, "rejected": r, "delta": 0.5 + i} for i, (p, c, r) in enumerate(PAIRS)]
    args = DPOConfig(
        output_dir=str(tiny / "unused"),
        beta=0.2,
        max_length=64,
        per_device_train_batch_size=4,
        precompute_ref_log_probs=True,
        bf16=False,
        report_to="none",
    )
    model = load_causal_lm(tiny / "policy")
    trainer = PcrmDPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny / "policy"),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["delta"].shape == (4,)
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(set(kwargs)), with_kwargs=True)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        without_delta = trainer.compute_loss(model, {k: v for k, v in batch.items() if k != "delta"})
    assert seen and all("delta" not in keys for keys in seen)
    assert loss.item() > without_delta.item()  # the constraint term −log σ(δ − m) > 0 was added


def test_lora_resume_and_overwrite(tiny, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["train-dpo", *_base(tiny), "--method", "fixed", "--lora", "--save-steps", "1", "--output", str(out)]
    assert main(argv) == 0
    assert not (out / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out)
    assert "exists and is not empty" in _error(capsys, argv)
    assert main([*argv, "--resume", "--epochs", "2"]) == 0
    assert json.loads((out / "pcrm_config.json").read_text())["metrics"]["last_step"]["step"] == 4
    assert main([*argv, "--overwrite"]) == 0
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]


def test_nan_loss_is_a_clear_error(tiny, tmp_path, monkeypatch, capsys):
    from pcrm.trainers import dpo

    monkeypatch.setattr(dpo, "dpo_margin", lambda chosen, *rest: chosen * float("nan"))
    err = _error(capsys, ["train-dpo", *_base(tiny), "--method", "dpo", "--output", str(tmp_path / "out")])
    assert "loss is nan at step 0" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "bt"], "--method must be one of dpo, length"),
        (["--loss", "kto"], "--loss must be one of sigmoid, ipo, hinge"),
        (["--beta", "0"], "--beta must be a finite number > 0"),
        (["--beta1", "nan"], "--beta1 must be a finite number"),
        (["--beta2", "-1"], "--beta2 must be > 0"),
        (["--max-prompt-length", "64"], "--max-prompt-length must be in"),
        (["--resume"], "no checkpoint to resume from"),
        (["--data", "missing.jsonl"], "missing.jsonl: no such file"),
        (["--policy", "/nonexistent/policy"], "no such model directory"),
    ],
)
def test_train_dpo_bad_input(tiny, tmp_path, capsys, extra, message):
    err = _error(capsys, ["train-dpo", *_base(tiny), *extra, "--output", str(tmp_path / "out")])
    assert err.startswith("pcrm train-dpo: error:") and message in err


def test_train_dpo_missing_column(tiny, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    err = _error(
        capsys, ["train-dpo", *_base(tiny), "--data", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "out")]
    )
    assert "missing columns" in err


def test_evaluate_policy(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    argv = [
        "evaluate-policy",
        "--policy",
        str(tiny / "fixed"),
        "--baseline",
        str(tiny / "dpo"),
        "--reference",
        str(tiny / "policy"),
        "--judge",
        str(tiny / "judge"),
        "--data",
        str(tiny / "pairs.jsonl"),
        "--split",
        "train",
        "--pairs",
        "6",
        "--prompts",
        "3",
        "--max-length",
        "64",
        "--max-new-tokens",
        "4",
        "--temperature",
        "1",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["pairs"], metrics["prompts"]) == (6, 3)
    start, baseline, policy = metrics["policies"]
    assert "implicit" not in start and policy["implicit"]["accuracy"] * 6 == pytest.approx(
        round(policy["implicit"]["accuracy"] * 6)
    )  # 6 pairs
    assert policy["method"] == "fixed" and policy["implicit"]["beta"] == 0.1
    for rate in (baseline["win_rate_vs_reference"], policy["win_rate_vs_reference"], policy["win_rate_vs_baseline"]):
        assert rate["ci_low"] <= rate["rate"] <= rate["ci_high"] and rate["rate"] * 6 == pytest.approx(
            round(rate["rate"] * 6)
        )  # 3 prompts, ties ½
    assert len((out / "responses.jsonl").read_text().splitlines()) == 9
    assert (out / "table.md").read_text().count("\n") == 5


def test_win_rate_counts_ties_as_half():
    from pcrm.evaluation.metrics import win_rate

    assert win_rate([2, 2, 2, 2], [1, 1, 1, 1], 100, 0) == {"rate": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert win_rate([1, 2, 0, 5], [1, 1, 1, 5], 100, 0)["rate"] == 0.5


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--policy is required"),
        (["--policy", "/nonexistent/policy"], "no such model directory"),
        (["--policy", "x", "--temperature", "-1"], "--temperature must be >= 0"),
    ],
)
def test_evaluate_policy_bad_input(capsys, extra, message):
    err = _error(capsys, ["evaluate-policy", *extra])
    assert err.startswith("pcrm evaluate-policy: error:") and message in err
