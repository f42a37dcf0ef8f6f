"""The constraint functions against values computed by hand, and the cached dataset pipeline."""

import json
import math

import pytest
import torch

from pcrm.constraints import ConstraintConfig, add_constraints, angular_similarity, delta_star, length_ratio, summarize
from pcrm.data import load_preferences
from pcrm.errors import PcrmError


def test_length_ratio_by_hand():
    assert length_ratio([2, 10, 0, 0, 7], [4, 5, 0, 3, 7]).tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0, 1.0])


def test_angular_similarity_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    # identical, orthogonal, opposite (cosine clamped to 0), 45°, same direction
    expected = [1.0, 0.5, 0.5, (math.pi - math.pi / 4) / math.pi, 1.0]
    assert angular_similarity(a, b).tolist() == pytest.approx(expected, abs=1e-6)


def test_delta_star_by_hand():
    assert delta_star(torch.tensor([1.0, 0.5, 0.0])).tolist() == pytest.approx(
        [6 / 1.001, 6 / 0.501, 6 / 0.001], rel=1e-5
    )
    assert delta_star([1.0], beta1=20, beta2=0.001, beta3=-15).tolist() == pytest.approx([20 / 1.001 - 15], rel=1e-5)


@pytest.mark.parametrize("kwargs", [{"beta1": 0.0}, {"beta2": 0.0}, {"beta3": float("nan")}, {"beta1": float("inf")}])
def test_delta_star_rejects_bad_betas(kwargs):
    with pytest.raises(PcrmError, match="beta"):
        delta_star([0.5], **kwargs)


def test_config_rejects_bad_options():
    with pytest.raises(PcrmError, match="--method"):
        ConstraintConfig(method="cosinus")
    with pytest.raises(PcrmError, match="--unit"):
        ConstraintConfig(method="length", unit="bytes")
    with pytest.raises(PcrmError, match="--random-low"):
        ConstraintConfig(method="random", random_low=3, random_high=2)


def test_length_constraints_in_words_chars_and_tokens(pairs_file, tiny_rm_dir):
    from pcrm.models import load_tokenizer

    dataset = load_preferences(pairs_file)
    words = add_constraints(dataset, ConstraintConfig(method="length", unit="words", beta1=1.0, beta3=0.0))
    # pair 0: 12 words vs 1 word
    assert words["similarity"][0] == pytest.approx(1 / 12)
    assert words["delta"][0] == pytest.approx(1 / (1 / 12 + 0.001), rel=1e-5)
    chars = add_constraints(dataset, ConstraintConfig(method="length", unit="chars"))
    assert chars["similarity"][4] == pytest.approx(len(" Blue.") / len(" Seven."))
    tokens = add_constraints(dataset, ConstraintConfig(method="length"), tokenizer=load_tokenizer(tiny_rm_dir))
    assert tokens["similarity"][4] == pytest.approx(len(" Blue.") / len(" Seven."))  # byte tokenizer


def test_fixed_and_random_constraints(pairs_file):
    dataset = load_preferences(pairs_file)
    fixed = add_constraints(dataset, ConstraintConfig(method="fixed", fixed_delta=4.5))
    assert fixed["delta"] == [4.5] * len(dataset)
    first = add_constraints(dataset, ConstraintConfig(method="random", random_low=4, random_high=5, seed=3))["delta"]
    again = add_constraints(dataset, ConstraintConfig(method="random", random_low=4, random_high=5, seed=3))["delta"]
    other = add_constraints(dataset, ConstraintConfig(method="random", random_low=4, random_high=5, seed=4))["delta"]
    assert first == again != other and all(4 <= d <= 5 for d in first)
    assert summarize(fixed)["similarity"] is None


