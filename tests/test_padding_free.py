"""Padding-free (packed) reward models (`pcrm.packing`, `pcrm train-rm --padding-free`): the packed forward equals the
padded one for a tiny Llama and a tiny BERT reward model (rewards, loss, every logged metric and gradients of a training
step, to 1e-5 in fp32), with LoRA and gradient checkpointing, and under DDP with two processes; a model whose packed
forward would leak between sequences is caught by the probe and stays padded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pcrm.packing import pack, packed_rewards, packed_scores, packing_exact, padded_rewards, read_position
from tests.rm_fixtures import slow, free_port

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


def _tiny(kind: str, vocab_size: int = 384, attn: str = "sdpa"):
    """A randomly initialised 2-layer RM, no dropout; weights drawn wide (std 0.2) so that rewards are O(1) and a
    leak between packed sequences moves them far beyond the tolerance (checked in the first test)."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    torch.manual_seed(0)
    common = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_labels": 1,
        "pad_token_id": 0,
        "initializer_range": 0.2,
        "attn_implementation": attn,
    }
    if kind == "bert":
        config = BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
        return BertForSequenceClassification(config)
    return LlamaForSequenceClassification(LlamaConfig(num_key_value_heads=2, **common))


def _sequences(seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(1, 384, (n,), generator=generator).tolist() for n in (7, 40, 3, 25, 1, 9, 33, 4, 18, 12)]
    sequences[2][-1] = 0  # ends in the pad id: a padded decoder reads the token before it, so must the packed one
    return sequences


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory) -> dict:
    """Saved tiny Llama and BERT reward models with the byte-level ByT5 tokenizer (pad 0, eos 1)."""
    from transformers import ByT5Tokenizer

    from pcrm.models import save_reward_model

    dirs = {}
    for kind in ("llama", "bert"):
        dirs[kind] = tmp_path_factory.mktemp(f"tiny-{kind}")
        save_reward_model(_tiny(kind), ByT5Tokenizer(), dirs[kind], max_length=128)
    return dirs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_packed_rewards_equal_the_padded_forward(kind, attn):
    model = _tiny(kind, attn=attn).eval()
    sequences = _sequences()
    with torch.no_grad():
        padded = padded_rewards(model, sequences, 0)
        assert padded.abs().max() > 0.3  # rewards of a useful scale
        # rows of the longest sequence (40, the default), of at most 64 or 200 tokens, and chosen by the cost estimate
        # (attention dear: rows of the longest; attention free: the fewest tokens, all 152 in one row)
        widths = {
            (): 40,
            ("row_tokens", 64): 64,
            ("row_tokens", 200): 152,
            ("attention_tokens", 1): 40,
            ("attention_tokens", 10**9): 152,
        }
        for option, width in widths.items():
            batch = pack(sequences, 0, read_position(model), **dict([option] if option else []))
            assert batch["input_ids"].shape[1] in (width, width - 1) and len(batch["input_ids"]) < len(sequences)
            torch.testing.assert_close(packed_rewards(model, batch), padded, rtol=0, atol=TOL)
        # the tolerance is meaningful: the same rows without the segment boundaries (one sequence per row) differ
        leaky = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])}
        assert (packed_rewards(model, leaky) - padded).abs().max() > 100 * TOL
    assert packing_exact(model, 0)


def _trainer(rm_dir, pairs_file, output, padding_free: bool, **overrides):
    from pcrm.commands.train_rm import Config
    from pcrm.constraints import PriorOptions
    from pcrm.trainers.reward import build_trainer

    options = {
        "model": str(rm_dir),
        "data": str(pairs_file),
        "output": str(output),
        "method": "length",
        "max_length": 128,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "save_steps": 100,
        "progress": False,
        "padding_free": padding_free,
    }
    options.update(overrides)
    config = Config(**options, prior=PriorOptions(unit="chars"))
    Path(output).mkdir(parents=True, exist_ok=True)
    return build_trainer(config)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_a_training_step_equals_the_padded_step(rm_dirs, pairs_file, tmp_path, kind):
    """Loss, every logged metric and every parameter's gradient, from the trainer's own dataloader and compute_loss."""
    results = {}
    for padding_free in (True, False):
        trainer, _, facts = _trainer(rm_dirs[kind], pairs_file, tmp_path / str(padding_free), padding_free)
        assert facts["padding_free"] == padding_free
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        assert ("reward_index" in batch) == padding_free and "delta" in batch
        if padding_free:  # fewer tokens computed than the padded batch
            assert "attention_mask" not in batch and batch["input_ids"].numel() < 16 * batch["input_ids"].shape[1]
        model = trainer.model.train()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[padding_free] = loss.detach(), dict(trainer._metrics["train"]), grads
    (loss, metrics, grads), (loss0, metrics0, grads0) = results[True], results[False]
    torch.testing.assert_close(loss, loss0, rtol=0, atol=TOL)
    assert metrics.keys() == metrics0.keys() and "frac_above_delta" in metrics
    for key in metrics:
        assert metrics[key] == pytest.approx(metrics0[key], abs=TOL), key
    assert grads.keys() == grads0.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], grads0[name], rtol=0, atol=TOL, msg=name)


def _losses(output: Path) -> list[float]:
    return [e["loss"] for e in map(json.loads, (output / "train_log.jsonl").read_text().splitlines()) if "loss" in e]


