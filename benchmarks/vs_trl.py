"""pcrm's reward trainer vs TRL's stock `RewardTrainer`: time per epoch over the same pairs.

Same model (one model object, trained in turn by each trainer), same pairs, batch size,
learning rate, schedule, precision (fp32: TRL's `RewardConfig` defaults to bf16, it is turned
off), gradient checkpointing off (TRL's `RewardConfig` defaults to on, pcrm to off;
`--trl-stock-variant` adds a `trl-stock-gc` row with TRL's default), logging every step to the
same report targets, no checkpoints. TRL drops pairs longer than `max_length`, so only
pairs that fit (counted with pcrm's tokenization, plus the end-of-sequence token TRL appends)
are used, and both trainers get the same ones. What differs is what each trainer does with them:
pcrm tokenizes once (left truncation), adds δ* (the `--method` prior) and by default batches
by length (`sampler="group_by_length"`, less padding) and packs each batch without padding where
exact (`--padding-free`, `pcrm.packing`); TRL tokenizes its own way and samples at random. Real
(attention-mask) and computed (padded) tokens per second are reported for all; the `pcrm-padded`
variant (`--no-padding-free`) separates packing's share, the
`pcrm-random` variant (pcrm with TRL's random sampler) the sampler's, and
`padding_share_within_pairs` is the padding that no sampler can remove (chosen and rejected
share a batch, so each pair's shorter response is padded to its longer one). transformers'
length grouping sorts within mega-batches of min(N / (4 · batch), 50) batches, so it needs a
few hundred pairs to pay off: the default 128 pairs give mega-batches of 4 batches, and the
padding of an epoch over all the pairs that fit is reported as well (sampler only, no training).
Target: pcrm ≥ 1.0× TRL's throughput (ratio of epoch times, TRL / pcrm, both without
gradient checkpointing).
"""

import json
import sys

import benchlib


