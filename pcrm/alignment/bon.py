"""`pcrm align --method bon`: best-of-N sampling against proxy reward models, judged by an independent one.

Every held-out prompt gets max(N) samples from the policy. Sample j of every prompt comes from one
pass seeded with `seed + j`, so the samples are generated once, cached (`cache_dir()/bon/`), and a
larger N only adds passes. For each proxy RM and each N the selected response of a prompt is the
proxy's argmax among its first N samples. Reported per (RM, N): the selections' mean proxy reward
(also as gain over the mean of all samples, in units of their std, so RMs of different scale
compare), judge reward, win rate against N = 1 (the first sample) by the judge with a bootstrap
CI, length, and the analytic KL(best-of-N ‖ policy) = log N − (N−1)/N.
"""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pcrm.alignment.rollout import load_prompts, sample
from pcrm.evaluation.metrics import kl_best_of_n, win_rate
from pcrm.io import _warn, atomic_write_text, cache_path, write_cache, write_json
from pcrm.models import default_device


def select_best(scores: np.ndarray, n: int) -> np.ndarray:
    """Per prompt (row), the index of the highest score among its first `n` samples (columns)."""
    return scores[:, :n].argmax(axis=1)


def bon_rows(
    proxy: np.ndarray, judge: np.ndarray | None, lengths: np.ndarray, ns: list[int], bootstrap: int, seed: int
) -> list[dict]:
    """One row per N for one proxy RM; all arrays are [prompts, samples]."""
    rows = []
    for n in ns:
        chosen = select_best(proxy, n)

        def pick(a):
            return a[np.arange(len(a)), chosen]

        row = {
            "n": n,
            "kl": kl_best_of_n(n),
            "proxy": float(pick(proxy).mean()),
            "proxy_gain": float((pick(proxy).mean() - proxy.mean()) / max(proxy.std(), 1e-8)),
            "length": float(pick(lengths).mean()),
        }
        if judge is not None:
            row["judge"] = float(pick(judge).mean())
            row["win_rate"] = win_rate(pick(judge), judge[:, 0], bootstrap, seed)
        rows.append(row)
    return rows


def scale_stats(scores: np.ndarray, judge: np.ndarray | None, lengths: np.ndarray, cap: int | None = None) -> dict:
    """Scale of a reward model's scores on all samples, and their Spearman ρ with the judge's scores and with length.

    Equal lengths share their average rank (ties). Responses cut at `cap` tokens (`--max-new-tokens`) all tie at the
    cap, so ρ then mostly says whether a response ended early: `length_capped` is their share, and
    `spearman_length_uncapped` the ρ over the others (None with fewer than 3 or constant lengths)."""
    from pcrm.evaluation.metrics import finite_or_none, spearman

    scores, lengths = scores.ravel(), lengths.ravel()
    stats = {
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "spearman_length": finite_or_none(spearman(scores, lengths)),
    }
    if cap is not None:
        free = lengths < cap
        stats["length_capped"] = float(1 - free.mean())
        stats["spearman_length_uncapped"] = (
            finite_or_none(spearman(scores[free], lengths[free])) if free.sum() >= 3 else None
        )
    if judge is not None:
        stats["spearman_judge"] = float(spearman(scores, judge.ravel()))
    return stats


def cached_samples(config, prompts: list[str], tokenizer) -> dict:
    """{"responses", "lengths"}: [prompts][max N] sampled responses and their token counts, from the cache when
    possible."""
    from pcrm.models import load_causal_lm, model_fingerprint, resolve_model

    key = {
        "policy": model_fingerprint(resolve_model(config.policy)),
        "prompts": prompts,
        "seed": config.seed,
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "batch_size": config.batch_size,
    }
    path = cache_path("bon", key, ".json")
    passes = _read_passes(path, len(prompts))
    if len(passes) < max(config.n):
        model = load_causal_lm(config.policy).to(default_device(config.device))
        for j in range(len(passes), max(config.n)):
            torch.manual_seed(config.seed + j)
            _, ids, texts = sample(
                model, tokenizer, prompts, config.max_new_tokens, config.temperature, config.batch_size
            )
            passes.append({"responses": texts, "lengths": [len(r) for r in ids]})
            print(f"best-of-N: sampled pass {j + 1}/{max(config.n)}", flush=True)
            write_cache(write_json, path, passes)
    passes = passes[: max(config.n)]
    return {name: [list(row) for row in zip(*(p[name] for p in passes))] for name in ("responses", "lengths")}


def _read_passes(path, n_prompts: int) -> list:
    """Cached sampling passes, verified (one response and length per prompt each); a corrupt file is recomputed with a
    warning."""
    if path is None or not path.exists():
        return []
    try:
        passes = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(passes, list) and all(
            isinstance(p, dict)
            and len(p.get("responses", ())) == n_prompts
            and len(p.get("lengths", ())) == n_prompts
            and all(isinstance(r, str) for r in p["responses"])
            and all(isinstance(n, int) for n in p["lengths"])
            for p in passes
        )
        if not ok:
            raise ValueError("unexpected structure")
        return passes
    except (OSError, ValueError) as err:
        _warn(f"ignoring the corrupt cache file {path} ({err}); resampling")
        return []


