"""The on-policy arm of the study (the design of Gao, Schulman & Hilton 2022): proxies trained on gold-labelled
comparisons of the policy's own samples, cross-fitted by prompt folds of the pool.

The pool's prompts are split into `--folds` seeded folds. Within every prompt `--pairs-per-prompt` distinct pairs of
its samples are drawn (disjoint pairs first: each sample in one pair) and labelled with the off-policy arm's
Bradley–Terry noise, P(a ≻ b) = σ((g_a − g_b)/τ), τ = 0.5 × the std of these pairs' gold margins unless
`--label-noise`. The proxy of fold f is trained on the pairs of the *other* folds' prompts and scores only fold f's
prompts, so no proxy scores a prompt whose samples it saw; the fold proxies' scores together make one
[prompts, samples] matrix per (method, seed). Every pair of a prompt is then held out for the proxy that scored it:
the pair accuracies below need no extra scoring.

Folder onpolicy/ of a study:

    labels/pairs.npz          prompt, a, b (sample indices), a_wins (noisy label), fold of each pair's prompt
    labels/foldF.jsonl        training pairs of fold F's proxies (chosen = the noisy winner)
    labels/summary.json       τ, pairs, flip rate
    proxies/METHOD-seedK-foldF/   reward-model directories (pcrm train-rm)
    scores/METHOD-seedK.npz   pool [P, n] (each prompt scored by its fold's proxy), fold [P]
    analysis.json             `pcrm.study.analysis.analyse` of the arm, the ensembles, and per-method pair accuracy
                              and length bias; `settings`: the proxies and --uwo-lambda it was made with
"""

import json
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError
from pcrm.io import atomic_write_text, write_json, write_npz
from pcrm.study.labels import default_tau, expected_flip_rate, noisy_preferences
from pcrm.study.pool import read_pool

ARM = "onpolicy"


def prompt_folds(prompts: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each prompt [P]: a seeded permutation dealt round-robin, so fold sizes differ by at most one."""
    fold = np.empty(prompts, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(prompts)] = np.arange(prompts) % folds
    return fold


def draw_pairs(n: int, count: int, rng) -> np.ndarray:
    """`count` distinct unordered pairs of n samples [count, 2]: disjoint pairs of successive seeded permutations
    (the first n // 2 pairs use each sample at most once), repeats skipped."""
    if not 1 <= count <= n * (n - 1) // 2:
        raise ValueError(f"pairs per prompt must be in 1..{n * (n - 1) // 2} for {n} samples, got {count}")
    seen, pairs = set(), []
    while len(pairs) < count:
        order = rng.permutation(n)
        for a, b in zip(order[0::2], order[1::2]):
            key = (min(a, b), max(a, b))
            if key not in seen and len(pairs) < count:
                seen.add(key)
                pairs.append((int(a), int(b)))
    return np.asarray(pairs, dtype=np.int64)


def label_pairs(gold, fold, pairs_per_prompt: int, label_noise: float | None, seed: int) -> dict:
    """The arm's comparison pairs of every prompt with their noisy labels: {prompt, a, b, a_wins, fold, margin,
    tau}."""
    gold = np.asarray(gold, dtype=np.float64)
    rng = np.random.default_rng(seed)
    drawn = [draw_pairs(gold.shape[1], pairs_per_prompt, rng) for _ in range(gold.shape[0])]
    prompt = np.repeat(np.arange(gold.shape[0]), pairs_per_prompt)
    a, b = np.concatenate(drawn).T
    margin = gold[prompt, a] - gold[prompt, b]
    tau = default_tau(margin) if label_noise is None else float(label_noise)
    a_wins = noisy_preferences(gold[prompt, a], gold[prompt, b], tau, seed + 1)
    return {"prompt": prompt, "a": a, "b": b, "a_wins": a_wins, "fold": fold[prompt], "margin": margin, "tau": tau}


def _trainable(responses, pairs: dict) -> np.ndarray:
    """Pairs whose two responses both have text (a trainer refuses an empty reply) and differ (two identical samples
    carry no preference signal, only the label noise); such samples stay in the pool."""
    a = [bool(responses[p][i].strip()) for p, i in zip(pairs["prompt"], pairs["a"])]
    b = [bool(responses[p][i].strip()) for p, i in zip(pairs["prompt"], pairs["b"])]
    return np.logical_and(np.logical_and(a, b), ~_identical(responses, pairs))


def _identical(responses, pairs: dict) -> np.ndarray:
    return np.array([responses[p][i] == responses[p][j] for p, i, j in zip(pairs["prompt"], pairs["a"], pairs["b"])])


def _write_fold(path: Path, prompts, responses, pairs: dict, rows) -> None:
    lines = []
    for i in np.flatnonzero(rows):
        p, a, b = pairs["prompt"][i], pairs["a"][i], pairs["b"][i]
        win, lose = (a, b) if pairs["a_wins"][i] else (b, a)
        row = {"prompt": prompts[p], "chosen": responses[p][win], "rejected": responses[p][lose]}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))


