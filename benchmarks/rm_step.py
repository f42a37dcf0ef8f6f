"""Reward-model training step time: PCRM (length, cosine priors) vs the plain ranking (BT) loss.

δ* is precomputed per pair (cached), so the constraint adds one elementwise term to the loss
and one float per pair to the batch: a PCRM step should cost what a BT step costs (target ≤ 1.02×).
All three trainers are built by `pcrm.trainers.reward.build_trainer` on the same data, batch
size and max_length, and train one shared model object; they see the same batches (same seed
and sampler) and their repetitions are interleaved. The loss terms alone are also timed (forward + backward) to show
the size of the difference in isolation.
"""

import sys
import timeit

import benchlib

METHODS = ("bt", "length", "cosine")


def loss_microbenchmark(batch_size: int, number: int) -> dict:
    """Microseconds of forward + backward of the BT loss and of the PCRM loss on a batch of rewards."""
    import torch

    from pcrm import losses

    chosen = torch.randn(batch_size, requires_grad=True)
    rejected = torch.randn(batch_size, requires_grad=True)
    delta = torch.rand(batch_size) + 0.5

    def bt():
        losses.bradley_terry_loss(chosen, rejected).mean().backward()

    def pcrm():
        losses.pcrm_loss(chosen, rejected, delta).mean().backward()

    samples = benchlib.interleave(
        {"bt": lambda: timeit.timeit(bt, number=number), "pcrm": lambda: timeit.timeit(pcrm, number=number)}, repeats=5
    )
    return {name: 1e6 * benchlib.median(values) / number for name, values in samples.items()}


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("rm_step", __doc__, steps=4, pairs=256, repeats=6)
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="variants (the first is the baseline)"
    )
    p.add_argument("--unit", default="tokens", help="length unit of the length prior")
    p.add_argument("--encoder", default="minilm", help="sentence encoder of the cosine prior")
    args = benchlib.parse(p, argv, steps=3, repeats=1, pairs=32, batch_size=2, max_length=32)

    trainers = {}
    for method in args.methods:
        config = benchlib.bench_config(
            model=args.model,
            data=args.data,
            split=args.split,
            method=method,
            unit=args.unit,
            encoder=args.encoder,
            batch_size=args.batch_size,
            max_length=args.max_length,
            max_pairs=args.pairs,
        )
        trainers[method], _, facts = benchlib.build_pcrm_trainer(config)
    runs, wall, cpu, shapes = benchlib.time_trainers(trainers, args.steps, args.repeats)
    micro = loss_microbenchmark(args.batch_size, 200 if args.quick else 2000)

    base = args.methods[0]
    rows, figures = [], {}
    for method in args.methods:
        ratio = benchlib.median(wall[method]) / benchlib.median(wall[base])
        cpu_ratio = benchlib.median(cpu[method]) / benchlib.median(cpu[base])
        # paired ratios: each repetition's median against the baseline's in the same round
        paired = [
            benchlib.median(a["step_seconds"]) / benchlib.median(b["step_seconds"])
            for a, b in zip(runs[method], runs[base])
        ]
        rows.append(
            {
                "method": method,
                "step_s_median": benchlib.median(wall[method]),
                "step_s_min": min(wall[method]),
                "cpu_s_median": benchlib.median(cpu[method]),
                "steps_timed": len(wall[method]),
                f"wall_ratio_vs_{base}": ratio,
                "paired_min": min(paired),
                "paired_max": max(paired),
                f"cpu_ratio_vs_{base}": cpu_ratio,
                "same_batches": shapes[method] == shapes[base],
            }
        )
        if method != base:
            figures[f"step_time_ratio_{method}_vs_{base}"] = benchlib.target(ratio, 1.02, "<=")
            figures[f"step_cpu_time_ratio_{method}_vs_{base}"] = benchlib.target(cpu_ratio, 1.02, "<=")
    if {"length", "cosine"} <= set(wall):
        # the two priors run the very same code (they differ only in δ's values): their ratio is the noise floor
        figures["noise_floor_length_vs_cosine"] = benchlib.median(wall["length"]) / benchlib.median(wall["cosine"])
    extra = micro["pcrm"] - micro["bt"]
    figures["loss_only_us"] = micro
    figures["loss_only_extra_fraction_of_step"] = extra * 1e-6 / benchlib.median(wall[base])
    print(
        f"loss terms alone (forward+backward, batch {args.batch_size}): BT {micro['bt']:.1f} µs, "
        f"PCRM {micro['pcrm']:.1f} µs: "
        f"+{extra:.1f} µs = {100 * figures['loss_only_extra_fraction_of_step']:.4f}% of a step"
    )
    figures["train_pairs"] = facts["train_pairs"]
    return benchlib.report(
        args,
        rows,
        figures,
        raw={"step_seconds": wall, "step_cpu_seconds": cpu, "batch_shapes": shapes},
        load_before=load_before,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
