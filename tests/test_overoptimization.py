"""`pcrm overoptimization`: the best-of-N estimator against brute force, the Gao fit, label noise, pool files,
the whole study on tiny random models (`--quick`) with its resume, and `train-rm --betas auto`."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from pcrm.cli import main
from pcrm.errors import PcrmError
from pcrm.evaluation.metrics import kl_best_of_n
from pcrm.study.estimator import (
    best_of_n_curve,
    best_of_n_weights,
    expected_best_of_n,
    fit_gao,
    gao_curve,
    gao_peak,
    t_interval,
)
from pcrm.study.labels import NOISE_SCALE, default_tau, expected_flip_rate, noisy_preferences
from pcrm.study.pool import read_pool, write_pool
from pcrm.study.proxies import ENSEMBLE

# -- best-of-N estimator --------------------------------------------------------------------------


def brute_force_best_of_n(proxy_row, value_row, n):
    """Mean over all size-n subsets of the value of the proxy's argmax (ties: uniformly random among the tied best)."""
    totals = []
    for subset in itertools.combinations(range(len(proxy_row)), n):
        best = max(proxy_row[i] for i in subset)
        totals.append(np.mean([value_row[i] for i in subset if proxy_row[i] == best]))
    return float(np.mean(totals))


def test_estimator_equals_exact_expectation_over_all_subsets():
    rng = np.random.default_rng(0)
    proxy = rng.integers(0, 4, size=(5, 7)).astype(float)  # many ties
    proxy[0] = np.arange(7)[::-1]  # distinct, descending
    proxy[1] = 2.0  # all tied
    gold = rng.normal(size=(5, 7))
    ns = list(range(1, 8))
    estimate = expected_best_of_n(proxy, gold, ns)
    exact = np.array([[brute_force_best_of_n(p, g, n) for n in ns] for p, g in zip(proxy, gold)])
    np.testing.assert_allclose(estimate, exact, atol=1e-12)
    np.testing.assert_allclose(estimate[:, 0], gold.mean(axis=1), atol=1e-12)  # N = 1: a random sample
    np.testing.assert_allclose(estimate[1], gold[1].mean(), atol=1e-12)  # all tied: selection is random
    # N = n with distinct scores: always the argmax
    assert estimate[0, -1] == pytest.approx(gold[0, 0])


def test_weights_and_kl():
    for n in range(1, 9):
        w = best_of_n_weights(8, n)
        assert w.sum() == pytest.approx(1.0) and (w[: n - 1] == 0).all()
    assert best_of_n_weights(5, 5).tolist() == [0, 0, 0, 0, 1]
    assert kl_best_of_n(1) == 0 and kl_best_of_n(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        best_of_n_weights(4, 5)


def test_curve_gains_are_relative_to_the_pool_mean():
    proxy = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    gold = np.array([[0.0, 1.0, 5.0], [2.0, 0.0, 0.0]])
    curve = best_of_n_curve(proxy, gold)
    assert curve["n"] == [1, 2, 3] and curve["gold_gain"][0] == pytest.approx(0)
    assert curve["gold"][-1] == pytest.approx((5.0 + 2.0) / 2)  # N = 3: each prompt's proxy argmax
    assert curve["proxy"][-1] == pytest.approx(3.0)


# -- fit and intervals ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,beta", [(0.8, 0.3), (1.5, -0.2), (-0.1, 0.05)])
def test_fit_recovers_known_alpha_beta(alpha, beta):
    d = np.sqrt([kl_best_of_n(n) for n in range(1, 17)])
    fitted = fit_gao(d, d * (alpha - beta * d))
    assert fitted == pytest.approx((alpha, beta), abs=1e-6)
    peak = gao_peak(alpha, beta)
    if alpha > 0 and beta > 0:
        assert peak["d"] == pytest.approx(alpha / (2 * beta)) and peak["gain"] == pytest.approx(alpha**2 / (4 * beta))
        assert gao_curve(peak["d"], alpha, beta) == pytest.approx(peak["gain"])
    else:
        assert peak is None


def test_fit_is_least_squares_with_noise():
    rng = np.random.default_rng(1)
    d = np.sqrt([kl_best_of_n(n) for n in range(1, 65)])
    gain = d * (1.0 - 0.25 * d) + rng.normal(scale=0.01, size=len(d))
    alpha, beta = fit_gao(d, gain)
    design = np.stack([d, -(d**2)], 1)
    assert (alpha, beta) == pytest.approx(tuple(np.linalg.lstsq(design, gain, rcond=None)[0]))
    assert (alpha, beta) == pytest.approx((1.0, 0.25), abs=0.05)


def test_t_interval():
    values = [1.0, 2.0, 4.0]
    ci = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (ci["mean"], ci["low"], ci["high"], ci["n"]) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half, 3))
    assert t_interval([5.0]) == {"mean": 5.0, "low": None, "high": None, "n": 1}
    assert t_interval([None, float("nan")])["mean"] is None


