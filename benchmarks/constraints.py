"""Throughput of pcrm's constraint computation vs the raw sentence encoder.

`add_constraints` with the cosine prior, each repetition with a fresh (empty) cache, against
sentence-transformers' `encode` of the same 2×N texts (chosen and rejected responses) with the
same settings (batch size, normalisation), called directly on an encoder loaded beforehand.
Interleaved repetitions; medians. Target: add_constraints ≥ 0.9× the raw encoder's pairs/s
(it also loads the encoder, hashes the data for the cache key, writes the cache and adds the
columns). Also timed: the second, cached run; the length prior (tokens); loading the encoder.
"""

import os
import sys

import benchlib


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("constraints", __doc__, pairs=300, repeats=3)  # --pairs 0: the whole split
    p.add_argument("--encoder", default="minilm", help="sentence encoder of the cosine prior")
    p.add_argument(
        "--encoder-batch-size", type=int, default=64, help="encoder batch size (ConstraintConfig.batch_size)"
    )
    args = benchlib.parse(p, argv, pairs=64, repeats=1)

    from pcrm.constraints import ConstraintConfig, add_constraints
    from pcrm.data import as_text, load_preferences
    from pcrm.models import load_encoder, load_tokenizer

    dataset = load_preferences(args.data, split=args.split)
    if args.pairs and args.pairs < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(args.pairs))
    n = len(dataset)
    texts = [as_text(x) for x in dataset["chosen"]] + [as_text(x) for x in dataset["rejected"]]
    cosine = ConstraintConfig(method="cosine", encoder=args.encoder, encoder_batch_size=args.encoder_batch_size)
    length = ConstraintConfig(method="length", unit="tokens")
    tokenizer = load_tokenizer(args.model)
    encoder = load_encoder(args.encoder)
    encoder.encode(texts[:8], show_progress_bar=False)  # first-call initialisation, outside the timing
    caches = []

    def fresh_add_constraints():
        caches.append(str(benchlib.tempdir("cache")))
        os.environ["PCRM_CACHE"] = caches[-1]
        add_constraints(dataset, cosine, show_progress=False)

    def raw_encode():
        encoder.encode(
            texts,
            batch_size=args.encoder_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    previous_cache = os.environ.get("PCRM_CACHE")
    try:
        samples = benchlib.interleave(
            {
                "add_constraints (cosine, fresh cache)": lambda: benchlib.timed(fresh_add_constraints),
                "raw encoder.encode": lambda: benchlib.timed(raw_encode),
            },
            repeats=args.repeats,
            warmup=0,
        )
        # cache filled by the last fresh run: the second run of the same data reads it
        samples["add_constraints (cosine, cached)"] = [
            benchlib.timed(lambda: add_constraints(dataset, cosine, show_progress=False))
            for _ in range(max(3, args.repeats))
        ]
        samples["add_constraints (length, tokens)"] = [
            benchlib.timed(lambda: add_constraints(dataset, length, tokenizer, show_progress=False))
            for _ in range(max(3, args.repeats))
        ]
        samples["load_encoder"] = [
            benchlib.timed(lambda: load_encoder(args.encoder)) for _ in range(max(3, args.repeats))
        ]
    finally:
        if previous_cache is None:
            os.environ.pop("PCRM_CACHE", None)
        else:
            os.environ["PCRM_CACHE"] = previous_cache

    med = {name: benchlib.median(values) for name, values in samples.items()}
    raw = med["raw encoder.encode"]
    rows = [
        {
            "what": name,
            "pairs": n,
            "seconds_median": med[name],
            "seconds_min": min(values),
            "pairs_per_s": n / med[name],
            "vs_raw_encoder": raw / med[name],
        }
        for name, values in samples.items()
    ]
    rows[-1].update(pairs=None, pairs_per_s=None, vs_raw_encoder=None)  # loading the encoder is not per pair
    figures = {
        "cosine_fresh_vs_raw_encoder": benchlib.target(raw / med["add_constraints (cosine, fresh cache)"], 0.9, ">="),
        "cosine_fresh_pairs_per_s": n / med["add_constraints (cosine, fresh cache)"],
        "raw_encoder_pairs_per_s": n / raw,
        "cosine_cached_seconds": med["add_constraints (cosine, cached)"],
        "cosine_cached_speedup_vs_fresh": med["add_constraints (cosine, fresh cache)"]
        / med["add_constraints (cosine, cached)"],
        "length_tokens_pairs_per_s": n / med["add_constraints (length, tokens)"],
        "pairs": n,
    }
    return benchlib.report(args, rows, figures, raw={"seconds": samples}, load_before=load_before)


if __name__ == "__main__":
    main(sys.argv[1:])
