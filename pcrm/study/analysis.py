"""The whole analysis of the study for a dict of methods' per-sample pool scores against a baseline: every curve
with its random-selector band and paired difference, the Gao test of β > 0, and the findings."""

from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from pcrm.evaluation.metrics import kl_best_of_n
from pcrm.study.estimator import best_of_n_gain, default_ns
from pcrm.study.findings import bend_record, difference_records, findings, null_records
from pcrm.study.inference import as_seeds, gao_test, null_band, null_draws, paired_difference, within_prompt_spearman
from pcrm.study.policy import FIXED_BETAS, fixed_beta_table, frontier_gain, pool_scale, standardise, tilted_gain

# Bumped when analysis.json's content changes for the same inputs, so that a cached analysis is re-derived.
ANALYSIS_VERSION = 2


class Estimator(NamedTuple):
    """A per-prompt curve estimator `function(proxy, gold)` -> [P, K], the labels of its K points, the index of
    its headline point, whether it depends on the scale of the scores (else on their ranks only), and whether it
    reads the scores standardised per reward model (`standardise`) rather than raw."""

    function: Callable
    labels: list[str]
    headline: int
    scale_dependent: bool
    standardised: bool = False


def _estimators(n: int, ns, betas, kl_targets, headline_n, headline_beta: float):
    """(ns, kl_targets, {name: Estimator}) with the defaults of `analyse` filled in for a pool of `n` samples."""
    ns = default_ns(n) if ns is None else list(ns)
    headline_n = ns[-1] if headline_n is None else headline_n
    kl_targets = [kl_best_of_n(k) for k in ns] if kl_targets is None else list(kl_targets)
    if headline_beta not in betas or headline_n not in ns:
        raise ValueError("headline_beta must be one of betas and headline_n one of ns")
    at_beta = list(betas).index(headline_beta)
    estimators = {
        "best-of-N": Estimator(
            partial(best_of_n_gain, ns=ns), [f"gold gain at N={k}" for k in ns], ns.index(headline_n), False
        ),
        "tilted raw": Estimator(
            partial(tilted_gain, betas=betas),
            [f"gold gain of π_β at β={b:g} (raw rewards)" for b in betas],
            at_beta,
            True,
        ),
        "tilted standardised": Estimator(
            partial(tilted_gain, betas=betas),
            [f"gold gain of π_β at β={b:g} (standardised rewards)" for b in betas],
            at_beta,
            True,
            standardised=True,
        ),
        "frontier": Estimator(
            partial(frontier_gain, kl_targets=kl_targets),
            [f"frontier gold gain at KL={t:.2f}" for t in kl_targets],
            int(np.argmin(np.abs(np.asarray(kl_targets) - kl_best_of_n(headline_n)))),
            True,
        ),
    }
    return ns, kl_targets, estimators


def _null(name: str, estimator: Estimator, gold, scores, draws: int, seed: int, index: int, shared: dict):
    """Random-selector curves [draws, K] for a method's `scores` (the method's `index` seeds its permutations).
    A rank-only estimator's null depends on the number of seeds only, so `shared` keeps it for every method."""
    if estimator.scale_dependent:
        return null_draws(estimator.function, gold, scores=scores, draws=draws, seed=seed + 1 + index)
    key = (name, scores.shape[0])
    if key not in shared:
        shared[key] = null_draws(estimator.function, gold, seeds=scores.shape[0], draws=draws, seed=seed)
    return shared[key]


def _method_summary(scores, gold, betas, groups) -> dict:
    return {
        "seeds": int(scores.shape[0]),
        "spearman_within_prompt": float(np.nanmean([within_prompt_spearman(r, gold)["mean"] for r in scores])),
        "scale": pool_scale(scores, groups),
        "fixed_beta": fixed_beta_table(scores, gold, betas, groups),
        "curves": {},
    }


def _curve_tests(method: str, baseline: str, estimator: Estimator, gains, baseline_gains, null, n_boot, seed, scheme):
    """A method's curve with its null band (and paired difference vs the baseline), and the test records of its
    headline point."""
    curve, head = gains.mean(axis=(0, 1)), estimator.headline
    label = [estimator.labels[head]]
    entry = {"labels": estimator.labels, "gain": curve.tolist(), **{k: v.tolist() for k, v in null_band(null).items()}}
    records = null_records(method, label, curve[[head]], null[:, [head]])
    if method != baseline:
        diff = paired_difference(gains, baseline_gains, n_boot, seed, scheme=scheme)
        entry["vs_baseline"] = {k: v.tolist() for k, v in diff.items()}
        records += difference_records(method, baseline, label, {k: v[[head]] for k, v in diff.items()})
    return entry, records


