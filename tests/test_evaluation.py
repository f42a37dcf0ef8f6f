"""`pcrm evaluate`: metrics against hand-computed values, the end-to-end command, bad input."""

import json
import math

import numpy as np
import pytest
from tests.rm_fixtures import PAIRS, RANKED, tiny_reward_model, write_jsonl

from pcrm.cli import main
from pcrm.evaluation import metrics as M
from pcrm.evaluation.reward_models import format_table, load_data
from pcrm.io import unique_labels

LN3 = math.log(3)  # σ(ln 3) = 0.75


# ---- metrics on small fixed inputs ---------------------------------------------------------


def test_accuracy_and_pairwise_kendall_count_ties_half():
    margin = np.array([1.0, -1.0, 0.0, 2.0])
    assert M.pair_credit(margin).tolist() == [1.0, 0.0, 0.5, 1.0]
    assert M.accuracy(margin) == 0.625
    assert M.pairwise_kendall(margin) == 0.25 == 2 * 0.625 - 1


def test_fraction_above():
    assert M.fraction_above([1.0, 2.0, 3.0], [1.5, 1.5, 3.0]) == pytest.approx(1 / 3)


def test_spearman_by_hand():
    assert M.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 − 6·2 / (4·15)
    assert M.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))  # average ranks 1.5, 1.5, 3
    assert math.isnan(M.spearman([2, 2, 2], [1, 2, 3]))
    rows = M.spearman(np.array([[1, 2, 3, 4], [4, 3, 2, 1]]), np.array([[1, 3, 2, 4], [1, 2, 3, 4]]))
    assert rows.tolist() == pytest.approx([0.8, -1.0])


def test_kendall_by_hand():
    assert M.kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert M.kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))  # τ-b: 2 / sqrt((3−1)(3−0))
    assert math.isnan(M.kendall([1, 2], [3, 3]))


def test_rank_rule_single_response_constant_scores():
    assert math.isnan(M.human_spearman([0.3], [5.0]))  # a single response: nothing to rank
    assert math.isnan(M.human_kendall([0.1, 0.2], [2.0, 2.0]))  # constant human scores
    assert M.human_spearman([0.5, 0.5, 0.5], [3, 1, 2]) == 0.0  # the model ranks nothing
    assert M.human_kendall([0.5, 0.5, 0.5], [3, 1, 2]) == 0.0
    assert M.human_spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert M.human_kendall([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_ranked_pairs_match_the_loader_expansion():
    from pcrm.data import expand_ranked_rows

    human = np.array([1, 2, 3, 5, 2, 2, 3, 1, 2], dtype=float)
    group = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3])
    chosen, rejected = M.ranked_pairs(human, group)
    assert chosen.tolist() == [1, 2, 2, 6, 6, 8]
    assert rejected.tolist() == [0, 0, 1, 7, 8, 7]
    texts = [r for row in RANKED for r in row["responses"]]
    expanded = expand_ranked_rows(RANKED)
    assert [texts[i] for i in chosen] == [p["chosen"] for p in expanded]
    assert [texts[i] for i in rejected] == [p["rejected"] for p in expanded]


def test_group_rank_agreement_skips_unrankable_groups():
    score = np.array([0.1, 0.3, 0.2, 9.0, 1.0, 2.0, 5.0, 5.0, 5.0])
    human = np.array([1, 2, 3, 5, 2, 2, 3, 1, 2], dtype=float)
    group = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3])
    rho, tau = M.group_rank_agreement(score, human, group)
    # Q1: model ranks [1, 3, 2] → ρ = 1 − 6·2/(3·8) = 0.5, τ = (2 − 1)/3; Q2, Q3 skipped; Q4 constant model → 0
    assert rho.tolist()[0] == pytest.approx(0.5) and rho[3] == 0.0
    assert tau.tolist()[0] == pytest.approx(1 / 3) and tau[3] == 0.0
    assert np.isnan(rho[[1, 2]]).all() and np.isnan(tau[[1, 2]]).all()


def test_reliability_and_ece_are_symmetric():
    count, confidence, frequency = M.reliability([0.0, LN3])
    assert count.tolist() == [0, 0, 1, 0, 0, 2, 0, 1, 0, 0]
    assert confidence[[2, 5, 7]].tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert frequency[[2, 5, 7]].tolist() == [0.0, 0.5, 1.0]
    assert np.isnan(confidence[0])
    assert M.expected_calibration_error([0.0]) == 0.0
    assert M.expected_calibration_error([LN3]) == pytest.approx(0.25)  # ½·|1 − .75| + ½·|0 − .25|
    assert M.expected_calibration_error([LN3, -LN3]) == pytest.approx(0.25)  # frequency .5 in both bins
    batch = M.expected_calibration_error(np.array([[0.0, 0.0], [LN3, LN3]]))
    assert batch.tolist() == pytest.approx([0.0, 0.25])


