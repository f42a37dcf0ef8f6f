"""The on-policy arm's pieces by hand: prompt folds, pair drawing, BT ensembles, held-out pair metrics."""

import numpy as np
import pytest

from pcrm.study.onpolicy import draw_pairs, label_pairs, pair_metrics, prompt_folds
from pcrm.study.proxies import ensemble_scores


def test_prompt_folds_are_balanced_seeded_and_cover_every_prompt():
    fold = prompt_folds(11, 3, seed=4)
    assert sorted(np.bincount(fold)) == [3, 4, 4]
    assert (prompt_folds(11, 3, seed=4) == fold).all() and not (prompt_folds(11, 3, seed=5) == fold).all()


def test_draw_pairs_disjoint_first_then_distinct():
    rng = np.random.default_rng(0)
    first = draw_pairs(16, 8, rng)
    assert sorted(first.ravel().tolist()) == list(range(16))  # 8 disjoint pairs: every sample once
    many = draw_pairs(6, 15, rng)  # all C(6, 2) pairs
    assert len({tuple(sorted(p)) for p in many.tolist()}) == 15 and (many[:, 0] != many[:, 1]).all()
    with pytest.raises(ValueError):
        draw_pairs(4, 7, rng)


def test_label_pairs_noise_free_follows_gold_and_keeps_folds():
    gold = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 5.0, 2.0]])
    fold = np.array([1, 0, 1])
    pairs = label_pairs(gold, fold, 2, label_noise=0.0, seed=0)
    assert pairs["prompt"].tolist() == [0, 0, 1, 1, 2, 2] and pairs["fold"].tolist() == [1, 1, 0, 0, 1, 1]
    for p, a, b, wins in zip(pairs["prompt"], pairs["a"], pairs["b"], pairs["a_wins"]):
        assert wins == (gold[p, a] > gold[p, b])


def test_ensembles_by_hand():
    # 2 seeds, 1 prompt, 2 samples; each seed standardised: [1, 4] -> [-1, 1], [3, 0] -> [1, -1]
    bt = np.array([[[1.0, 4.0]], [[3.0, 0.0]]])
    e = ensemble_scores(bt, uwo_lambda=0.5)
    assert e["bt-ensemble-mean"].tolist() == [[[0.0, 0.0]]]
    assert e["bt-ensemble-wco"].tolist() == [[[-1.0, -1.0]]]
    assert e["bt-ensemble-uwo"].tolist() == [[[-0.5, -0.5]]]  # variance of (−1, 1) is 1
    assert ensemble_scores(bt[:1]) == {} and ensemble_scores(None) == {}


def test_ensembles_ignore_each_seeds_offset_and_scale():
    """BT fixes a seed's scores only up to r → a·r + c (a > 0): WCO and UWO must choose the same samples."""
    rng = np.random.default_rng(0)
    bt = rng.normal(size=(3, 5, 6))
    moved = bt * np.array([2.0, 0.5, 7.0])[:, None, None] + np.array([10.0, -10.0, 3.0])[:, None, None]
    for name, value in ensemble_scores(bt).items():
        assert np.allclose(ensemble_scores(moved)[name], value), name


def test_ensembles_standardise_members_per_fold():
    rng = np.random.default_rng(1)
    bt = rng.normal(size=(2, 4, 3))
    groups = np.array([0, 1, 0, 1])
    moved = bt.copy()
    moved[:, groups == 1] = 5 * moved[:, groups == 1] - 9  # fold 1's reward models: other offset and scale
    for name, value in ensemble_scores(bt, groups=groups).items():
        assert np.allclose(ensemble_scores(moved, groups=groups)[name], value), name


def test_pair_metrics_by_hand():
    # one prompt, 4 samples; pairs (0, 1): gold says 0 wins, (2, 3): gold says 3 wins; noisy label flips the second
    pairs = {
        "prompt": np.array([0, 0]),
        "a": np.array([0, 2]),
        "b": np.array([1, 3]),
        "margin": np.array([1.0, -2.0]),
        "a_wins": np.array([True, True]),
    }
    scores = np.array([[[0.5, 0.1, 0.9, 0.2]]])  # right on (0, 1), wrong on (2, 3)
    lengths = np.array([[10, 20, 30, 40]])
    m = pair_metrics(scores, pairs, lengths)
    assert m["accuracy_gold"] == 0.5 and m["accuracy_noisy_labels"] == 1.0
    assert m["accuracy_chosen_shorter"] == 1.0 and m["accuracy_chosen_longer"] == 0.0  # 0 < 1 in length; 3 > 2
    assert m["spearman_score_length"] == pytest.approx(0.0)  # ranks (3, 1, 4, 2) vs (1, 2, 3, 4): 1 − 6·10/60


def test_standardised_rewards_and_scale_are_per_reward_model():
    """With folds, each fold's proxy is standardised on its own prompts (as OpenRLHF normalises one reward model):
    π_β on standardised rewards and the reported scale by hand, with statistics.pstdev per (seed, fold)."""
    import math
    import statistics

    from pcrm.study.analysis import analyse

    rng = np.random.default_rng(3)
    gold = rng.normal(size=(4, 5))
    groups = np.array([0, 1, 0, 1])
    bt = rng.normal(size=(2, 4, 5))
    bt[:, groups == 1] = 6 * bt[:, groups == 1] + 40  # fold 1's reward models: another offset and scale
    out = analyse(gold, {"bt": bt}, ns=[2, 3], n_boot=50, draws=20, groups=groups)
    entry = out["methods"]["bt"]
    expected_gain, variances = [], []
    for seed in range(2):
        z = np.empty_like(gold)
        for fold in (0, 1):
            values = [float(x) for x in bt[seed][groups == fold].ravel()]
            mean, sd = statistics.fmean(values), statistics.pstdev(values)
            z[groups == fold] = (bt[seed][groups == fold] - mean) / sd
            variances.append(sd**2)
        for p in range(4):
            w = [math.exp((x - max(z[p])) / 0.1) for x in z[p]]
            expected_gain.append(sum(wi * g for wi, g in zip(w, gold[p])) / sum(w) - statistics.fmean(gold[p]))
    at = out["betas"].index(0.1)
    assert entry["curves"]["tilted standardised"]["gain"][at] == pytest.approx(statistics.fmean(expected_gain))
    (row,) = [r for r in entry["fixed_beta"] if r["rewards"] == "standardised" and r["beta"] == 0.1]
    assert row["gold_gain"] == pytest.approx(statistics.fmean(expected_gain))
    scale = statistics.fmean([math.sqrt(statistics.fmean(variances[2 * s : 2 * s + 2])) for s in range(2)])
    assert entry["scale"] == pytest.approx(scale)
    pooled = analyse(gold, {"bt": bt}, ns=[2, 3], n_boot=50, draws=20)  # one reward model per seed: offsets count
    assert pooled["methods"]["bt"]["scale"] > 3 * entry["scale"]
