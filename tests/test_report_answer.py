"""The report opens with its answer: a better model only where separated CIs or a paired test support it; smoothing."""

import numpy as np
import pytest

from pcrm.report import answer_section, smooth
from pcrm.report.answer import NO_BETTER, paired_credit_difference


def _metrics(accuracy, ci, ece, ece_ci, length_rho, length_ci):
    none = {"value": None, "ci": None, "n": 0}
    return {
        "accuracy": {"value": accuracy, "ci": ci, "n": 100},
        "rank_correlation": {
            "kendall_tau_pairs": {"value": 2 * accuracy - 1, "ci": [2 * ci[0] - 1, 2 * ci[1] - 1], "n": 100},
            "spearman_per_prompt": none,
        },
        "calibration": {"ece": {"value": ece, "ci": ece_ci, "n": 100}},
        "length_bias": {"score_length_spearman": {"value": length_rho, "ci": length_ci, "n": 200}},
    }


def test_a_model_is_named_only_where_its_ci_is_separated():
    summary = {
        "results": [
            {
                "model": "bt",
                "data": "d",
                "metrics": _metrics(0.60, [0.55, 0.65], 0.05, [0.02, 0.08], -0.50, [-0.60, -0.40]),
            },
            {
                "model": "pcrm",
                "data": "d",
                "metrics": _metrics(0.70, [0.66, 0.74], 0.04, [0.01, 0.07], 0.10, [-0.05, 0.25]),
            },
        ]
    }
    rows = {row["metric"]: row for row in answer_section(summary).rows}
    assert rows["accuracy"]["better model"] == "pcrm"
    assert rows["accuracy"]["evidence"].startswith("CIs separated from bt")
    ece = rows["ECE (calibration)"]
    assert ece["better model"] == NO_BETTER and ece["evidence"].startswith("CIs overlap with bt")
    assert ece["leader's estimate [95% CI]"].startswith("pcrm: 0.040")  # the leader is shown, not crowned
    length = rows["|Spearman ρ(score, length)| (length bias)"]
    # |ρ|: pcrm 0.10 with CI [0, 0.25] (the CI crosses 0) vs bt 0.50 [0.40, 0.60]: pcrm better, separated.
    assert length["better model"] == "pcrm" and length["leader's estimate [95% CI]"] == "pcrm: 0.100 [0.000, 0.250]"
    assert length["evidence"] == "CIs separated from bt (0.500 [0.400, 0.600])"
    assert "Spearman ρ per prompt" not in rows  # undefined for pairwise data


def test_overlapping_cis_name_no_model():
    summary = {
        "results": [
            {
                "model": "bt",
                "data": "d",
                "metrics": _metrics(0.60, [0.50, 0.70], 0.05, [0.02, 0.08], -0.02, [-0.20, 0.15]),
            },
            {
                "model": "pcrm",
                "data": "d",
                "metrics": _metrics(0.62, [0.52, 0.72], 0.06, [0.03, 0.09], 0.03, [-0.1, 0.18]),
            },
            {
                "model": "other",
                "data": "d",
                "metrics": _metrics(0.45, [0.40, 0.50], 0.20, [0.15, 0.25], 0.01, [-0.1, 0.1]),
            },
        ]
    }
    rows = answer_section(summary).rows
    assert rows and all(row["better model"] == NO_BETTER for row in rows)
    assert "CIs overlap with bt" in rows[0]["evidence"] and "other" not in rows[0]["evidence"]  # only the failing test


def _arrays(correct: np.ndarray) -> dict:
    """Score files of one model: pair i's chosen response scores 1 where `correct`, else −1 (rejected 0)."""
    n = len(correct)
    score = np.zeros(2 * n)
    score[0::2] = np.where(correct, 1.0, -1.0)
    return {
        "score": score,
        "chosen": np.arange(0, 2 * n, 2),
        "rejected": np.arange(1, 2 * n, 2),
        "group": np.repeat(np.arange(n), 2),
    }


def test_a_paired_test_names_a_model_whose_cis_overlap():
    """Same 200 pairs: a is right on 120, b on the same 120 less 20. Marginal CIs overlap; the paired Δ = 0.1 does not
    include 0 (b is never right where a is wrong)."""
    a = np.arange(200) < 120
    b = a & (np.arange(200) >= 20)

    def metrics(c):
        return _metrics(c.mean(), [c.mean() - 0.07, c.mean() + 0.07], 0.05, [0.0, 0.1], 0.0, [-0.1, 0.1])

    results = [{"model": m, "data": "d", "metrics": metrics(c)} for m, c in (("a", a), ("b", b))]
    rows = {row["metric"]: row for row in answer_section({"results": results}).rows}
    assert rows["accuracy"]["better model"] == NO_BETTER  # CIs alone: overlap
    arrays = {("a", "d"): _arrays(a), ("b", "d"): _arrays(b)}
    rows = {row["metric"]: row for row in answer_section({"results": results}, arrays, 200).rows}
    assert rows["accuracy"]["better model"] == "a" and "excludes 0" in rows["accuracy"]["evidence"]
    assert rows["Kendall τ (labelled pairs)"]["better model"] == "a"
    assert rows["ECE (calibration)"]["better model"] == NO_BETTER  # no paired test for ECE
    assert paired_credit_difference(_arrays(a), _arrays(b), 200)["value"] == pytest.approx(0.1)
    assert paired_credit_difference(_arrays(a), _arrays(b[:100]), 200) is None  # other pairs: not paired


def test_smooth_is_a_centred_moving_average():
    assert np.allclose(smooth(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3), [1.5, 2.0, 3.0, 4.0, 4.5])
    assert np.allclose(smooth(np.array([2.0, 4.0])), [2.0, 4.0])  # window 1 for short logs