def fitting_pairs(args, tokenizer) -> tuple[list[dict], list[tuple[int, int]]]:
    """The first `args.pairs` pairs (seeded shuffle) whose sequences both fit `max_length` − 1 tokens,
    and the token lengths (chosen, rejected) of all the pairs that fit."""
    from pcrm.data import load_preferences
    from pcrm.tokenization import tokenize_pairs

    dataset = load_preferences(args.data, split=args.split).shuffle(seed=0)
    tokenized, _ = tokenize_pairs(dataset, tokenizer, None)
    lengths = [(len(c), len(r)) for c, r in zip(tokenized["chosen_ids"], tokenized["rejected_ids"])]
    keep = [i for i, (c, r) in enumerate(lengths) if max(c, r) <= args.max_length - 1]
    columns = [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
    return dataset.select(keep[: args.pairs]).select_columns(columns).to_list(), [lengths[i] for i in keep]


def within_pair_padding(lengths: list[tuple[int, int]]) -> float:
    """The padding no sampler can remove: each pair's shorter sequence padded to its longer one."""
    return 1 - sum(c + r for c, r in lengths) / sum(2 * max(c, r) for c, r in lengths)


def padding_share(lengths: list[tuple[int, int]], batch_size: int, grouped: bool, seed: int = 0) -> float:
    """Share of padding in one epoch's batches (chosen and rejected padded to the batch's longest), no training:
    transformers' length-grouped order (as `sampler="group_by_length"`) or a random one."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    longest = [max(pair) for pair in lengths]
    order = (
        get_length_grouped_indices(longest, batch_size, generator=generator)
        if grouped
        else torch.randperm(len(lengths), generator=generator).tolist()
    )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(2 * len(b) * max(longest[i] for i in b) for b in batches)
    return 1 - sum(sum(pair) for pair in lengths) / padded


def trl_trainer(args, rows, pcrm_args, gradient_checkpointing: bool = False, peft_config=None):
    """TRL's `RewardTrainer` as shipped, set up like pcrm's where the setting is not the point (`peft_config`: LoRA)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from pcrm.models import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)  # BERT tokenizers get eos_token = [SEP] here (TRL needs one)
    model = load_reward_model(args.model)
    config = RewardConfig(
        output_dir=str(benchlib.tempdir("trl")),
        per_device_train_batch_size=args.batch_size,
        learning_rate=pcrm_args.learning_rate,
        lr_scheduler_type=pcrm_args.lr_scheduler_type,
        warmup_steps=pcrm_args.warmup_steps,
        weight_decay=pcrm_args.weight_decay,
        max_length=args.max_length,
        bf16=False,
        fp16=False,
        gradient_checkpointing=gradient_checkpointing,
        logging_steps=1,
        save_steps=10**9,
        report_to=pcrm_args.report_to,
        seed=pcrm_args.seed,
        disable_tqdm=True,
        use_cpu=pcrm_args.use_cpu,
        dataloader_drop_last=False,
    )
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)  # TRL's default collator
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=collator,
        peft_config=peft_config,
    )
    return benchlib.instrument(trainer)


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("vs_trl", __doc__, pairs=128, repeats=2)
    p.add_argument("--method", default="cosine", help="pcrm's loss (default: its default, the cosine prior)")
    p.add_argument("--encoder", default="minilm", help="sentence encoder of the cosine prior")
    p.add_argument(
        "--no-random-sampler-variant",
        dest="random_variant",
        action="store_false",
        help="leave out pcrm with the random sampler",
    )
    p.add_argument(
        "--trl-stock-variant",
        action="store_true",
        help="also time TRL with its default gradient checkpointing (row trl-stock-gc)",
    )
    args = benchlib.parse(p, argv, pairs=8, repeats=1, batch_size=2, max_length=48)

    from pcrm.models import load_tokenizer

    rows, all_lengths = fitting_pairs(args, load_tokenizer(args.model))
    data = benchlib.tempdir("data") / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    variants = {
        "pcrm": ("group_by_length", True),
        "pcrm-padded": ("group_by_length", False),
        **({"pcrm-random": ("random", True)} if args.random_variant else {}),
    }
    trainers = {}
    for name, (sampler, padding_free) in variants.items():
        config = benchlib.bench_config(
            model=args.model,
            data=str(data),
            method=args.method,
            encoder=args.encoder,
            batch_size=args.batch_size,
            max_length=args.max_length,
            sampler=sampler,
            padding_free=padding_free,
        )
        trainers[name], _, facts = benchlib.build_pcrm_trainer(config)
    trainers["trl"] = trl_trainer(args, rows, trainers["pcrm"].args)
    benchlib.share_model(trainers.values())  # one model object; trl-stock-gc gets its own (checkpointing sticks)
    if args.trl_stock_variant:
        trainers["trl-stock-gc"] = trl_trainer(args, rows, trainers["pcrm"].args, gradient_checkpointing=True)
    benchlib.warm_up(trainers.values())
    sizes = {name: len(t.train_dataset) for name, t in trainers.items()}
    if len(set(sizes.values())) != 1:
        raise SystemExit(f"the trainers did not keep the same pairs: {sizes}")

    runs = benchlib.interleave(
        {name: (lambda t=t: benchlib.run_training(t)) for name, t in trainers.items()}, repeats=args.repeats, warmup=0
    )
    epoch = {name: benchlib.median([r["epoch_seconds"] for r in rs]) for name, rs in runs.items()}
    table, figures = [], {}
    for name, rs in runs.items():
        real, padded = rs[0]["real_tokens"], rs[0]["padded_tokens"]
        table.append(
            {
                "trainer": name,
                "pairs": sizes[name],
                "steps": rs[0]["steps"],
                "epoch_s_median": epoch[name],
                "epoch_s_min": min(r["epoch_seconds"] for r in rs),
                "pairs_per_s": sizes[name] / epoch[name],
                "real_tok_per_s": real / epoch[name],
                "padded_tok_per_s": padded / epoch[name],
                "padding_share": 1 - real / padded,
                "speedup_vs_trl": epoch["trl"] / epoch[name],
            }
        )
    figures["speedup_pcrm_vs_trl"] = benchlib.target(epoch["trl"] / epoch["pcrm"], 1.0, ">=")
    figures["speedup_pcrm_padding_free_vs_padded"] = epoch["pcrm-padded"] / epoch["pcrm"]
    if "pcrm-random" in epoch:
        figures["speedup_pcrm_random_sampler_vs_trl"] = epoch["trl"] / epoch["pcrm-random"]
    if "trl-stock-gc" in epoch:
        figures["speedup_pcrm_vs_trl_stock_gradient_checkpointing"] = epoch["trl-stock-gc"] / epoch["pcrm"]
    dataset = trainers["pcrm"].train_dataset
    lengths = [(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
    figures["padding_share_within_pairs"] = within_pair_padding(lengths)
    # transformers groups within min(N / (4 · batch), 50) batches: the sampler's effect grows with the data
    figures["epoch_over_all_fitting_pairs"] = {
        "pairs": len(all_lengths),
        "padding_share_group_by_length": padding_share(all_lengths, args.batch_size, grouped=True),
        "padding_share_random": padding_share(all_lengths, args.batch_size, grouped=False),
        "padding_share_within_pairs": within_pair_padding(all_lengths),
    }
    figures["pairs"] = sizes["pcrm"]
    raw = {
        name: [{k: r[k] for k in ("epoch_seconds", "real_tokens", "padded_tokens", "shapes")} for r in rs]
        for name, rs in runs.items()
    }
    return benchlib.report(args, table, figures, raw=raw, load_before=load_before)


if __name__ == "__main__":
    main(sys.argv[1:])