def check_pool(config, prompts: int, samples: int) -> int:
    """--folds and --pairs-per-prompt against the pool's shape (a --pool file's, not --prompts/--pool-size); returns
    the pairs per prompt."""
    count = config.pairs_per_prompt or samples // 2
    if count > samples * (samples - 1) // 2:
        raise PcrmError(f"--pairs-per-prompt {count}: the pool has only {samples} samples per prompt")
    if prompts < config.folds:
        raise PcrmError(f"--folds {config.folds}: the pool has only {prompts} prompts (every fold needs one)")
    return count


def stage_labels(config, out: Path) -> dict:
    """Folds, pairs and noisy labels of the pool; each fold's training pairs (the other folds' prompts)."""
    folder = out / ARM / "labels"
    prompts, responses, gold = read_pool(out / "pool" / "pool.jsonl")
    count = check_pool(config, len(prompts), gold.shape[1])
    fold = prompt_folds(len(prompts), config.folds, config.label_seed)
    pairs = label_pairs(gold, fold, count, config.label_noise, config.label_seed)
    trainable = _trainable(responses, pairs)
    for f in range(config.folds):
        _write_fold(folder / f"fold{f}.jsonl", prompts, responses, pairs, (pairs["fold"] != f) & trainable)
    strict = pairs["margin"] != 0
    summary = {
        "folds": config.folds,
        "prompts": len(prompts),
        "pairs_per_prompt": count,
        "pairs": int(len(pairs["a"])),
        "train_pairs_per_fold": [int(((pairs["fold"] != f) & trainable).sum()) for f in range(config.folds)],
        "pairs_with_an_empty_response": int((~trainable & ~_identical(responses, pairs)).sum()),
        "pairs_with_identical_responses": int(_identical(responses, pairs).sum()),
        "tau": pairs["tau"],
        "tau_rule": "0.5 × std of the gold margins of the pairs" if config.label_noise is None else "--label-noise",
        "gold_margin_std": float(np.std(pairs["margin"])),
        "expected_flip_rate": expected_flip_rate(pairs["margin"], pairs["tau"]),
        "noisy_vs_gold_agreement": float(np.mean(pairs["a_wins"][strict] == (pairs["margin"][strict] > 0))),
    }
    write_npz(folder / "pairs.npz", {k: v for k, v in pairs.items() if k != "tau"})
    write_json(folder / "summary.json", summary)  # written last: the stage's "done" marker
    print(
        f"on-policy labels: {summary['pairs']} pairs of {len(prompts)} prompts in {config.folds} folds, "
        f"τ = {pairs['tau']:.4g}; noisy labels agree with the gold order on {summary['noisy_vs_gold_agreement']:.3f}",
        flush=True,
    )
    return summary


def proxy_dirs(config, out: Path) -> dict[str, dict[int, Path]]:
    """label ("METHOD-seedK") -> {fold: directory of its fold proxy}."""
    return {
        f"{method}-seed{seed}": {f: out / ARM / "proxies" / f"{method}-seed{seed}-fold{f}" for f in range(config.folds)}
        for method in config.methods
        for seed in config.seeds
    }


def stage_proxies(config, out: Path) -> list[str]:
    """Train every fold proxy not trained yet on its fold's pairs; returns the directories' names trained now."""
    from pcrm.study.proxies import train_proxy

    trained = []
    for label, folds in proxy_dirs(config, out).items():
        method, seed = label.rsplit("-seed", 1)
        for f, directory in folds.items():
            if (directory / "pcrm_config.json").is_file():
                continue
            print(f"== on-policy proxies: training {directory.name}", flush=True)
            train_proxy(config, method, int(seed), directory, out / ARM / "labels" / f"fold{f}.jsonl")
            trained.append(directory.name)
    return trained