def test_cosine_constraints_are_cached(pairs_file, monkeypatch):
    import pcrm.models

    dataset = load_preferences(pairs_file)
    config = ConstraintConfig(method="cosine", beta1=1.0, beta3=0.0)
    first = add_constraints(dataset, config, show_progress=False)
    # independently: the bundled MiniLM through sentence-transformers, angular similarity (π − arccos c)/π by hand
    import numpy as np
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(pcrm.models.resolve_model("minilm"), device="cpu")
    a, b = (encoder.encode(list(dataset[column]), convert_to_numpy=True) for column in ("chosen", "rejected"))
    cosine = np.clip((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1), 0.0, 1.0)
    similarity = (np.pi - np.arccos(cosine)) / np.pi
    assert first["similarity"] == pytest.approx(similarity.tolist(), abs=1e-4)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the second run must be served from the cache")

    monkeypatch.setattr(pcrm.models, "load_encoder", no_encoder)
    second = add_constraints(dataset, config, show_progress=False)
    assert second["similarity"] == first["similarity"]
    assert second["delta"] == pytest.approx((1 / (similarity + 0.001)).tolist(), rel=1e-4)


def test_suggest_betas_maps_margin_quantiles_onto_delta():
    import numpy as np

    from pcrm.constraints import suggest_betas

    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.2, 1.0, size=2000)
    margins = rng.normal(0.5, 1.0, size=2000)
    beta1, beta3 = suggest_betas(similarity, margins)
    s_lo, s_hi = np.quantile(similarity, [0.05, 0.95])
    hi = delta_star([s_lo], beta1, 0.001, beta3).item()
    lo = delta_star([s_hi], beta1, 0.001, beta3).item()
    assert lo == pytest.approx(np.median(margins[margins > 0]), rel=1e-4)
    assert hi == pytest.approx(np.quantile(margins, 0.95), rel=1e-4)
    with pytest.raises(PcrmError, match="never positive"):
        suggest_betas(similarity, -np.abs(margins))


def test_constraints_command_suggests_betas(pairs_file, tiny_rm_dir, tmp_path, capsys):
    from pcrm.cli import main

    args = [
        "constraints",
        "--data",
        str(pairs_file),
        "--method",
        "length",
        "--unit",
        "chars",
        "--suggest-from",
        str(tiny_rm_dir),
        "--output",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    assert "suggested: --method length --beta1" in capsys.readouterr().out
    suggestion = json.loads((tmp_path / "c" / "summary.json").read_text())["suggestion"]
    assert suggestion["beta1"] > 0 and set(suggestion["margin_quantiles"]) == {"0.05", "0.25", "0.5", "0.75", "0.95"}
    assert main(args[:4] + ["fixed"] + args[5:]) == 2
    assert "--suggest-from needs --method length or cosine" in capsys.readouterr().err


def test_suggested_betas_keep_every_bound_positive():
    """A steep fit anchored at the 95th-percentile similarity would push δ* of the most similar pairs below 0;
    the anchor then moves to the largest similarity: δ*(s_max) = median positive margin (hand-computed)."""
    import numpy as np

    from pcrm.constraints import delta_star, suggest_betas

    similarity = np.concatenate(
        [np.linspace(0.55, 0.60, 95), [0.86, 0.87, 0.88, 0.89, 0.9]]
    )  # cosine-like: concentrated
    margins = np.concatenate([np.full(50, 0.2), np.full(45, 0.4), np.full(5, 5.0)])
    beta1, beta3 = suggest_betas(similarity, margins, beta2=0.001)
    m_lo, m_hi = np.median(margins[margins > 0]), np.quantile(margins, 0.95)
    s_lo = np.quantile(similarity, 0.05)
    expected_beta1 = (m_hi - m_lo) / (1 / (s_lo + 0.001) - 1 / (0.9 + 0.001))
    assert beta1 == pytest.approx(expected_beta1) and beta3 == pytest.approx(m_lo - expected_beta1 / 0.901)
    assert float(delta_star(similarity, beta1, 0.001, beta3).min()) == pytest.approx(m_lo, rel=1e-5)