def test_describe_and_margin_distribution():
    assert M.describe([1, 2, 3, 4, 5]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "min": 1.0, "max": 5.0}
    quantiles = M.margin_distribution([1, 2, 3, 4, 5])
    assert quantiles == pytest.approx(
        {"mean": 3.0, "std": math.sqrt(2), "p5": 1.2, "p25": 2.0, "p50": 3.0, "p75": 4.0, "p95": 4.8}
    )


def test_bootstrap_is_seeded_and_handles_degenerate_input():
    values = np.random.default_rng(1).normal(size=200)
    ci = M.bootstrap_ci(M.mean, values, n_boot=300, seed=3)
    assert ci == M.bootstrap_ci(M.mean, values, n_boot=300, seed=3)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # normal theory for the mean of 200 normals
    assert ci == pytest.approx([values.mean() - half, values.mean() + half], abs=0.25 * half)
    assert M.bootstrap_ci(M.mean, np.full(5, 2.0), n_boot=50) == [2.0, 2.0]
    assert M.bootstrap_ci(M.mean, np.ones(1)) is None
    assert M.estimate(M.accuracy, np.zeros(0)) == {"value": None, "ci": None, "n": 0}
    assert M.estimate(M.spearman, np.ones(4), np.arange(4.0)) == {"value": None, "ci": None, "n": 4}
    assert M.estimate(M.accuracy, np.array([1.0, -1.0]), n_boot=0) == {"value": 0.5, "ci": None, "n": 2}


def _brute_force_cluster_ci(statistic, values, group, n_boot, seed):
    """The cluster bootstrap spelled out: draw prompts with replacement, pool their pairs, take 2.5/97.5% quantiles."""
    ids = sorted(set(group.tolist()))
    members = {g: [i for i in range(len(group)) if group[i] == g] for g in ids}
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    stats_ = []
    for draw in draws:
        rows = [i for k in draw for i in members[ids[k]]]
        stats_.append(float(statistic(values[rows])))
    return np.quantile(stats_, [0.025, 0.975]).tolist()


def test_cluster_bootstrap_resamples_prompts():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 7, size=40)  # 40 prompts with 1..6 pairs each
    group = np.repeat(rng.permutation(np.arange(100, 140)), sizes)  # unsorted, non-contiguous ids
    margin = rng.normal(0.3, 1.0, size=len(group)) + np.repeat(rng.normal(0, 1, size=40), sizes)
    ci = M.cluster_bootstrap_ci(M.accuracy, margin, groups=group, n_boot=400, seed=7)
    assert ci == pytest.approx(_brute_force_cluster_ci(M.accuracy, margin, group, 400, 7), abs=1e-12)

    # every pair of a prompt alike: the prompt, not the pair, is the unit, so the interval is that of
    # 30 prompt means (normal theory: mean ± 1.96·sd/√30), far wider than a pair-level interval
    prompt_credit = np.r_[np.ones(18), np.zeros(12)]
    credit = np.repeat(prompt_credit, 10) * 2 - 1  # margins ±1, 300 pairs
    group = np.repeat(np.arange(30), 10)
    low, high = M.cluster_bootstrap_ci(M.accuracy, credit, groups=group, n_boot=4000, seed=0)
    half = 1.96 * prompt_credit.std() / math.sqrt(30)
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    pair_low, pair_high = M.bootstrap_ci(M.accuracy, credit, n_boot=1000, seed=0)
    assert (high - low) > 2.5 * (pair_high - pair_low)
    assert M.cluster_bootstrap_ci(M.accuracy, credit[:10], groups=group[:10]) is None  # one prompt


def test_compute_metrics_on_ranked_data_resamples_prompts():
    rng = np.random.default_rng(2)
    sizes = rng.integers(2, 6, size=25)
    group = np.repeat(np.arange(25), sizes)
    human = rng.integers(1, 6, size=len(group)).astype(float)
    score = human * 0.3 + rng.normal(size=len(group))
    chosen, rejected = M.ranked_pairs(human, group)
    arrays = {
        "score": score,
        "length": rng.integers(1, 50, size=len(group)),
        "human": human,
        "group": group,
        "chosen": chosen,
        "rejected": rejected,
    }
    m = M.compute_metrics(arrays, n_boot=300, seed=4)
    margin = score[chosen] - score[rejected]
    expected = _brute_force_cluster_ci(lambda x: np.mean((np.sign(x) + 1) / 2), margin, group[chosen], 300, 4)
    assert m["accuracy"]["ci"] == pytest.approx(expected, abs=1e-12)
    assert m["accuracy"]["n"] == len(chosen) > 25


