"""Defects of issue 17 found by reading, each with a test that fails on the code before the fix."""

import importlib.metadata
import json

import numpy as np
import pytest

from pcrm.errors import PcrmError


def test_package_version_is_the_code_version():
    import pcrm

    assert importlib.metadata.version("pcrm") == pcrm.__version__  # the score cache keys on it


def test_score_cache_is_keyed_on_dtype_and_device(tiny_rm_dir, tmp_path):
    """bf16 scores must not be served to an fp32 run (or the other way round)."""
    from pcrm.commands.evaluate import Config
    from pcrm.evaluation.reward_models import cached_scores, load_data
    from pcrm.scoring import LazyRewardScorer
    from tests.conftest import PAIRS
    from tests.rm_fixtures import write_jsonl

    data = load_data(
        str(write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])),
        "train",
    )
    config = Config(model=[str(tiny_rm_dir)], progress=False)
    fp32 = cached_scores(str(tiny_rm_dir), data, LazyRewardScorer(tiny_rm_dir, device="cpu"), config)
    bf16 = cached_scores(str(tiny_rm_dir), data, LazyRewardScorer(tiny_rm_dir, device="cpu", dtype="bfloat16"), config)
    again = cached_scores(str(tiny_rm_dir), data, LazyRewardScorer(tiny_rm_dir, device="cpu"), config)
    assert np.abs(fp32 - bf16).max() > 1e-6  # really scored in bf16, not read back from the fp32 entry
    np.testing.assert_array_equal(fp32, again)


def test_prior_method_without_delta_raises(tiny_rm_dir, pairs_file, tmp_path):
    from pcrm.commands.train_rm import Config
    from pcrm.trainers.reward import build_trainer

    config = Config(
        method="length",
        model=str(tiny_rm_dir),
        data=str(pairs_file),
        output=str(tmp_path / "o"),
        max_length=64,
        batch_size=4,
        progress=False,
    )
    trainer, _, _ = build_trainer(config)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "delta" in batch
    trainer.compute_loss(trainer.model, dict(batch))  # with δ*: trains
    batch.pop("delta")
    with pytest.raises(PcrmError, match="δ"):  # without: refuses, instead of silently training BT
        trainer.compute_loss(trainer.model, batch)


def test_suggest_betas_keeps_delta_positive_beyond_the_sample():
    from pcrm.constraints import delta_star, suggest_betas

    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.3, 0.4, 200)  # the warm-up's subset; the run also has pairs up to 0.99
    margins = rng.normal(0.3, 0.6, 200)
    beta1, beta3 = suggest_betas(similarity, margins, 0.001)
    assert delta_star(np.array([0.99]), beta1, 0.001, beta3).item() <= 0  # the old fit: δ* ≤ 0 on the run's pair
    beta1, beta3 = suggest_betas(similarity, margins, 0.001, max_similarity=0.99)
    assert delta_star(np.array([0.05, 0.5, 0.99]), beta1, 0.001, beta3).min().item() > 0


def test_betas_auto_fits_on_the_whole_run_and_leaves_the_config(tiny_rm_dir, pairs_file, monkeypatch):
    import pcrm.constraints
    from pcrm.calibration import calibrate_betas
    from pcrm.commands.train_rm import Config
    from pcrm.constraints import add_constraints

    seen = {}
    original = pcrm.constraints.suggest_betas

    def spy(similarity, margins, beta2, **kwargs):
        seen.update(kwargs, n=len(similarity))
        return original(similarity, margins, beta2, **kwargs)

    monkeypatch.setattr(pcrm.constraints, "suggest_betas", spy)
    monkeypatch.setattr("pcrm.calibration.CALIBRATION_PAIRS", 4)
    config = Config(
        method="length",
        model=str(tiny_rm_dir),
        data=str(pairs_file),
        output="unused",
        max_length=64,
        batch_size=4,
        betas="auto",
        learning_rate=1e-3,
        progress=False,
    )
    config.prior.unit = "chars"
    calibrate_betas(config)
    assert config.prior.beta1 is None and config.prior.beta3 is None  # the caller's config is not changed
    from pcrm.data import load_preferences

    every = add_constraints(load_preferences(str(pairs_file)), config.prior.resolve("length"), show_progress=False)
    assert seen["n"] == 4 and seen["max_similarity"] == pytest.approx(max(every["similarity"]))


def test_dpo_configs_do_not_share_prior_options():
    from pcrm.commands.train_dpo import Config

    a, b = Config(), Config()
    a.prior.beta1 = 9.0
    assert a.prior is not b.prior and b.prior.beta1 != 9.0 and Config().prior.beta1 != 9.0


def test_special_token_strings_in_data_stay_text():
    from pcrm.models import load_tokenizer
    from pcrm.tokenization import tokenize

    tokenizer = load_tokenizer("minilm")
    (ids,), _ = tokenize(tokenizer, ["a [SEP] b [CLS]"], 64)
    assert ids.count(tokenizer.sep_token_id) == 1 and ids.count(tokenizer.cls_token_id) == 1  # only its own
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_records_training_length_for_readers(tmp_path, tiny_rm_dir):
    from pcrm.models import recorded_max_length

    folder = tmp_path / "m"
    folder.mkdir()
    for f in tiny_rm_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    assert recorded_max_length(folder) == 512  # no record: the tokenizer's / positions' limit
    (folder / "pcrm_config.json").write_text(json.dumps({"config": {"max_length": 77}}))
    assert recorded_max_length(folder) == 77


def test_public_api():
    import pcrm

    for name in pcrm.__all__:
        assert getattr(pcrm, name) is not None
    from pcrm.trainers.reward import PCRMRewardTrainer

    assert pcrm.PCRMRewardTrainer is PCRMRewardTrainer and "PCRMRewardTrainer" in dir(pcrm)
    with pytest.raises(AttributeError):
        pcrm.no_such_name
