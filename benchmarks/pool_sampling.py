"""Sampling throughput of the study's pool (`pcrm.study.sampler`): the bundled SmolLM2-135M-Instruct, prompts from
the bundled HH-RLHF test split rendered with its chat template, up to `--max-new-tokens` stopped at EOS.

Side by side in one run, on the same prompts and seed: the shared prefill (a prompt's samples in a batch encode it
once) against every row prefilling itself, at each `--batch-sizes` (samples per generate call). Prints samples/s,
generated tokens/s and the share of samples that hit the token cap; `--json FILE` writes them.

    .venv/bin/python benchmarks/pool_sampling.py --prompts 8 --samples 16 --batch-sizes 32 64
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(args) -> list[dict]:
    import pcrm.study.sampler as sampler
    from pcrm.alignment.rollout import load_prompts
    from pcrm.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(args.threads)
    tokenizer, model = load_tokenizer(args.policy), load_causal_lm(args.policy)
    prompts = load_prompts("hh-rlhf-harmless", "test", tokenizer, 10**9, args.prompts, 0)
    rows = []
    for batch_size in args.batch_sizes:
        for shared in (True, False):
            recipe = sampler.PoolRecipe(args.policy, args.samples, args.max_new_tokens, 256, 1.0, batch_size, 0)
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                path = Path(folder) / "pool.jsonl"
                figures = sampler.sample_pool(model, tokenizer, prompts, recipe, path, share_prefill=shared)
                samples = sampler.read_samples(path)
            seconds = time.perf_counter() - started
            row = {
                "batch_size": batch_size,
                "shared_prefill": shared,
                "samples": len(samples),
                "seconds": round(seconds, 1),
                "samples_per_s": round(len(samples) / seconds, 3),
                "tokens_per_s": round(figures["tokens"] / seconds, 1),
                "capped_share": round(sum(s["capped"] for s in samples) / len(samples), 3),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
