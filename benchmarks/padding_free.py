"""Padding-free reward-model training: real tokens/s of pcrm packed, pcrm padded, TRL's RewardTrainer, the bare limit.

For each case (`--cases MODEL@MAX_LENGTH[+lora][:STEPS]`; default the bundled SmolLM2 with LoRA r=16 at 512,
2 steps per run, and MiniLM at 128 and 512, 8 steps per run; `--steps` for cases without `:STEPS`), on the same
pairs (those whose sequences fit `max_length` − 1 tokens, as TRL drops longer ones), one model object trained by
every variant in turn, the same batch size, steps and fp32:

- `pcrm-packed`: pcrm's trainer, `--padding-free` (row length estimated per batch; `pcrm.packing`);
- `pcrm-padded`: pcrm's trainer, `--no-padding-free`, length-grouped batches (the previous default);
- `trl`: TRL's `RewardTrainer` as shipped (its tokenization, random sampler), gradient checkpointing off, same LoRA;
- `bare`: the limit: a plain forward + backward of every sequence alone (no padding, no mask, no trainer, no
  optimizer step) over exactly the sequences `pcrm-packed` trained on, BT loss of the batch.
- `pcrm-packed-rowN` (with `--row-tokens N`): packed rows of max(N, the longest sequence) tokens instead of the
  row length pcrm estimates per batch (`pcrm.packing.pack`).

Real tokens/s = the real (non-padding) tokens of the timed steps over their wall seconds (each run's first step,
optimizer state, is not timed; every run of a trainer trains the same batches), the median over `--repeats`
interleaved repetitions; also per CPU second of this process (less sensitive to other processes' load on a
shared machine). TRL's batches differ from pcrm's (it samples at random), which tokens/s normalises.
`--profile` adds the top operators (self CPU time) of the packed steps of the first case. The padding share of
an epoch over all the pairs that fit, padded or packed, length-grouped or random, is computed from the lengths.
"""

import json
import sys
import time

import benchlib
from vs_trl import fitting_pairs, trl_trainer

DEFAULT_CASES = ["smollm2@512+lora:2", "minilm@128:8", "minilm@512:8"]


class RecordingCollator:
    """Wraps a collator; keeps the token ids of every batch it collates (for the bare limit)."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, examples):
        self.batches.append(([e["chosen_ids"] for e in examples], [e["rejected_ids"] for e in examples]))
        return self.collator(examples)


def bare_run(model, batches) -> dict:
    """Forward + backward of each sequence alone, batch by batch; step times of all but the first batch."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.train()
    seconds, cpu_seconds, tokens = [], [], []

    def step(chosen, rejected):
        rewards = torch.stack(
            [
                model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, 0]
                for ids in chosen + rejected
            ]
        )
        (-F.logsigmoid(rewards[: len(chosen)] - rewards[len(chosen) :]).mean()).backward()
        model.zero_grad(set_to_none=True)

    for chosen, rejected in batches:
        cpu = time.process_time()
        seconds.append(benchlib.timed(lambda c=chosen, r=rejected: step(c, r)))
        cpu_seconds.append(time.process_time() - cpu)
        tokens.append(sum(len(ids) for ids in chosen + rejected))
    return {
        "seconds": sum(seconds[1:]),
        "cpu_seconds": sum(cpu_seconds[1:]),
        "real_tokens": sum(tokens[1:]),
        "padded_tokens": sum(tokens[1:]),
    }


def trainer_run(trainer, steps: int) -> dict:
    """`benchlib.run_training` for `steps` steps; real and computed tokens of the timed steps (all but the first).

    The length-grouped sampler draws from torch's global generator: seeded first, every run trains the same batches."""
    from transformers import set_seed

    set_seed(trainer.args.seed)
    run = benchlib.run_training(trainer, steps)
    timed = trainer.data_collator.batches[1 : run["steps"]]
    return {
        "seconds": sum(run["step_seconds"]),
        "cpu_seconds": sum(run["step_cpu_seconds"]),
        "real_tokens": sum(b[0] for b in timed),
        "padded_tokens": sum(b[1] for b in timed),
    }