def test_lora_gradient_checkpointing_and_packing_train(rm_dirs, pairs_file, tmp_path):
    from pcrm.commands.train_rm import Config, train
    from pcrm.constraints import PriorOptions

    results = {}
    for padding_free in (True, False):
        output = tmp_path / f"lora-{padding_free}"
        config = Config(
            model=str(rm_dirs["llama"]),
            data=str(pairs_file),
            eval_data=str(pairs_file),
            eval_split="train",
            output=str(output),
            method="length",
            max_length=128,
            batch_size=4,
            learning_rate=1e-2,
            max_steps=3,
            save_steps=100,
            progress=False,
            lora_r=4,
            gradient_checkpointing=True,
            padding_free=padding_free,
            prior=PriorOptions(unit="chars"),
        )
        results[padding_free] = train(config), _losses(output)
    (packed, packed_losses), (padded, padded_losses) = results[True], results[False]
    assert packed["padding_free"] and not padded["padding_free"]
    assert len(packed_losses) == 3 and len(set(packed_losses)) > 1  # it trains
    assert packed_losses == pytest.approx(padded_losses, abs=TOL)
    assert packed["heldout"]["margin_mean"] == pytest.approx(padded["heldout"]["margin_mean"], abs=TOL)


def test_a_model_whose_packing_leaks_stays_padded(monkeypatch):
    """Without transformers' packed-sequence mask the probe sees the leak; unsupported architectures are refused."""
    import transformers.masking_utils as masking
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = _tiny("llama")
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    assert not packing_exact(model, 0)
    config = DistilBertConfig(vocab_size=384, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=1)
    assert not packing_exact(DistilBertForSequenceClassification(config), 0)


def test_packed_scores_equal_score_texts(rm_dirs):
    from pcrm.models import load_reward_model, load_tokenizer
    from pcrm.scoring import score_texts
    from pcrm.tokenization import tokenize

    texts = ["short", "a somewhat longer text " * 5, "mid length one", "x", "another one, of medium size"] * 3
    for kind, rm_dir in rm_dirs.items():
        model, tokenizer = load_reward_model(rm_dir).eval(), load_tokenizer(rm_dir)
        ids, _ = tokenize(tokenizer, texts, 128)
        expected = score_texts(model, tokenizer, texts, max_length=128, batch_size=4, progress=False)
        assert packing_exact(model, tokenizer.pad_token_id)
        packed = packed_scores(model, ids, tokenizer.pad_token_id, batch_size=4)
        assert packed == pytest.approx(expected, abs=TOL), kind


@slow("two processes under accelerate, about 25 s")
def test_two_packed_processes_match_one_padded_with_the_same_global_batch(rm_dirs, pairs_file, tmp_path):
    from safetensors.torch import load_file

    common = [
        "train-rm",
        "--model",
        str(rm_dirs["llama"]),
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
        "--max-length",
        "128",
        "--learning-rate",
        "1e-3",
        "--sampler",
        "sequential",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
    ]
    runs = {
        "two": launch + ["-m", "pcrm.cli", *common, "--padding-free", "--batch-size", "2"],
        "one": [sys.executable, "-m", "pcrm.cli", *common, "--no-padding-free", "--batch-size", "4"],
    }
    for name, command in runs.items():
        done = subprocess.run(
            [*command, "--output", str(tmp_path / name)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "pcrm_config.json").read_text())["padding_free"] is True
    expected, actual = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    initial = load_file(rm_dirs["llama"] / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.allclose(expected[name], initial[name]) for name in expected)


@slow("the padding-free benchmark end to end on tiny models, about 12 s")
def test_benchmark_smoke_run(rm_dirs, pairs_file, tmp_path):
    """benchmarks/padding_free.py end to end on the tiny models (no timing asserted): every variant, the same pairs."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    threads = torch.get_num_threads()
    cases = [f"{rm_dirs['llama']}@128+lora", f"{rm_dirs['bert']}@128"]
    try:
        module = importlib.import_module("padding_free")
        output = tmp_path / "padding_free.json"
        module.main(
            ["--quick", "--data", str(pairs_file), "--output", str(output), "--row-tokens", "128", "--cases", *cases]
        )
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
        torch.set_num_threads(threads)
    saved = json.loads(output.read_text())
    variants = {(row["case"], row["variant"]) for row in saved["table"]}
    names = ("pcrm-packed", "pcrm-padded", "pcrm-packed-row128", "trl", "bare")
    assert variants == {(case, name) for case in cases for name in names}
    for row in saved["table"]:
        assert row["real_tok_per_s"] > 0 and (row["variant"] != "bare" or row["padding_share"] == 0)
    rows = {(row["case"], row["variant"]): row for row in saved["table"]}
    for case in cases:  # the same batches, fewer tokens computed
        packed, padded = rows[case, "pcrm-packed"], rows[case, "pcrm-padded"]
        assert packed["real_tokens"] == padded["real_tokens"] and packed["computed_tokens"] < padded["computed_tokens"]
    figures = saved["figures"][cases[0]]
    assert {"packed_vs_trl", "packed_vs_bare", "packed_vs_padded"} <= set(figures)
    assert "target" in figures["packed_vs_trl"] and "packed_random" in figures["epoch_padding_share_all_fitting_pairs"]