def test_compute_metrics_on_fixed_pairwise_arrays():
    # three pairs: right, tie, wrong; responses 2i (chosen) and 2i + 1 (rejected)
    arrays = {
        "score": np.array([2.0, 1.0, 0.5, 0.5, 0.0, 3.0]),
        "length": np.array([3, 5, 4, 4, 9, 2]),
        "human": np.full(6, np.nan),
        "group": np.repeat(np.arange(3), 2),
        "chosen": np.array([0, 2, 4]),
        "rejected": np.array([1, 3, 5]),
        "similarity_length": np.array([0.6, 1.0, 2 / 9]),
        "delta_length": np.array([0.5, 0.5, 0.5]),
    }
    m = M.compute_metrics(arrays, priors=("length",), n_boot=50)
    assert m["accuracy"]["value"] == 0.5 and m["accuracy"]["n"] == 3
    assert m["rank_correlation"]["kendall_tau_pairs"]["value"] == 0.0
    assert m["rank_correlation"]["spearman_per_prompt"] is None and m["rank_correlation"]["prompts_used"] is None
    assert m["margins"]["mean"] == pytest.approx(-2 / 3)  # margins 1, 0, −3
    assert m["priors"]["length"]["fraction_above_delta"]["value"] == pytest.approx(1 / 3)
    assert m["priors"]["length"]["margin_similarity_spearman"]["value"] == pytest.approx(
        0.5
    )  # ranks (3,2,1) vs (2,3,1)
    assert m["length_bias"]["accuracy_chosen_shorter"] == {"value": 1.0, "ci": None, "n": 1}
    assert m["length_bias"]["accuracy_chosen_longer"] == {"value": 0.0, "ci": None, "n": 1}
    assert [b["count"] for b in m["calibration"]["bins"]].count(0) == 5
    # margins 1, 0, −3, each pair as (σ(m), chosen won) and (σ(−m), rejected won): σ(1)→bin 7 (freq 1),
    # σ(−1)→bin 2 (freq 0), ½ twice→bin 5 (freq ½), σ(−3)→bin 0 (freq 1), σ(3)→bin 9 (freq 0):
    # ECE = (2·(1 − σ(1)) + 0 + 2·(1 − σ(−3))) / 6 = (σ(−1) + σ(3)) / 3
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert m["calibration"]["ece"]["value"] == pytest.approx((sigmoid(-1) + sigmoid(3)) / 3)
    json.dumps(m, allow_nan=False)  # JSON-safe: no NaN anywhere


def test_load_ranked_data_by_hand(tmp_path):
    data = load_data(str(write_jsonl(tmp_path / "ranked.jsonl", RANKED)), "train")
    assert data.kind == "ranked" and len(data.responses) == 9
    assert data.group.tolist() == [0, 0, 0, 1, 2, 2, 3, 3, 3]
    score = np.array([0.1, 0.3, 0.2, 9.0, 1.0, 2.0, 5.0, 5.0, 5.0])
    arrays = {
        "score": score,
        "length": np.arange(9),
        "human": data.human,
        "group": data.group,
        "chosen": data.chosen,
        "rejected": data.rejected,
    }
    ranks = M.compute_metrics(arrays, n_boot=20)["rank_correlation"]
    assert ranks["spearman_per_prompt"]["value"] == pytest.approx(0.25)  # mean of 0.5 and 0
    assert ranks["kendall_per_prompt"]["value"] == pytest.approx(1 / 6)
    assert (ranks["prompts_used"], ranks["prompts_skipped"]) == (2, 2)
    from scipy import stats

    assert ranks["spearman_pooled"]["value"] == pytest.approx(stats.spearmanr(score, data.human).statistic)
    assert ranks["kendall_pooled"]["value"] == pytest.approx(stats.kendalltau(score, data.human).statistic)


def test_unique_labels():
    assert unique_labels(["runs/bt/final", "runs/pcrm/final"]) == ["bt-final", "pcrm-final"]
    assert unique_labels(["/a/model", "b"]) == ["model", "b"]
    assert unique_labels(["same", "same"]) == ["same-0", "same-1"]


# ---- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))
    return {
        "pairs": write_jsonl(tmp_path / "pairs.jsonl", PAIRS),
        "ranked": write_jsonl(tmp_path / "ranked.jsonl", RANKED),
    }