def epoch_padding(lengths: list[tuple[int, int]], batch_size: int, k: int, seed: int = 0) -> dict:
    """Padding share of one epoch over all the pairs that fit (from their lengths; no training): padded and packed
    batches (`pcrm.packing.pack`, cost estimate k), in transformers' length-grouped order and in a random one."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from pcrm.packing import pack

    longest = [max(pair) for pair in lengths]
    result = {}
    for name in ("grouped", "random"):
        generator = torch.Generator().manual_seed(seed)
        order = (
            get_length_grouped_indices(longest, batch_size, generator=generator)
            if name == "grouped"
            else torch.randperm(len(lengths), generator=generator).tolist()
        )
        real = padded = packed = 0
        for start in range(0, len(order), batch_size):
            batch = [lengths[i] for i in order[start : start + batch_size]]
            sizes = [c for c, _ in batch] + [r for _, r in batch]
            real, padded = real + sum(sizes), padded + len(sizes) * max(sizes)
            packed += pack([[1] * n for n in sizes], 0, attention_tokens=k)["input_ids"].numel()
        result |= {f"padded_{name}": 1 - real / padded, f"packed_{name}": 1 - real / packed}
    return {"pairs": len(lengths), **result}


def parse_case(case: str, steps: int) -> tuple[str, int, bool, int]:
    """MODEL@MAX_LENGTH[+lora][:STEPS] -> (model, max length, LoRA or not, steps per run)."""
    name, _, rest = case.rpartition("@")
    rest, _, case_steps = rest.partition(":")
    length, _, lora = rest.partition("+")
    if not name or not length.isdigit() or lora not in ("", "lora") or not (case_steps or "2").isdigit():
        raise SystemExit(f"--cases: expected MODEL@MAX_LENGTH[+lora][:STEPS], got {case!r}")
    return name, int(length), lora == "lora", max(2, int(case_steps or steps))


def run_case(args, case: str) -> tuple[list[dict], dict, dict]:
    from peft import LoraConfig

    from pcrm.models import load_tokenizer
    from pcrm.packing import attention_tokens

    model, max_length, lora, steps = parse_case(case, args.steps)
    args.model, args.max_length = model, max_length  # what fitting_pairs and trl_trainer read
    rows, all_lengths = fitting_pairs(args, load_tokenizer(model))
    data = benchlib.tempdir("data") / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    lora_r = args.lora_r if lora else 0
    variants = {
        "pcrm-packed": (True, None),
        "pcrm-padded": (False, None),
        **({f"pcrm-packed-row{args.row_tokens}": (True, args.row_tokens)} if args.row_tokens else {}),
    }
    trainers = {}
    for name, (padding_free, row_tokens) in variants.items():
        config = benchlib.bench_config(
            model=model,
            data=str(data),
            method=args.method,
            unit="tokens",
            lora_r=lora_r,
            batch_size=args.batch_size,
            max_length=max_length,
            padding_free=padding_free,
        )
        trainers[name], _, facts = benchlib.build_pcrm_trainer(config)
        if facts["padding_free"] != padding_free:
            raise SystemExit(f"{case}: padding-free training is not exact for this model")
        if row_tokens:
            trainers[name].data_collator.collator.collator.row_tokens = row_tokens
    packed = trainers["pcrm-packed"]
    packed.data_collator.collator = recorder = RecordingCollator(packed.data_collator.collator)
    peft = (
        None
        if not lora
        else LoraConfig(task_type="SEQ_CLS", r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear")
    )  # as pcrm's build_trainer
    trainers["trl"] = trl_trainer(args, rows, packed.args, peft_config=peft)
    benchlib.share_model(trainers.values())
    print(f"  {case}: {len(rows)} pairs; warming up", file=sys.stderr, flush=True)
    for trainer in trainers.values():  # one untimed step each (lazy set-up; each run's first step is untimed too)
        benchlib.run_training(trainer, 1)

    def packed_then_record():
        recorder.batches.clear()
        return trainer_run(packed, steps)

    calls = {name: (lambda t=t: trainer_run(t, steps)) for name, t in trainers.items()}
    calls["pcrm-packed"] = packed_then_record
    calls["bare"] = lambda: bare_run(packed.model, recorder.batches[:steps])

    def progress(name, call):
        result = call()
        print(
            f"  {case} {name}: {result['real_tokens']} real tokens in {result['seconds']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return result

    calls = {name: (lambda name=name, call=call: progress(name, call)) for name, call in calls.items()}
    runs = benchlib.interleave(calls, repeats=args.repeats, warmup=0)  # packed runs first: bare has its batches

    rate = {name: benchlib.median([r["real_tokens"] / r["seconds"] for r in rs]) for name, rs in runs.items()}
    cpu_rate = {name: benchlib.median([r["real_tokens"] / r["cpu_seconds"] for r in rs]) for name, rs in runs.items()}
    table = []
    for name, rs in runs.items():
        real, computed = rs[0]["real_tokens"], rs[0]["padded_tokens"]
        table.append(
            {
                "case": case,
                "variant": name,
                "timed_steps_per_run": steps - 1,
                "runs": len(rs),
                "real_tokens": real,
                "computed_tokens": computed,
                "padding_share": 1 - real / computed,
                "real_tok_per_s": rate[name],
                "vs_trl": rate[name] / rate["trl"],
                "vs_bare": rate[name] / rate["bare"],
                "real_tok_per_cpu_s": cpu_rate[name],
                "cpu_vs_trl": cpu_rate[name] / cpu_rate["trl"],
                "cpu_vs_bare": cpu_rate[name] / cpu_rate["bare"],
            }
        )
    figures = {
        "packed_vs_trl": rate["pcrm-packed"] / rate["trl"],
        "packed_vs_bare": rate["pcrm-packed"] / rate["bare"],
        "packed_vs_padded": rate["pcrm-packed"] / rate["pcrm-padded"],
        "pairs": len(rows),
        "cpu_time": {
            f"packed_vs_{name}": cpu_rate["pcrm-packed"] / cpu_rate[name] for name in ("trl", "bare", "pcrm-padded")
        },
    }
    figures["epoch_padding_share_all_fitting_pairs"] = epoch_padding(
        all_lengths, args.batch_size, attention_tokens(packed.model)
    )
    if lora:  # the targets are the decoder's
        figures["packed_vs_trl"] = benchlib.target(figures["packed_vs_trl"], 2.0, ">=")
        figures["packed_vs_bare"] = benchlib.target(figures["packed_vs_bare"], 0.9, ">=")
    raw = {name: rs for name, rs in runs.items()}
    if args.profile and case == args.cases[0]:
        raw["profile"] = profile(packed, steps)
    return table, figures, raw


def profile(trainer, steps: int) -> list[dict]:
    """Top 15 operators by self CPU time over `steps` packed training steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        benchlib.run_training(trainer, steps)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    result = [
        {
            "op": e.key,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events
    ]
    print(benchlib.table(result))
    return result


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("padding_free", __doc__, steps=2, pairs=64, repeats=2, batch_size=4)
    p.add_argument(
        "--cases",
        nargs="+",
        help=f"MODEL@MAX_LENGTH[+lora][:STEPS] (default: {' '.join(DEFAULT_CASES)}; "
        "--quick: --model at --max-length, without and with LoRA)",
    )
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank of the +lora cases")
    p.add_argument("--method", default="bt", help="pcrm's loss (the throughput does not depend on it)")
    p.add_argument(
        "--row-tokens",
        type=int,
        help="also time packed rows of max(this, the longest sequence) tokens "
        "(1: rows of the longest sequence) instead of pcrm's estimate",
    )
    p.add_argument("--profile", action="store_true", help="profile the packed steps of the first case")
    args = benchlib.parse(p, argv, steps=2, repeats=1, pairs=8, batch_size=2, max_length=64)
    if not args.cases:
        quick = [f"{args.model}@{args.max_length}", f"{args.model}@{args.max_length}+lora"]
        args.cases = quick if args.quick else DEFAULT_CASES
    table, figures, raw = [], {}, {}
    for case in args.cases:
        rows, figures[case], raw[case] = run_case(args, case)
        table += rows
        print(benchlib.table(rows))
    return benchlib.report(args, table, figures, raw=raw, load_before=load_before)


if __name__ == "__main__":
    main(sys.argv[1:])
