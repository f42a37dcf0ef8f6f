"""Power before the run: variance components of paired best-of-N differences, the detectable difference of a
design and the prompts a target difference needs, from real proxy scores or simulated proxies of a given ρ.

    .venv/bin/python -m pcrm.study.power [--pool POOL.jsonl] [--study STUDY_DIR]   # the power statement of a pool
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from pcrm.study.estimator import best_of_n_gain
from pcrm.study.pool import DEFAULT_POOL, read_pool


def variance_components(diffs) -> dict:
    """Two-way crossed random-effects decomposition of paired differences d[s, p] (seeds × prompts, no replication):
        d[s, p] = μ + a_s + b_p + e_sp,
        MS_seed = P·Σ_s(d̄_s· − d̄)²/(S−1),  MS_prompt = S·Σ_p(d̄_·p − d̄)²/(P−1),
        MS_res = Σ(d − d̄_s· − d̄_·p + d̄)²/((S−1)(P−1)),
        σ²_e = MS_res,  σ²_seed = max(0, (MS_seed − MS_res)/P),  σ²_prompt = max(0, (MS_prompt − MS_res)/S).
    With one seed the seed and residual terms cannot be separated from the prompt term: all goes to σ²_prompt."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[None] if d.ndim == 1 else d
    s, p = d.shape
    if p < 2:
        raise ValueError("variance components need at least two prompts")
    grand, seed_means, prompt_means = d.mean(), d.mean(axis=1), d.mean(axis=0)
    if s == 1:
        return {
            "seed": 0.0,
            "prompt": float(prompt_means.var(ddof=1)),
            "residual": 0.0,
            "seeds": 1,
            "prompts": p,
            "mean": float(grand),
        }
    ms_seed = p * ((seed_means - grand) ** 2).sum() / (s - 1)
    ms_prompt = s * ((prompt_means - grand) ** 2).sum() / (p - 1)
    ms_res = ((d - seed_means[:, None] - prompt_means[None, :] + grand) ** 2).sum() / ((s - 1) * (p - 1))
    return {
        "seed": float(max(0.0, (ms_seed - ms_res) / p)),
        "prompt": float(max(0.0, (ms_prompt - ms_res) / s)),
        "residual": float(ms_res),
        "seeds": s,
        "prompts": p,
        "mean": float(grand),
    }


def standard_error(components: dict, prompts: int, seeds: int) -> float:
    """SE of the mean paired difference over `prompts` × `seeds`: √(σ²_seed/S + σ²_prompt/P + σ²_e/(S·P))."""
    c = components
    return math.sqrt(c["seed"] / seeds + c["prompt"] / prompts + c["residual"] / (seeds * prompts))