def test_evaluate_end_to_end_and_cache(model_dir, files, tmp_path, monkeypatch, capsys):
    output = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model_dir), "--data", str(files["pairs"]), "--data", str(files["ranked"])]
    argv += ["--output", str(output), "--priors", "length", "--bootstrap", "100"]
    assert main(argv) == 0
    summary = json.loads((output / "metrics.json").read_text())
    assert summary["schema_version"] == 1
    assert [(r["model"], r["data"], r["kind"], r["pairs"]) for r in summary["results"]] == [
        ("tiny-rm", "pairs", "pairs", 6),
        ("tiny-rm", "ranked", "ranked", 6),
    ]
    console = capsys.readouterr().out
    assert format_table(summary) in console and "accuracy [95% CI]" in console

    # the saved scores are a stock transformers forward of each text, and the metrics follow from them by hand
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs_result = summary["results"][0]
    with np.load(output / pairs_result["arrays"]) as saved:
        arrays = {k: saved[k] for k in saved.files}
    stock = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        direct = [
            stock(**tokenizer(p["prompt"] + r, return_tensors="pt")).logits[0, 0].item()
            for p in PAIRS
            for r in (p["chosen"], p["rejected"])
        ]
    assert arrays["score"] == pytest.approx(direct, abs=1e-5)
    assert arrays["length"].tolist() == [len(r.encode()) for p in PAIRS for r in (p["chosen"], p["rejected"])]  # bytes
    margins = [direct[2 * i] - direct[2 * i + 1] for i in range(len(PAIRS))]
    metrics = pairs_result["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(sum((m > 0) + 0.5 * (m == 0) for m in margins) / len(PAIRS))
    assert metrics["margins"]["mean"] == pytest.approx(sum(margins) / len(PAIRS), abs=1e-6)
    # length prior with the default βs (1, 0.001, −0.5) on byte lengths: δ* = 1/(s + 0.001) − 0.5
    ratios = [
        min(len(p["chosen"].encode()), len(p["rejected"].encode()))
        / max(len(p["chosen"].encode()), len(p["rejected"].encode()))
        for p in PAIRS
    ]
    above = sum(m > 1 / (s + 0.001) - 0.5 for m, s in zip(margins, ratios)) / len(PAIRS)
    assert metrics["priors"]["length"]["fraction_above_delta"]["value"] == pytest.approx(above)
    assert metrics["priors"]["length"]["similarity_mean"] == pytest.approx(sum(ratios) / len(ratios), abs=1e-6)
    assert metrics["priors"]["length"]["beta_source"] == "default"

    # a second run scores nothing: the model is never loaded
    def no_model(*args, **kwargs):
        raise AssertionError("model loaded although the scores are cached")

    monkeypatch.setattr("pcrm.models.load_reward_model", no_model)
    assert main([*argv, "--overwrite"]) == 0  # an existing output is replaced only when asked to
    again = json.loads((output / "metrics.json").read_text())
    assert {**again, "config": {**again["config"], "overwrite": False}} == summary


def test_betas_come_from_pcrm_config(model_dir, files, tmp_path):
    (model_dir / "pcrm_config.json").write_text(
        json.dumps({"method": "length", "beta1": 3.0, "beta2": 0.01, "beta3": -1.0})
    )
    try:
        from pcrm.commands.evaluate import Config, evaluate

        summary = evaluate(
            Config(
                model=[str(model_dir)],
                data=[str(files["pairs"])],
                output=str(tmp_path / "e"),
                priors=["length"],
                bootstrap=0,
            )
        )
    finally:
        (model_dir / "pcrm_config.json").unlink()
    prior = summary["results"][0]["metrics"]["priors"]["length"]
    assert (prior["beta1"], prior["beta2"], prior["beta3"], prior["beta_source"]) == (
        3.0,
        0.01,
        -1.0,
        "pcrm_config.json",
    )
    assert prior["fraction_above_delta"]["ci"] is None


# ---- bad input -----------------------------------------------------------------------------


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_model_without_config(tmp_path, files, capsys):
    (tmp_path / "empty").mkdir()
    line = _error_line(
        capsys,
        [
            "evaluate",
            "--model",
            str(tmp_path / "empty"),
            "--data",
            str(files["pairs"]),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert line.startswith("pcrm evaluate: error:") and str(tmp_path / "empty") in line and "config.json" in line


def test_causal_lm_is_not_a_reward_model(tmp_path, files, capsys):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path / "lm")
    line = _error_line(
        capsys,
        ["evaluate", "--model", str(tmp_path / "lm"), "--data", str(files["pairs"]), "--output", str(tmp_path / "o")],
    )
    assert str(tmp_path / "lm") in line and "not a reward model" in line and "GPT2LMHeadModel" in line


def test_missing_model_option(files, capsys):
    assert "--model is required" in _error_line(capsys, ["evaluate", "--data", str(files["pairs"])])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "p", "text": "t"}\n', "missing columns"),
        ("", "the dataset is empty"),
        ('{"prompt": "p", "responses": ["a", "b"], "scores": [1, 1]}\n', "no pair with different scores"),
    ],
)
def test_bad_data(model_dir, files, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    line = _error_line(
        capsys, ["evaluate", "--model", str(model_dir), "--data", str(bad), "--output", str(tmp_path / "o")]
    )
    assert str(bad) in line and message in line
    assert not (tmp_path / "o").exists()