def run_bon(config, labels: list[str], output: Path) -> dict:
    from pcrm.models import load_tokenizer

    tokenizer = load_tokenizer(config.policy)
    prompts = load_prompts(
        config.data,
        config.eval_split,
        tokenizer,
        config.max_prompt_length,
        config.prompts,
        config.seed,
        config.data_config,
        config.columns,
        use="best-of-N (held-out)",
    )
    samples = cached_samples(config, prompts, tokenizer)
    flat_prompts = [p for p, row in zip(prompts, samples["responses"]) for _ in row]
    flat_responses = [r for row in samples["responses"] for r in row]
    shape = (len(prompts), max(config.n))

    def score(name):
        from pcrm.scoring import RewardScorer

        scorer = RewardScorer.load(name, config.max_length, default_device(config.device), config.batch_size)
        return scorer.scores(flat_prompts, flat_responses).reshape(shape)

    judge = score(config.judge) if config.judge else None
    lengths = np.array(samples["lengths"], dtype=float)
    proxies = {label: score(name) for label, name in zip(labels, config.reward_model)}
    results = {
        "method": "bon",
        "config": asdict(config),
        "prompts": len(prompts),
        "samples_per_prompt": shape[1],
        "reward_models": {
            label: {
                "path": name,
                "scale": scale_stats(proxies[label], judge, lengths, config.max_new_tokens),
                "rows": bon_rows(proxies[label], judge, lengths, config.n, config.bootstrap, config.seed),
            }
            for label, name in zip(labels, config.reward_model)
        },
    }
    if judge is not None:
        results["judge"] = {"path": config.judge, "scale": scale_stats(judge, judge, lengths, config.max_new_tokens)}
    lines = []
    for i, (prompt, responses) in enumerate(zip(prompts, samples["responses"])):
        for j, response in enumerate(responses):
            scores = {label: float(s[i, j]) for label, s in proxies.items()} | (
                {"judge": float(judge[i, j])} if judge is not None else {}
            )
            lines.append(
                json.dumps({"prompt": prompt, "sample": j, "response": response, "scores": scores}, ensure_ascii=False)
            )
    atomic_write_text(output / "samples.jsonl", "\n".join(lines) + "\n")
    return results


def table_rows(results: dict) -> list[dict]:
    """The best-of-N table: one row per (RM, N), formatted."""
    rows = []
    for label, result in results["reward_models"].items():
        for row in result["rows"]:
            rate = row.get("win_rate")
            rows.append(
                {
                    "reward model": label,
                    "N": str(row["n"]),
                    "KL": f"{row['kl']:.3f}",
                    "proxy": f"{row['proxy']:.3f}",
                    "proxy gain (σ)": f"{row['proxy_gain']:+.2f}",
                    "judge": f"{row['judge']:.3f}" if "judge" in row else "",
                    "win vs N=1 [95% CI]": f"{rate['rate']:.2f} [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]"
                    if rate
                    else "",
                    "length": f"{row['length']:.1f}",
                }
            )
    return rows


def scale_rows(results: dict) -> list[dict]:
    """The reward-scale table: one row per reward model (and the judge), on all samples."""
    models = {**results["reward_models"], **({"judge": results["judge"]} if "judge" in results else {})}

    def number(value):
        return "–" if value is None else f"{value:.3f}"

    rows = []
    for label, m in models.items():
        scale = m["scale"]
        row = {
            "reward model": label,
            "mean ± std": f"{scale['mean']:.3f} ± {scale['std']:.3f}",
            "min / max": f"{scale['min']:.3f} / {scale['max']:.3f}",
            "ρ vs judge": number(scale["spearman_judge"]) if "spearman_judge" in scale else "",
            "ρ vs length (ties: average ranks)": number(scale["spearman_length"]),
        }
        if scale.get("length_capped"):  # ties at the cap: ρ then mostly tells early-ending responses apart
            row |= {
                "responses at the token cap": f"{scale['length_capped']:.0%}",
                "ρ vs length, below the cap": number(scale["spearman_length_uncapped"]),
            }
        rows.append(row)
    return rows


def plot_bon(results: dict, path: Path) -> Path:
    """Proxy gain and judge reward of the selections against KL(best-of-N ‖ policy), one line per RM."""
    from pcrm.plots import new_figure, save_figure

    has_judge = "judge" in next(iter(results["reward_models"].values()))["rows"][0]
    fig, axes = new_figure(ncols=2 if has_judge else 1, width=5.0)
    for i, (label, result) in enumerate(results["reward_models"].items()):
        kl = [row["kl"] for row in result["rows"]]
        axes[0].plot(kl, [row["proxy_gain"] for row in result["rows"]], "o-", color=f"C{i % 10}", label=label)
        if has_judge:
            axes[1].plot(kl, [row["judge"] for row in result["rows"]], "o-", color=f"C{i % 10}", label=label)
    axes[0].set(
        title="best-of-N: proxy reward",
        xlabel="KL(best-of-N ‖ policy) = log N − (N−1)/N",
        ylabel="proxy gain (σ of the samples)",
    )
    if has_judge:
        axes[1].set(
            title="best-of-N: judge reward", xlabel="KL(best-of-N ‖ policy)", ylabel="judge reward of the selections"
        )
    for ax in axes:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
