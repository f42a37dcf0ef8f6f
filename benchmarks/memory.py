"""Peak memory of a pcrm training step vs a plain forward + backward of the same model on the same batches.

Each variant runs in a fresh subprocess (so that peaks do not carry over; the three run side
by side, as nothing is timed) and reports its
peak resident set size (`getrusage(RUSAGE_SELF).ru_maxrss`), its resident size once set up
(libraries imported, model loaded, before the first step), and, with CUDA, its peak GPU memory
(`torch.cuda.max_memory_allocated`). The batches are the ones pcrm's trainer trains on, saved
by this process first; the trainer child checks that it saw the same shapes.

- `plain forward+backward`: the reward model (dropout off, as the trainer sets it), the BT
  loss on the batch, `backward()`.
- `plain + AdamW step`: the same plus a fused `torch.optim.AdamW` step (the trainer's default
  optimizer, whose two moment buffers per parameter any training step needs).
- `pcrm trainer`: `pcrm.trainers.reward.build_trainer` + `train()` for the same steps
  (TRL, accelerate, datasets imported, the tokenized pairs in memory, logging).
"""

import json
import os
import resource
import subprocess
import sys

import benchlib

VARIANTS = ("plain forward+backward", "plain + AdamW step", "pcrm trainer")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def config_for(args):
    return benchlib.bench_config(
        model=args.model,
        data=args.data,
        split=args.split,
        method=args.method,
        encoder=args.encoder,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_pairs=args.pairs,
        padding_free=False,
    )  # padded batches: the plain forward of the child replays them


def save_batches(args, path: str) -> None:
    """The first `args.steps` batches of pcrm's trainer, in its order (also fills the constraint cache)."""
    import torch
    from transformers import set_seed

    trainer, _, _ = benchlib.build_pcrm_trainer(config_for(args))
    set_seed(trainer.args.seed)  # as `train()` does before building its dataloader
    batches = []
    for batch in trainer.get_train_dataloader():
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
        if len(batches) == args.steps:
            break
    torch.save(batches, path)


def child(args) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = torch.load(args.batches)
    if args.child == "pcrm trainer":
        trainer, _, _ = benchlib.build_pcrm_trainer(config_for(args))
        setup = rss_bytes()
        run = benchlib.run_training(trainer, args.steps)
        same = [list(s) for s in run["shapes"]] == [list(b["input_ids"].shape) for b in batches]
    else:
        from pcrm.losses import bradley_terry_loss
        from pcrm.models import load_reward_model, load_tokenizer

        model = load_reward_model(args.model).to(device)
        model.config.pad_token_id = load_tokenizer(args.model).pad_token_id
        model.train()
        for module in model.modules():  # as the trainer does (TRL's disable_dropout): no dropout masks kept
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        # fused AdamW: the trainer's default optimizer (`adamw_torch_fused`)
        optimizer = (
            torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True) if args.child == "plain + AdamW step" else None
        )
        setup = rss_bytes()
        for batch in batches:
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.squeeze(-1)
            chosen, rejected = torch.chunk(logits, 2)
            bradley_terry_loss(chosen, rejected).mean().backward()
            if optimizer is not None:
                optimizer.step()
            model.zero_grad()
        same = True
    return {
        "variant": args.child,
        "peak_rss_bytes": peak_rss_bytes(),
        "setup_rss_bytes": setup,
        "same_batches": same,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("memory", __doc__, steps=3, pairs=256, repeats=1)
    p.add_argument("--method", default="cosine", help="pcrm's loss (default: the cosine prior)")
    p.add_argument("--encoder", default="minilm", help="sentence encoder of the cosine prior")
    p.add_argument("--child", choices=VARIANTS, help="(internal) run one variant and print its figures")
    p.add_argument("--batches", help="(internal) file of the saved batches")
    args = benchlib.parse(p, argv, steps=2, pairs=16, batch_size=2, max_length=32)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return {}

    argv = list(sys.argv[1:] if argv is None else argv)
    batches = str(benchlib.tempdir("memory") / "batches.pt")
    save_batches(args, batches)
    results = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        # peaks are per process, so the variants may run side by side (no timing here)
        children = {
            variant: subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *argv, "--child", variant, "--batches", batches],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for variant in VARIANTS
        }
        for variant, process in children.items():
            stdout, stderr = process.communicate()
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            if process.returncode != 0 or not lines:
                raise SystemExit(f"{variant} failed (exit {process.returncode}):\n{stderr[-3000:]}")
            results[variant].append(json.loads(lines[-1][len("RESULT ") :]))

    mib = 2**20
    summary = {
        v: {
            key: benchlib.median([r[key] for r in rs]) / mib if rs[0][key] is not None else None
            for key in ("peak_rss_bytes", "setup_rss_bytes", "peak_gpu_bytes")
        }
        for v, rs in results.items()
    }
    base = summary[VARIANTS[0]]
    rows = [
        {
            "variant": v,
            "peak_rss_MiB": s["peak_rss_bytes"],
            "setup_rss_MiB": s["setup_rss_bytes"],
            "step_increase_MiB": s["peak_rss_bytes"] - s["setup_rss_bytes"],
            "peak_vs_plain": s["peak_rss_bytes"] / base["peak_rss_bytes"],
            "peak_gpu_MiB": s["peak_gpu_bytes"],
            "same_batches": all(r["same_batches"] for r in results[v]),
        }
        for v, s in summary.items()
    ]
    trainer, adamw = summary["pcrm trainer"], summary["plain + AdamW step"]
    figures = {
        "peak_rss_ratio_trainer_vs_plain_forward_backward": trainer["peak_rss_bytes"] / base["peak_rss_bytes"],
        "peak_rss_ratio_trainer_vs_plain_adamw": trainer["peak_rss_bytes"] / adamw["peak_rss_bytes"],
        "step_increase_ratio_trainer_vs_plain_adamw": (trainer["peak_rss_bytes"] - trainer["setup_rss_bytes"])
        / max(adamw["peak_rss_bytes"] - adamw["setup_rss_bytes"], 1e-9),
        "peak_gpu_ratio_trainer_vs_plain_adamw": trainer["peak_gpu_bytes"] / adamw["peak_gpu_bytes"]
        if trainer["peak_gpu_bytes"]
        else None,
    }
    return benchlib.report(
        args,
        rows,
        figures,
        raw=results,
        load_before=load_before,
        notes="memory, not time: each variant in a fresh subprocess; ru_maxrss (peak RSS)",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
