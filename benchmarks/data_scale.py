"""Time and peak memory of loading, validating and computing the length prior at scale.

N synthetic HH-style pairs (prompt, chosen, rejected; 5–150 words each) are written to one
Parquet file; a fresh Python process then runs `load_preferences` on it (Arrow: load, validate,
warn) and `add_constraints(ConstraintConfig(method="length", unit=...))`, and reports wall times
and its peak resident memory (`ru_maxrss`, which includes the ~0.5 GB of importing torch and
datasets: `baseline_rss_mb` is that part alone). The same for the bundled train split. Each
measurement runs in its own process (plus the `num_proc` workers that counting tokens of
≥ 50,000 pairs starts: `worker_processes_peak_rss_mb`, the largest of them) with an empty `datasets`
cache (a temporary folder), so the Parquet → Arrow conversion is included. Targets (100,000 pairs):
< 30 s and < 2 GB. With `--units tokens`, `tokenizer_alone_s` times the tokenizer by itself on the
same texts (the floor).

    .venv/bin/python benchmarks/data_scale.py                      # 100,000 pairs, words and tokens
    .venv/bin/python benchmarks/data_scale.py --pairs 20000 --units words --quick
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

WORDS = (
    "the a to of and in is it you that for on with as this be are not can your have do at or but if "
    "would what how about more some like just there will people should know want think help make good "
    "time way need sure also really other than because any could them then very get into only"
).split()


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    """N synthetic pairs in Parquet, written in chunks (never all texts at once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    vocabulary = np.array(WORDS)
    writer = None
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)

        def texts(low, high):
            return [
                " " + " ".join(vocabulary[rng.integers(0, len(vocabulary), k)]) + "."
                for k in rng.integers(low, high, m)
            ]

        prompts = [f"\n\nHuman:{t}\n\nAssistant:" for t in texts(5, 60)]
        table = pa.table({"prompt": prompts, "chosen": texts(5, 150), "rejected": texts(5, 150)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def worker(source: str, unit: str, model: str) -> dict:
    """One measurement, in this (fresh) process."""
    start = time.perf_counter()
    from pcrm.constraints import ConstraintConfig, add_constraints
    from pcrm.data import load_preferences

    tokenizer = None
    if unit == "tokens":
        from pcrm.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    imported = time.perf_counter()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dataset = load_preferences(source, split="train")
    loaded = time.perf_counter()
    dataset = add_constraints(dataset, ConstraintConfig(method="length", unit=unit), tokenizer, show_progress=False)
    done = time.perf_counter()
    raw = None
    if tokenizer is not None:  # reference: the tokenizer alone on the same texts, batches of 1000
        t0 = time.perf_counter()
        for batch in dataset.select_columns(["chosen", "rejected"]).iter(batch_size=1000):
            tokenizer(batch["chosen"], add_special_tokens=False)
            tokenizer(batch["rejected"], add_special_tokens=False)
        raw = time.perf_counter() - t0
    return {
        "pairs": len(dataset),
        "unit": unit,
        "import_s": imported - start,
        "load_validate_s": loaded - imported,
        "length_prior_s": done - loaded,
        "total_s": done - imported,
        "tokenizer_alone_s": raw,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_processes_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # num_proc
        "baseline_rss_mb": baseline,
        "mean_similarity": float(sum(dataset["similarity"][:1000]) / min(1000, len(dataset))),
    }


def measure(source: str, unit: str, model: str) -> dict:
    cache = tempfile.mkdtemp(prefix="pcrm-bench-datasets-")
    env = {**os.environ, "HF_DATASETS_CACHE": cache, "PCRM_CACHE": cache}  # benchmark only: an empty cache per run
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", source, "--units", unit, "--model", model],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"worker failed: {err.stderr.strip().splitlines()[-1]}") from None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("data_scale", __doc__, pairs=100_000, repeats=1)
    p.add_argument("--units", nargs="+", default=["words", "tokens"], help="length units to time")
    p.add_argument("--worker", help=argparse_hidden())
    args = benchlib.parse(p, argv, pairs=5_000, units=["words"])
    if args.worker:
        print(json.dumps(worker(args.worker, args.units[0], args.model)))
        return {}
    folder = benchlib.tempdir("data-scale")
    path = folder / f"pairs-{args.pairs}.parquet"
    start = time.perf_counter()
    write_pairs(path, args.pairs)
    write_s = time.perf_counter() - start
    rows = []
    for source, label in (
        (str(path), f"synthetic parquet ({args.pairs:,} pairs, {path.stat().st_size / 2**20:.0f} MiB)"),
        ("hh-rlhf-harmless", "bundled train split"),
    ):
        for unit in args.units:
            for _ in range(args.repeats):
                rows.append({"data": label, **measure(source, unit, args.model)})
    synthetic = [r for r in rows if r["data"].startswith("synthetic")]
    figures = {
        "write_parquet_s": write_s,
        "synthetic_total_s_max": benchlib.target(max(r["total_s"] for r in synthetic), 30.0, "<="),
        "synthetic_peak_rss_mb_max": benchlib.target(max(r["peak_rss_mb"] for r in synthetic), 2048.0, "<="),
    }
    return benchlib.report(
        args,
        rows,
        figures,
        load_before=load_before,
        notes="each row: a fresh process with an empty datasets cache; peak_rss_mb is ru_maxrss "
        "(includes baseline_rss_mb of the imports); shared machine (see machine.load_average)",
    )


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