def tested_ns(pool_size: int) -> list[int] | None:
    """The best-of-N points the analysis tests: N = 2, 4, … ≤ pool/4 (`default_ns`), or every N ≥ 2 of a small pool
    (the fit needs two); None when the pool has fewer than 3 samples per prompt."""
    ns = default_ns(pool_size)
    ns = ns if len(ns) >= 2 else list(range(2, pool_size + 1))
    return ns if len(ns) >= 2 else None


def figure_curves(gold, scores: dict, points: int = 16) -> dict:
    """Dense curves for the figures, mean over seeds and prompts: best-of-N gold gain for N = 1..n and the frontier's
    gold gain on a KL grid 0..log n (`points` values), per method and for the gold RM itself (the oracle)."""
    n = gold.shape[1]
    ns, grid = list(range(1, n + 1)), np.linspace(0.0, np.log(n), points).tolist()

    def curves(s):
        return {
            "best-of-N": np.mean([best_of_n_gain(r, gold, ns).mean(axis=0) for r in s], axis=0).tolist(),
            "frontier": np.mean([frontier_gain(r, gold, grid).mean(axis=0) for r in s], axis=0).tolist(),
        }

    return {
        "n": ns,
        "kl_n": [kl_best_of_n(k) for k in ns],
        "kl_grid": grid,
        "oracle": curves(gold[None]),
        "methods": {m: curves(s) for m, s in scores.items()},
    }


def analyse(
    gold,
    scores: dict,
    baseline: str = "bt",
    ns=None,
    betas=FIXED_BETAS,
    kl_targets=None,
    headline_n: int | None = None,
    headline_beta: float = 0.1,
    n_boot: int = 2000,
    draws: int = 1000,
    seed: int = 0,
    scheme: str = "within",
    alpha: float = 0.05,
    groups=None,
) -> dict:
    """Every estimator and test of the study for `scores` ({method: [S, P, n] proxy scores of the pool}) against
    `baseline`, and the findings.

    Curves per method (mean over seeds and prompts, each with its random-selector band): best-of-N gain at `ns`
    (default `default_ns`), the tilted policy's gain at fixed `betas` (raw and standardised rewards) and on the
    frontier at `kl_targets` (default: best-of-N's KL at `ns`). Paired differences vs the baseline on every curve.
    The test family of the findings (chosen before the run): per method the difference vs the baseline and the
    null test at the headline points (best-of-N at `headline_n`, default the largest N; π_β at `headline_beta` raw
    and standardised; the frontier at best-of-N's KL for `headline_n`), and the Gao β > 0 test on the best-of-N curve
    at `ns` (N ≤ pool/4 by default: the range where best-of-N on the pool is well estimated).

    `groups` ([P]) says which reward model scored each prompt when there are several per seed (the on-policy folds):
    standardised rewards and the reported scale are then per reward model, never pooled across their offsets.
    """
    gold = np.asarray(gold, dtype=np.float64)
    ns, kl_targets, estimators = _estimators(gold.shape[1], ns, betas, kl_targets, headline_n, headline_beta)
    scores = {m: as_seeds(np.asarray(s, dtype=np.float64)) for m, s in scores.items()}
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(scores)}")
    standardised = {m: np.stack([standardise(r, groups) for r in s]) for m, s in scores.items()}
    inputs = {name: standardised if e.standardised else scores for name, e in estimators.items()}
    per = {
        m: {name: np.stack([e.function(r, gold) for r in inputs[name][m]]) for name, e in estimators.items()}
        for m in scores
    }
    out = {"ns": ns, "betas": list(betas), "kl_targets": kl_targets, "methods": {}, "records": []}
    out["oracle"] = {name: e.function(gold, gold).mean(axis=0).tolist() for name, e in estimators.items()}
    shared_nulls = {}
    for i, (method, s) in enumerate(scores.items()):
        entry = _method_summary(s, gold, betas, groups)
        for name, e in estimators.items():
            null = _null(name, e, gold, inputs[name][method], draws, seed, i, shared_nulls)
            gains = per[method][name]
            entry["curves"][name], records = _curve_tests(
                method, baseline, e, gains, per[baseline][name], null, n_boot, seed, scheme
            )
            out["records"] += records
            if name == "best-of-N":
                d = np.sqrt([kl_best_of_n(k) for k in ns])
                entry["gao"] = gao_test(d, gains, null, n_boot=n_boot, seed=seed, scheme=scheme)
                out["records"].append(bend_record(method, "best-of-N gold curve", entry["gao"]))
        out["methods"][method] = entry
    out["findings"] = findings(out["records"], alpha)
    out["figure"] = figure_curves(gold, scores)
    return out
