"""The README table of a full `pcrm reproduce` run: mean ± std over seeds of the held-out statistics, and the
paired accuracy difference of every method against BT with a 95% bootstrap CI over seeds and pairs.

    .venv/bin/python scripts/reproduction_table.py runs/reproduce-full

Paired difference: for seed s and held-out pair i, credit(m, s, i) − credit(bt, s, i) (credit 1 / ½ / 0 for a
correct / tied / wrong pair); its mean over seeds and pairs is the estimate. The CI resamples seeds and pairs
jointly (two-level bootstrap, 2,000 resamples, seed 0), so it carries both the seed-to-seed and the pair noise.
"""

import json
import sys
from pathlib import Path

import numpy as np

KEYS = (
    ("accuracy", "accuracy"),
    ("margin_std", "margin std"),
    ("margin_p95", "margin p95"),
    ("frac_above_delta_length", "> δ* length"),
    ("frac_above_delta_cosine", "> δ* cosine"),
)


def credits(evaluation: Path) -> dict[str, dict[int, np.ndarray]]:
    """method -> seed -> per-pair credit on the held-out pairs, from `pcrm evaluate`'s arrays."""
    metrics = json.loads((evaluation / "metrics.json").read_text())
    out: dict[str, dict[int, np.ndarray]] = {}
    for result in metrics["results"]:
        method, seed = result["model"].rsplit("-seed", 1)
        with np.load(evaluation / result["arrays"]) as arrays:
            margin = arrays["score"][arrays["chosen"]] - arrays["score"][arrays["rejected"]]
        out.setdefault(method, {})[int(seed)] = (np.sign(margin) + 1) / 2
    return out


def paired_difference(
    method: dict[int, np.ndarray], bt: dict[int, np.ndarray], resamples: int = 2000
) -> tuple[float, float, float]:
    seeds = sorted(set(method) & set(bt))
    diff = np.stack([method[s] - bt[s] for s in seeds])  # [seeds, pairs]
    rng = np.random.default_rng(0)
    boot = np.empty(resamples)
    for b in range(resamples):
        rows = rng.integers(0, diff.shape[0], diff.shape[0])
        cols = rng.integers(0, diff.shape[1], diff.shape[1])
        boot[b] = diff[np.ix_(rows, cols)].mean()
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(diff.mean()), float(low), float(high)


def main(folder: str) -> None:
    root = Path(folder)
    rows = {}
    for model in sorted((root / "models").iterdir()):
        saved = json.loads((model / "pcrm_config.json").read_text())
        rows.setdefault(saved["method"], []).append({**saved["heldout"], "train_seconds": saved["train_seconds"]})
    paired = credits(root / "evaluation")
    order = [m for m in ("bt", "length", "cosine", "fixed", "random", "lower-margin", "center") if m in rows]
    header = ["method", "seeds", *(label for _, label in KEYS), "Δ accuracy vs BT [95% CI]", "train s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method in order:
        runs = rows[method]
        cells = [method, str(len(runs))]
        for key, _ in KEYS:
            values = np.array([r[key] for r in runs], dtype=float)
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1):.3f}")
        if method == "bt":
            cells.append("—")
        else:
            d, low, high = paired_difference(paired[method], paired["bt"])
            cells.append(f"{d:+.3f} [{low:+.3f}, {high:+.3f}]")
        cells.append(f"{np.mean([r['train_seconds'] for r in runs]):.0f}")
        print("| " + " | ".join(cells) + " |")
    summary = json.loads((root / "summary.json").read_text())
    print(f"\nwall time of the whole reproduction: {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduce-full")