# -- labels and pool files ------------------------------------------------------------------------


def test_noisy_preferences():
    a, b = np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])
    assert noisy_preferences(a, b, 0.0, seed=0)[:2].tolist() == [True, False]
    n = 20000
    labels = noisy_preferences(np.full(n, 1.0), np.zeros(n), tau=1.0, seed=3)
    assert labels.mean() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)
    assert (noisy_preferences(a, b, 0.3, seed=7) == noisy_preferences(a, b, 0.3, seed=7)).all()
    assert default_tau([1.0, -1.0]) == pytest.approx(NOISE_SCALE)
    assert expected_flip_rate([0.0], 1.0) == pytest.approx(0.5)


def test_pool_file_round_trip_and_errors(tmp_path):
    gold = np.array([[0.5, -1.0], [2.0, 0.25]])
    write_pool(tmp_path / "pool.jsonl", ["p1", "p2"], [["a", "b"], ["c", "d"]], gold)
    prompts, responses, read = read_pool(tmp_path / "pool.jsonl")
    assert prompts == ["p1", "p2"] and responses == [["a", "b"], ["c", "d"]] and (read == gold).all()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "p", "sample": 0, "response": "a", "gold": 1})
        + "\n"
        + json.dumps({"prompt": "p", "sample": 2, "response": "b", "gold": 1})
        + "\n"
    )
    with pytest.raises(PcrmError, match="samples 0..n"):
        read_pool(bad)
    with pytest.raises(PcrmError, match="no such file"):
        read_pool(tmp_path / "missing.jsonl")


def test_pool_defaults_to_the_shipped_file(tmp_path, monkeypatch):
    from pcrm.commands import overoptimization as command

    shipped = tmp_path / "pool.jsonl"
    monkeypatch.setattr("pcrm.study.pool.DEFAULT_POOL", shipped)
    assert command.Config().pool is None
    shipped.write_text("")
    assert command.Config().pool == str(shipped)
    assert command.Config(quick=True).pool is None and command.Config(gold=str(tmp_path)).pool is None
    config = command.Config()
    assert config.methods == command.FULL_METHODS and config.seeds == [0, 1, 2]
    with pytest.raises(PcrmError, match="--methods"):
        command.Config(methods=["ppo"])


# -- the study end to end on tiny models ----------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    argv = ["overoptimization", "--quick", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    return out, argv