def load_pairs(out: Path) -> dict[str, np.ndarray]:
    """The arm's labelled pairs (labels/pairs.npz)."""
    with np.load(out / ARM / "labels" / "pairs.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}


def saved_folds(pairs: dict, prompts: int) -> np.ndarray:
    """Fold of each prompt [P], read back from its pairs (every prompt has at least one)."""
    fold = np.empty(prompts, dtype=np.int64)
    fold[pairs["prompt"]] = pairs["fold"]
    return fold


def score_cross_fitted(config, out: Path, folds: dict[int, Path]) -> dict:
    """Scores of the pool [P, n], each prompt's samples by the proxy of its fold (which never saw them)."""
    from pcrm.models import default_device
    from pcrm.scoring import RewardScorer

    prompts, responses, gold = read_pool(out / "pool" / "pool.jsonl")
    fold = saved_folds(load_pairs(out), len(prompts))
    scores = np.full(gold.shape, np.nan)
    for f, directory in folds.items():
        rows = np.flatnonzero(fold == f)
        scorer = RewardScorer.load(directory, config.max_length, default_device(config.device), config.score_batch_size)
        texts_p = [prompts[i] for i in rows for _ in responses[i]]
        texts_r = [r for i in rows for r in responses[i]]
        scores[rows] = scorer.responses(texts_p, texts_r, config.progress).reshape(len(rows), -1)
    return {"pool": scores, "fold": fold}


def stage_scores(config, out: Path) -> list[str]:
    """Every (method, seed) scores the pool once, cross-fitted (scores/LABEL.npz); returns the labels scored now."""
    from pcrm.study.proxies import score_missing

    def score(folds):
        return score_cross_fitted(config, out, folds)

    return score_missing(proxy_dirs(config, out), out / ARM / "scores", score, "on-policy (cross-fitted)")


def load_scores(config, out: Path) -> dict[str, np.ndarray]:
    """method -> [seeds, P, n] cross-fitted pool scores."""
    scores = {}
    for label in proxy_dirs(config, out):
        with np.load(out / ARM / "scores" / f"{label}.npz") as arrays:
            scores.setdefault(label.rsplit("-seed", 1)[0], []).append(arrays["pool"])
    return {method: np.stack(s) for method, s in scores.items()}


def pair_metrics(scores, pairs: dict, lengths) -> dict:
    """Held-out pair accuracy of [S, P, n] `scores` against the noiseless gold order (gold ties dropped) and the noisy
    labels, and length bias (`pcrm.study.inference.length_bias` on the gold order; response length `lengths` [P, n]),
    each the mean over seeds."""
    from pcrm.evaluation.metrics import accuracy
    from pcrm.study.inference import length_bias

    prompt, a, b, margin = pairs["prompt"], pairs["a"], pairs["b"], pairs["margin"]
    strict = margin != 0
    chosen = np.where(margin > 0, a, b)[strict] + prompt[strict] * scores.shape[-1]
    rejected = np.where(margin > 0, b, a)[strict] + prompt[strict] * scores.shape[-1]
    noisy = np.where(pairs["a_wins"], 1.0, -1.0)
    rows = []
    for s in np.asarray(scores, dtype=np.float64):
        diff = s[prompt, a] - s[prompt, b]
        bias = length_bias(s.ravel(), np.asarray(lengths).ravel(), chosen, rejected)
        rows.append(
            {
                "accuracy_gold": float(accuracy((diff * np.sign(margin))[strict])) if strict.any() else None,
                "accuracy_noisy_labels": float(accuracy(diff * noisy)),
                **{k: v for k, v in bias.items() if not k.startswith("pairs_")},
            }
        )
    return {
        key: None if any(r[key] is None for r in rows) else float(np.mean([r[key] for r in rows])) for key in rows[0]
    }


def stage_analysis(config, out: Path, n_boot: int = 2000, draws: int = 1000) -> dict:
    """`analyse` of the arm's cross-fitted scores with the BT ensembles added, per-method pair accuracy and length
    bias (onpolicy/analysis.json)."""
    from pcrm.study.analysis import analyse, tested_ns
    from pcrm.study.proxies import ensemble_scores

    prompts, responses, gold = read_pool(out / "pool" / "pool.jsonl")
    scores = load_scores(config, out)
    pairs = load_pairs(out)
    fold = saved_folds(pairs, gold.shape[0])
    scores |= ensemble_scores(scores.get("bt"), config.uwo_lambda, groups=fold)  # members standardised per fold
    lengths = np.array([[len(r) for r in row] for row in responses])
    ns, result = tested_ns(gold.shape[1]), {}
    if "bt" in scores and ns:
        result = analyse(gold, scores, ns=ns, n_boot=n_boot, draws=draws, groups=fold)
        result["pairs"] = {method: pair_metrics(s, pairs, lengths) for method, s in scores.items()}
        result["length_unit"] = "characters"
    result["settings"] = analysis_settings(config, proxy_dirs(config, out))
    write_json(out / ARM / "analysis.json", result)
    return result


def analysis_settings(config, proxies) -> dict:
    """What an arm's analysis.json depends on beyond its cached inputs: the proxies it covers (--methods, --seeds)
    and --uwo-lambda (and the analysis's version); a cached analysis made with others is re-derived."""
    from pcrm.study.analysis import ANALYSIS_VERSION

    return {"proxies": list(proxies), "uwo_lambda": config.uwo_lambda, "version": ANALYSIS_VERSION}


def run_arm(config, out: Path, upstream: bool) -> tuple[dict, dict, bool]:
    """The arm's stages in order (labels, proxies, scores, analysis), each skipped when its output exists; the
    analysis re-runs when anything before it ran (or `upstream`). Returns (labels summary, analysis, whether
    anything ran)."""
    folder = out / ARM
    cached = (folder / "labels" / "summary.json").is_file()
    labels = json.loads((folder / "labels" / "summary.json").read_text()) if cached else stage_labels(config, out)
    ran = not cached or upstream
    ran = bool(stage_proxies(config, out)) or ran
    ran = bool(stage_scores(config, out)) or ran
    if not ran and (folder / "analysis.json").is_file():
        saved = json.loads((folder / "analysis.json").read_text())
        if saved.get("settings") == analysis_settings(config, proxy_dirs(config, out)):
            return labels, saved, False
    return labels, stage_analysis(config, out), True