def _z(power: float, alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def detectable_difference(components: dict, prompts: int, seeds: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference a two-sided level-α z-test detects with probability `power` (normal theory):
    δ_min = (z_{1−α/2} + z_power) · SE(P, S)       (2.80·SE at 80% power, α = 0.05)."""
    return _z(power, alpha) * standard_error(components, prompts, seeds)


def prompts_needed(delta: float, components: dict, seeds: int, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Smallest P with detectable_difference ≤ δ: P = ⌈(σ²_prompt + σ²_e/S) / ((δ/z)² − σ²_seed/S)⌉,
    z = z_{1−α/2} + z_power; None when the seed term alone keeps the SE above δ/z (more seeds are needed, not
    prompts)."""
    c = components
    room = (delta / _z(power, alpha)) ** 2 - c["seed"] / seeds
    if room <= 0:
        return None
    return max(2, math.ceil((c["prompt"] + c["residual"] / seeds) / room - 1e-9))


def simulated_proxies(gold, rho: float, seeds: int, rng, samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Proxies of a given within-prompt Spearman ρ with gold: r = c·z + ε, z the gold standardised within each prompt,
    ε ~ N(0, 1), c = ρ_P/√(1 − ρ_P²) with Pearson ρ_P = 2 sin(πρ/6) (exact for Gaussian gold). With `samples`, each
    seed sees a random subset of that many samples per prompt (a smaller pool). Returns (proxies [S, P, m], gold
    [S, P, m])."""
    g = np.asarray(gold, dtype=np.float64)
    sd = g.std(axis=1, keepdims=True)
    z = (g - g.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    pearson = 2 * math.sin(math.pi * rho / 6)
    c = pearson / math.sqrt(1 - pearson**2)
    m = g.shape[1] if samples is None else samples
    pick = np.argsort(rng.random((seeds, *g.shape)), axis=-1)[..., :m]
    zs, gs = (np.take_along_axis(np.broadcast_to(a, (seeds, *g.shape)), pick, axis=-1) for a in (z, g))
    return c * zs + rng.standard_normal(zs.shape), gs


def pool_power(
    gold, ns=(4, 8), rho: float = 0.05, samples: int | None = None, draws: int = 400, seed: int = 0, paired=None
) -> dict:
    """Variance components of paired best-of-N gold-gain differences on a pool, per N.

    With `paired` ({method: [S, P, K] differences vs the baseline at `ns`}, from real proxy scores) the components
    are estimated from them. Without, two methods of equal quality (proxies of within-prompt Spearman `rho`,
    `simulated_proxies`, `draws` simulated seeds each, optionally on `samples`-sample sub-pools) give d[s, p] =
    gain_A − gain_B: the selection-noise floor of a real comparison (a method × prompt interaction adds to it).
    """
    if paired is not None:
        return {m: [variance_components(d[..., k]) for k in range(len(ns))] for m, d in paired.items()}
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(2):
        proxies, golds = simulated_proxies(gold, rho, draws, rng, samples)
        gains.append(np.stack([best_of_n_gain(r, g, ns) for r, g in zip(proxies, golds)]))  # [draws, P, K]
    diff = gains[0] - gains[1]
    # each simulated seed is independent on every prompt, so there is no seed-wide effect by construction (its
    # estimate from MS_seed − MS_res would only add noise, which matters for small targets)
    return {"simulated": [variance_components(diff[..., k]) | {"seed": 0.0} for k in range(len(ns))]}


def power_statement(components: dict, n: int, prompts: int, seeds=(3, 5), target: float = 0.03, what: str = "") -> str:
    """One sentence: the detectable difference of a design (`prompts` × the first of `seeds`) and the prompts a
    `target` difference needs with each number of `seeds`."""

    def need(s):
        count = prompts_needed(target, components, s)
        return f"{count} prompts with {s} seeds" if count else f"more than {s} seeds (the seed term alone exceeds it)"

    sd = math.sqrt(components["prompt"] + components["residual"] / seeds[0])
    return (
        f"{what}best-of-N at N={n}: {prompts} prompts × {seeds[0]} seeds detect a gold difference of "
        f"{detectable_difference(components, prompts, seeds[0]):.3f} at 80% power (two-sided α = 0.05; "
        f"per-prompt SD of the seed-averaged difference {sd:.3f}); {target} needs "
        + ", ".join(need(s) for s in seeds)
        + "."
    )


def _study_paired(study, gold, ns) -> dict | None:
    """{method: [S, P, K] best-of-N gain differences vs BT} from a study folder's scores/METHOD-seedK.npz, if any."""
    files = sorted((Path(study) / "scores").glob("*-seed*.npz")) if study else []
    if not files:
        return None
    by_method: dict[str, list] = {}
    for path in files:
        with np.load(path) as arrays:
            by_method.setdefault(path.stem.rsplit("-seed", 1)[0], []).append(best_of_n_gain(arrays["pool"], gold, ns))
    if "bt" not in by_method:
        return None
    bt = np.stack(by_method.pop("bt"))
    return {m: np.stack(g)[: len(bt)] - bt[: len(g)] for m, g in by_method.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Power statement of the gold-reward study for a pool")
    parser.add_argument("--pool", default=None, help="default: the study's pool/pool.jsonl, else the shipped pool")
    parser.add_argument("--study", default=None, help="a study folder with scores/METHOD-seedK.npz (real proxies)")
    shipped_fit = Path(__file__).resolve().parents[2] / "docs" / "results" / "overoptimization" / "fit.json"
    parser.add_argument(
        "--fit",
        default=str(shipped_fit),
        help="a study's fit.json: the proxies' within-prompt ρ calibrates the simulated proxies",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.03)
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args(argv)
    study_pool = Path(args.study or ".") / "pool" / "pool.jsonl"
    args.pool = args.pool or str(study_pool if args.study and study_pool.is_file() else DEFAULT_POOL)
    _, _, gold = read_pool(args.pool)
    prompts, n = gold.shape
    ns = [k for k in (4, 8) if k <= n]
    rho = 0.05
    if Path(args.fit).is_file():
        rows = json.loads(Path(args.fit).read_text())["per_proxy"].values()
        rho = float(np.mean([r["spearman_within_prompt"] for r in rows if r.get("spearman_within_prompt") is not None]))
    paired = _study_paired(args.study, gold, ns)
    print(f"pool {args.pool}: {prompts} prompts × {n} samples, gold std {gold.std():.3f}")
    if paired:
        for method, comps in pool_power(gold, ns, paired=paired).items():
            for k, c in zip(ns, comps):
                print(power_statement(c, k, prompts, (args.seeds, 5), args.target, f"{method} − bt, "))
        return
    print(
        f"no per-sample proxy scores found; simulated proxies of within-prompt Spearman ρ = {rho:.3f} "
        f"(mean of {args.fit}), {args.draws} simulated seeds per method"
    )
    for samples in dict.fromkeys((n, min(n, 16))):
        comps = pool_power(gold, ns, rho=rho, samples=samples, draws=args.draws)["simulated"]
        for k, c in zip(ns, comps):
            if k <= samples // 2:
                print(power_statement(c, k, prompts, (args.seeds, 5), args.target, f"{samples} samples per prompt, "))


if __name__ == "__main__":
    main()