def test_quick_study_writes_every_stage(study):
    out, _ = study
    for name in (
        "labels/train.jsonl",
        "labels/test.jsonl",
        "labels/gold.npz",
        "pool/pool.jsonl",
        "bestofn.json",
        "fit.json",
        "report.html",
        "report.md",
        "summary.json",
        "overoptimization.png",
    ):
        assert (out / name).is_file(), name
    for label in ("bt-seed0", "bt-seed1", "cosine-seed0", "cosine-seed1"):
        assert (out / "proxies" / label / "pcrm_config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    labels = summary["labels"]
    assert labels["train_pairs"] == 24 and labels["test_pairs"] == 8 and labels["tau"] > 0
    assert len((out / "labels" / "train.jsonl").read_text().splitlines()) == 24
    prompts, responses, gold = read_pool(out / "pool" / "pool.jsonl")
    assert gold.shape == (4, 4) and summary["pool"]["source"] == "sampled"
    curves = summary["bestofn"]["proxies"]
    assert set(curves) == {"bt-seed0", "bt-seed1", "cosine-seed0", "cosine-seed1", ENSEMBLE}
    for label, curve in curves.items():
        assert curve["n"] == [1, 2, 3, 4] and curve["gold"][0] == pytest.approx(gold.mean())
        scores = np.load(out / "scores" / f"{label}.npz")["pool"] if label != ENSEMBLE else None
        if scores is not None:  # N = pool size: each prompt's proxy argmax (tie-free random scores)
            assert curve["gold"][-1] == pytest.approx(gold[np.arange(4), scores.argmax(1)].mean())
    per_method = summary["fit"]["per_method"]
    assert set(per_method) == {"bt", "cosine", ENSEMBLE}
    assert per_method["bt"]["seeds"] == 2 and per_method["bt"]["alpha"]["low"] is not None
    row = summary["fit"]["per_proxy"]["bt-seed0"]
    assert 0 <= row["accuracy_gold"] <= 1 and 0 <= row["accuracy_human"] <= 1 and row["scale"] > 0
    report = (out / "report.md").read_text()
    assert "Off-policy arm: summary per method" in report and "bt-ensemble" in report and "Caveats" in report
    assert "On-policy arm: headline points per method" in report


def test_resume_skips_finished_stages(study, capsys):
    out, argv = study
    before = (out / "proxies" / "bt-seed0" / "pcrm_config.json").stat().st_mtime_ns
    from pcrm.commands import overoptimization as command
    from pcrm.cli import parse_command

    _, _, config = parse_command(argv)
    result = command.run(config)
    assert set(result["stages"].values()) == {"cached"}
    assert (out / "proxies" / "bt-seed0" / "pcrm_config.json").stat().st_mtime_ns == before
    assert "labels: cached" in capsys.readouterr().out
    assert main([*argv, "--label-noise", "0.5"]) == 2  # other settings: refuse to mix them into this folder
    assert "--label-noise" in capsys.readouterr().err


# -- train-rm --betas auto --------------------------------------------------------------------------


def test_warmup_steps():
    from pcrm.calibration import MAX_WARMUP_STEPS, warmup_steps

    assert warmup_steps(3) == 1 and warmup_steps(40) == 10 and warmup_steps(10_000) == MAX_WARMUP_STEPS


def test_train_rm_betas_auto(tiny_rm_dir, pairs_file, tmp_path):
    output = tmp_path / "auto"
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
        "chars",
        "--betas",
        "auto",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--max-length",
        "64",
        "--learning-rate",
        "1e-3",
        "--no-progress",
    ]
    assert main(args) == 0
    record = json.loads((output / "pcrm_config.json").read_text())
    calibration = record["calibration"]
    assert calibration["betas"] == "auto" and calibration["warmup_steps"] == 1 and calibration["warmup_pairs"] == 8
    assert record["beta1"] == calibration["beta1"] > 0 and record["beta3"] == calibration["beta3"]
    assert record["config"]["betas"] == "auto" and record["config"]["prior"]["beta1"] == calibration["beta1"]
    assert main(args[:-1] + ["--beta1", "3", "--overwrite", "--no-progress"]) == 2  # auto fits β1 itself


def _hand_ensembles(bt, fold=None):
    """Mean, minimum and mean − variance over the BT seeds (λ = 1, ddof 0), each seed first standardised by hand
    (within each fold of prompts when given)."""
    z = np.empty_like(bt)
    for rows in [np.ones(bt.shape[1], bool)] if fold is None else [fold == f for f in np.unique(fold)]:
        for s in range(len(bt)):
            part = bt[s, rows]
            z[s, rows] = (part - part.sum() / part.size) / np.sqrt(((part - part.mean()) ** 2).mean())
    mean = z.sum(axis=0) / len(z)
    return {
        "bt-ensemble-mean": mean[None],
        "bt-ensemble-wco": np.minimum.reduce(list(z))[None],
        "bt-ensemble-uwo": (mean - ((z - mean) ** 2).sum(axis=0) / len(z))[None],
    }


def _as_json(value):
    return json.loads(json.dumps(value, default=lambda a: a.tolist()))


