"""How reward-model training time grows with the number of pairs and with the batch size.

One epoch of pcrm's trainer (default: cosine prior, δ* cached) on nested subsets of 1×, 2×
and 4× a base number of pairs (same batch size), and on a fixed set of pairs at batch sizes
½×, 1× and 2× the default. Runs are interleaved; medians. The exponent is the least-squares
slope of log(time) on log(size): 1 is linear growth. Targets: epoch time vs pairs ≈ linear
(exponent ≤ 1.1); time per step vs batch size at most linear (exponent ≤ 1.1), i.e. the
epoch over the same pairs does not get slower with bigger batches.
"""

import sys

import benchlib
import numpy as np


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("scaling", __doc__, pairs=16, repeats=2)
    p.add_argument("--method", default="cosine", help="pcrm's loss")
    p.add_argument("--encoder", default="minilm", help="sentence encoder of the cosine prior")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4], help="dataset sizes, in multiples of --pairs")
    args = benchlib.parse(p, argv, pairs=4, repeats=1, batch_size=2, max_length=32)

    def trainer(pairs, batch_size):
        config = benchlib.bench_config(
            model=args.model,
            data=args.data,
            split=args.split,
            method=args.method,
            encoder=args.encoder,
            batch_size=batch_size,
            max_length=args.max_length,
            max_pairs=pairs,
        )
        return benchlib.build_pcrm_trainer(config)[0]

    sizes = [args.pairs * f for f in args.factors]
    batch_sizes = sorted({max(1, args.batch_size // 2), args.batch_size, args.batch_size * 2})
    fixed_pairs = args.pairs * 2
    variants = {("pairs", n): trainer(n, args.batch_size) for n in sizes}
    variants.update({("batch_size", b): trainer(fixed_pairs, b) for b in batch_sizes})
    benchlib.share_model(variants.values())
    benchlib.warm_up(variants.values())
    runs = benchlib.interleave(
        {key: (lambda t=t: benchlib.run_training(t)) for key, t in variants.items()}, repeats=args.repeats, warmup=0
    )

    rows = []
    for (axis, value), rs in runs.items():
        epoch = benchlib.median([r["epoch_seconds"] for r in rs])
        pairs = len(variants[(axis, value)].train_dataset)
        rows.append(
            {
                "axis": axis,
                "pairs": pairs,
                "batch_size": args.batch_size if axis == "pairs" else value,
                "steps": rs[0]["steps"],
                "epoch_s_median": epoch,
                "epoch_s_min": min(r["epoch_seconds"] for r in rs),
                "step_s": epoch / rs[0]["steps"],
                "pairs_per_s": pairs / epoch,
                "real_tok_per_s": rs[0]["real_tokens"] / epoch,
            }
        )
    by_pairs = [r for r in rows if r["axis"] == "pairs"]
    by_batch = [r for r in rows if r["axis"] == "batch_size"]
    figures = {
        "exponent_epoch_time_vs_pairs": benchlib.target(
            benchlib.loglog_slope([r["pairs"] for r in by_pairs], [r["epoch_s_median"] for r in by_pairs]), 1.1, "<="
        ),
        "exponent_step_time_vs_batch_size": benchlib.target(
            benchlib.loglog_slope([r["batch_size"] for r in by_batch], [r["step_s"] for r in by_batch]), 1.1, "<="
        ),
        "exponent_epoch_time_vs_batch_size": benchlib.loglog_slope(
            [r["batch_size"] for r in by_batch], [r["epoch_s_median"] for r in by_batch]
        ),
    }
    # time = fixed + per_pair · pairs: what an epoch costs per pair, and once (dataloader, optimizer, first step)
    per_pair, fixed = np.polyfit([r["pairs"] for r in by_pairs], [r["epoch_s_median"] for r in by_pairs], 1)
    figures.update(linear_fit_seconds_per_pair=float(per_pair), linear_fit_fixed_seconds=float(fixed))
    raw = {
        f"{axis}={value}": [{k: r[k] for k in ("epoch_seconds", "steps", "real_tokens", "padded_tokens")} for r in rs]
        for (axis, value), rs in runs.items()
    }
    return benchlib.report(args, rows, figures, raw=raw, load_before=load_before)


if __name__ == "__main__":
    main(sys.argv[1:])
