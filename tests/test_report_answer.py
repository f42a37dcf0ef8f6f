"""The report opens with its answer: the best model per headline metric, judged by CI overlap; smoothing."""

import numpy as np

from pcrm.report import answer_section, smooth


def _metrics(accuracy, ci, ece, ece_ci, length_rho, length_ci):
    none = {"value": None, "ci": None, "n": 0}
    return {
        "accuracy": {"value": accuracy, "ci": ci, "n": 100},
        "rank_correlation": {"kendall_tau_pairs": {"value": 2 * accuracy - 1, "ci": [2 * ci[0] - 1, 2 * ci[1] - 1], "n": 100},
                             "spearman_per_prompt": none},
        "calibration": {"ece": {"value": ece, "ci": ece_ci, "n": 100}},
        "length_bias": {"score_length_spearman": {"value": length_rho, "ci": length_ci, "n": 200}},
    }


def test_best_model_per_metric_and_ci_separation():
    summary = {"results": [
        {"model": "bt", "data": "d", "metrics": _metrics(0.60, [0.55, 0.65], 0.05, [0.02, 0.08], -0.50, [-0.60, -0.40])},
        {"model": "pcrm", "data": "d", "metrics": _metrics(0.70, [0.66, 0.74], 0.04, [0.01, 0.07], 0.10, [-0.05, 0.25])},
    ]}
    rows = {row["metric"]: row for row in answer_section(summary).rows}
    assert rows["accuracy"]["best"] == "pcrm" and rows["accuracy"]["vs runner-up"].startswith("separated from bt")
    assert rows["ECE (calibration)"]["best"] == "pcrm" and rows["ECE (calibration)"]["vs runner-up"].startswith("CIs overlap with bt")
    length = rows["|Spearman ρ(score, length)| (length bias)"]
    # |ρ|: pcrm 0.10 with CI [0, 0.25] (the CI crosses 0) vs bt 0.50 [0.40, 0.60]: pcrm best, separated.
    assert length["best"] == "pcrm" and length["estimate [95% CI]"] == "0.100 [0.000, 0.250]"
    assert length["vs runner-up"] == "separated from bt (0.500 [0.400, 0.600])"
    assert "Spearman ρ per prompt" not in rows  # undefined for pairwise data


def test_smooth_is_a_centred_moving_average():
    assert np.allclose(smooth(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3), [1.5, 2.0, 3.0, 4.0, 4.5])
    assert np.allclose(smooth(np.array([2.0, 4.0])), [2.0, 4.0])  # window 1 for short logs