def test_quick_study_analysis_is_recomputable_from_its_files(study):
    """analysis.json (the redesigned statistics) equals `analyse` run on the files the study wrote: the pool's gold
    scores and each proxy's per-sample pool scores, seeds stacked per method, plus the BT ensembles computed here by
    hand; the report states its claims."""
    from pcrm.study.analysis import analyse

    out, _ = study
    saved = json.loads((out / "analysis.json").read_text())
    _, _, gold = read_pool(out / "pool" / "pool.jsonl")
    scores = {
        m: np.stack([np.load(out / "scores" / f"{m}-seed{s}.npz")["pool"] for s in (0, 1)]) for m in ("bt", "cosine")
    }
    scores |= _hand_ensembles(scores["bt"])
    again = _as_json(analyse(gold, scores, ns=[2, 3, 4]))
    assert saved["findings"] == again["findings"] and saved["methods"].keys() == scores.keys()
    for method in scores:
        assert saved["methods"][method]["curves"] == again["methods"][method]["curves"]
    report = (out / "report.md").read_text()
    assert "tests that can fail" in report and all(claim[:40] in report for claim in saved["findings"]["claims"])


def test_quick_study_on_policy_arm_is_cross_fitted_and_recomputable(study):
    """The on-policy arm: every fold's proxies were trained only on pairs of prompts outside the fold they score
    (read back from the training files and the proxies' own records), every pool sample got a score, the pairs are
    pairs of the pool's samples labelled as pairs.npz says, and onpolicy/analysis.json equals `analyse` of the scores
    on disk."""
    from pcrm.data import load_preferences
    from pcrm.study.analysis import analyse

    out, _ = study
    arm = out / "onpolicy"
    prompts, responses, gold = read_pool(out / "pool" / "pool.jsonl")
    pairs = dict(np.load(arm / "labels" / "pairs.npz"))
    fold = np.load(arm / "scores" / "bt-seed0.npz")["fold"]
    assert sorted(np.bincount(fold)) == [2, 2]  # 4 prompts, 2 folds
    for f in (0, 1):
        trained_on = load_preferences(str(arm / "labels" / f"fold{f}.jsonl"))
        assert set(trained_on["prompt"]).isdisjoint({prompts[i] for i in np.flatnonzero(fold == f)})
        record = json.loads((arm / "proxies" / f"bt-seed0-fold{f}" / "pcrm_config.json").read_text())
        assert record["config"]["data"].endswith(f"fold{f}.jsonl") and record["heldout_source"] is None
        for p, c, r in zip(trained_on["prompt"], trained_on["chosen"], trained_on["rejected"]):
            i = prompts.index(p)
            assert c in responses[i] and r in responses[i] and c != r
    for i, a, b, a_wins in zip(pairs["prompt"], pairs["a"], pairs["b"], pairs["a_wins"]):
        assert a != b and pairs["fold"][list(pairs["prompt"]).index(i)] == fold[i]
        winner, loser = (a, b) if a_wins else (b, a)
        if not (responses[i][a].strip() and responses[i][b].strip()):
            continue  # a pair with an empty reply is not trained on (the sample stays in the pool)
        rows = load_preferences(str(arm / "labels" / f"fold{1 - fold[i]}.jsonl"))
        assert (prompts[i], responses[i][winner], responses[i][loser]) in set(
            zip(rows["prompt"], rows["chosen"], rows["rejected"])
        )
    scores = {
        m: np.stack([np.load(arm / "scores" / f"{m}-seed{s}.npz")["pool"] for s in (0, 1)]) for m in ("bt", "cosine")
    }
    assert all(np.isfinite(s).all() and s.shape == (2, *gold.shape) for s in scores.values())
    scores |= _hand_ensembles(scores["bt"], fold)
    saved = json.loads((arm / "analysis.json").read_text())
    again = _as_json(analyse(gold, scores, ns=[2, 3, 4], groups=fold))  # standardised per fold's reward model
    assert saved["findings"] == again["findings"]
    assert saved["methods"]["cosine"]["curves"] == again["methods"]["cosine"]["curves"]
    assert set(saved["pairs"]) == set(scores)
