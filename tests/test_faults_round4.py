"""Hostile input, round four: the defects an attack review found in the study's on-policy arm, its config and its
caching (each failed before its fix). Tiny numpy pools and tmp_path folders; no model is trained."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pcrm.errors import PcrmError
from pcrm.study.pool import write_pool


def _pool(path, prompts: int, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts = [f"prompt {i}" for i in range(prompts)]
    responses = [[f"reply {i}.{j} " + "x" * j for j in range(samples)] for i in range(prompts)]
    write_pool(path, texts, responses, rng.standard_normal((prompts, samples)))
    return path


def _arm_config(**kw):
    base = {"folds": 2, "label_seed": 0, "pairs_per_prompt": None, "label_noise": None, "uwo_lambda": 1.0}
    return SimpleNamespace(**(base | kw))


# --- pcrm/study/config.py --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"pool_size": "4"}, {"prompts": "4"}, {"label_noise": "0.1"}, {"arms": "on-policy"}, {"methods": "bt"}],
)
def test_study_config_of_the_wrong_type_is_one_line(tmp_path, options):
    """A YAML/library caller's "4" for an int or one string for a list: a one-line PcrmError naming the type, not a
    TypeError from a comparison (nor "--arms ... got 'o'")."""
    from pcrm.study.config import StudyConfig

    with pytest.raises(PcrmError, match="must be"):
        StudyConfig(output=str(tmp_path), quick=True, **options)
    if "arms" in options or "methods" in options:
        with pytest.raises(PcrmError, match="list"):
            StudyConfig(output=str(tmp_path), quick=True, **options)


def test_study_config_does_not_check_a_pool_file_against_pool_size_and_prompts(tmp_path):
    """--pool-size and --prompts shape a sampled pool only: a --pool file's own shape decides --pairs-per-prompt and
    --folds (checked against the file when the study starts)."""
    from pcrm.study.config import StudyConfig

    pool = _pool(tmp_path / "pool.jsonl", 6, 8)
    config = StudyConfig(output=str(tmp_path / "out"), quick=True, pool=str(pool), pairs_per_prompt=16, folds=5)
    assert config.pairs_per_prompt == 16 and config.folds == 5
    with pytest.raises(PcrmError, match="--pairs-per-prompt"):  # a sampled pool: still checked at once
        StudyConfig(output=str(tmp_path / "out"), quick=True, pairs_per_prompt=16)


# --- pcrm/study/onpolicy.py ------------------------------------------------------------------------------------------


def test_on_policy_labels_refuse_more_folds_than_pool_prompts(tmp_path):
    """A --pool file with fewer prompts than --folds left a fold empty: its proxies trained for nothing and scoring
    crashed with a reshape ValueError. Now one line, before anything is written."""
    from pcrm.study.onpolicy import stage_labels

    _pool(tmp_path / "pool" / "pool.jsonl", 3, 4)
    with pytest.raises(PcrmError, match="--folds"):
        stage_labels(_arm_config(folds=4), tmp_path)
    assert not (tmp_path / "onpolicy").exists()


def test_run_study_checks_a_pool_file_before_the_off_policy_arm(tmp_path, monkeypatch):
    """--pairs-per-prompt too large for a --pool file was refused only after the whole off-policy arm had trained,
    and study.json had recorded it (so the fixed option then needed a new --output). Now refused before
    study.json."""
    from pcrm.study import stages
    from pcrm.study.config import StudyConfig

    pool = _pool(tmp_path / "pool.jsonl", 4, 4)
    config = StudyConfig(output=str(tmp_path / "out"), quick=True, pool=str(pool), pairs_per_prompt=10)

    def no_training(*args):
        raise AssertionError("the off-policy arm started")

    monkeypatch.setattr(stages, "_off_policy", no_training)
    with pytest.raises(PcrmError, match="--pairs-per-prompt"):
        stages.run_study(config)
    assert not (tmp_path / "out" / "study.json").exists()


def _arm_folder(tmp_path, methods, seeds):
    """A study folder whose on-policy labels, proxies and scores are done (random scores stand in for the proxies)."""
    from pcrm.io import write_npz
    from pcrm.study.onpolicy import proxy_dirs, stage_labels

    _pool(tmp_path / "pool" / "pool.jsonl", 4, 4)
    config = _arm_config(methods=methods, seeds=seeds)
    stage_labels(config, tmp_path)
    rng = np.random.default_rng(1)
    for label, folds in proxy_dirs(config, tmp_path).items():
        for directory in folds.values():
            directory.mkdir(parents=True)
            (directory / "pcrm_config.json").write_text("{}")
        write_npz(tmp_path / "onpolicy" / "scores" / f"{label}.npz", {"pool": rng.standard_normal((4, 4))})
    return config


def test_on_policy_analysis_reruns_when_methods_or_seeds_shrink(tmp_path):
    """A resume with fewer --methods/--seeds trains and scores nothing, and run_arm served the old analysis.json
    with the dropped methods in it (the off-policy arm re-derives it: `_same_proxies`)."""
    from pcrm.study.onpolicy import run_arm

    config = _arm_folder(tmp_path, ["bt", "cosine"], [0, 1])
    _, analysis, ran = run_arm(config, tmp_path, upstream=False)
    assert ran and "cosine" in analysis["methods"]
    _, analysis, ran = run_arm(config, tmp_path, upstream=False)
    assert not ran  # same options: cached
    config.methods = ["bt"]
    _, analysis, ran = run_arm(config, tmp_path, upstream=False)
    assert ran and "cosine" not in analysis["methods"] and "cosine" not in analysis["pairs"]
    config.seeds = [0]
    _, analysis, ran = run_arm(config, tmp_path, upstream=False)
    assert ran and analysis["methods"]["bt"]["seeds"] == 1


def test_on_policy_analysis_reruns_when_uwo_lambda_changes(tmp_path):
    """--uwo-lambda shapes only the analysis (it is not in study.json): a resume with another λ served the old UWO
    ensemble."""
    from pcrm.study.onpolicy import run_arm

    config = _arm_folder(tmp_path, ["bt"], [0, 1])
    _, before, _ = run_arm(config, tmp_path, upstream=False)
    config.uwo_lambda = 5.0
    _, after, ran = run_arm(config, tmp_path, upstream=False)
    assert ran
    assert after["methods"]["bt-ensemble-uwo"]["scale"] != before["methods"]["bt-ensemble-uwo"]["scale"]


def test_off_policy_analysis_reruns_when_uwo_lambda_changes(tmp_path, monkeypatch):
    """The off-policy arm served a cached analysis.json made with another --uwo-lambda."""
    from pcrm.study import stages
    from pcrm.study.onpolicy import analysis_settings

    (tmp_path / "bestofn.json").write_text(json.dumps({"proxies": {"bt-seed0": {}}}))
    (tmp_path / "fit.json").write_text("{}")
    config = SimpleNamespace(methods=["bt"], seeds=[0], uwo_lambda=1.0)
    calls = []

    def analysis(config, out):
        calls.append(config.uwo_lambda)
        return {"settings": analysis_settings(config, ["bt-seed0"])}

    monkeypatch.setattr(stages, "stage_scores", lambda config, out: [])
    monkeypatch.setattr(stages, "stage_analysis", analysis)
    (tmp_path / "analysis.json").write_text(json.dumps(analysis(config, tmp_path)))
    calls.clear()
    stages._off_policy_results(config, tmp_path, lambda name, cached: None, upstream=False)
    assert calls == []  # same λ: cached
    config.uwo_lambda = 3.0
    stages._off_policy_results(config, tmp_path, lambda name, cached: None, upstream=False)
    assert calls == [3.0]


# --- pcrm/study/analysis_report.py -----------------------------------------------------------------------------------


def test_empty_analysis_section_names_both_reasons(tmp_path):
    """A pool of 2 samples per prompt gives an empty analysis with BT among the methods; the report said only
    "BT is not among the methods"."""
    from pcrm.study.analysis_report import analysis_sections

    (section,) = analysis_sections({}, tmp_path, "On-policy arm", "on-policy.png")
    assert "BT" in section.text and "3 samples" in section.text


def test_on_policy_pairs_of_identical_samples_are_not_trained_on(tmp_path):
    """Two samples of a prompt with the same text (common for short answers) made a training pair with
    chosen == rejected: no preference signal, only label noise, and a loader warning per proxy."""
    from pcrm.data import load_preferences
    from pcrm.study.onpolicy import stage_labels

    texts = ["p0", "p1", "p2", "p3"]
    responses = [["same", "same", "other", "x"] for _ in texts]
    write_pool(tmp_path / "pool" / "pool.jsonl", texts, responses, np.arange(16.0).reshape(4, 4))
    summary = stage_labels(_arm_config(pairs_per_prompt=6), tmp_path)  # every pair: (0, 1) among them
    assert summary["pairs_with_identical_responses"] == 4 and summary["pairs_with_an_empty_response"] == 0
    for f in (0, 1):
        rows = load_preferences(str(tmp_path / "onpolicy" / "labels" / f"fold{f}.jsonl"))
        assert len(rows) == 2 * 5 and all(c != r for c, r in zip(rows["chosen"], rows["rejected"]))


def test_pair_metrics_with_only_gold_ties_is_none_not_nan():
    """Every pair a gold tie (identical samples): accuracy vs the gold order was NaN (a "Mean of empty slice"
    warning, NaN in analysis.json); the off-policy arm writes None."""
    import warnings

    from pcrm.study.onpolicy import pair_metrics

    pairs = {"prompt": np.array([0]), "a": np.array([0]), "b": np.array([1]), "margin": np.array([0.0])}
    pairs["a_wins"] = np.array([True])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = pair_metrics(np.array([[[0.3, 0.1]]]), pairs, np.array([[4, 4]]))
    assert m["accuracy_gold"] is None and m["accuracy_noisy_labels"] == 1.0
