"""Shared helpers of the benchmark scripts: options, interleaved timing, trainer timing, tables, JSON.

Every figure a script reports is a ratio of two variants measured in the same process,
on the same model, data and batch, with repetitions interleaved (A, B, A, B, ...) so that
load from other processes falls on both alike; medians over the repetitions are reported.
"""

import argparse
import atexit
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DATASETS_VERBOSITY", "error")

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# ---------------------------------------------------------------- options

_ABSENT = object()


def parser(
    name: str, doc: str, *, steps=_ABSENT, pairs=_ABSENT, repeats: int = 5, batch_size: int = 8, max_length: int = 128
) -> argparse.ArgumentParser:
    """Options every script shares; `--quick` shrinks the run to a smoke test (see `parse`)."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=doc.strip().splitlines()[0])
    p.add_argument("--model", default="minilm", help="reward-model backbone (bundled name or directory)")
    p.add_argument("--data", default="hh-rlhf-harmless", help="bundled dataset name or preference file")
    p.add_argument("--split", default="train", help="data split")
    p.add_argument("--batch-size", type=int, default=batch_size, help="pairs per step")
    p.add_argument("--max-length", type=int, default=max_length, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repetitions per variant")
    if steps is not _ABSENT:
        p.add_argument(
            "--steps", type=int, default=steps, help="training steps per repetition (the first is not timed)"
        )
    if pairs is not _ABSENT:
        p.add_argument(
            "--pairs", type=int, default=pairs, help="comparison pairs (a seeded random subset; default: %(default)s)"
        )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared, oversubscribed machine "
        "more threads mostly wait for each other)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 minute), results under results/quick/")
    p.add_argument("--output", help=f"JSON file to write (default: benchmarks/results/{name}.json)")
    p.set_defaults(bench_name=name)
    return p


def parse(p: argparse.ArgumentParser, argv, **quick_values) -> argparse.Namespace:
    """Parse `argv`; `--quick` makes `quick_values` the defaults (given options still win); set torch's threads."""
    import torch

    if p.parse_args(argv).quick:
        p.set_defaults(**quick_values)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def output_path(args) -> Path:
    if args.output:
        return Path(args.output)
    return RESULTS_DIR / ("quick" if args.quick else "") / f"{args.bench_name}.json"


# ---------------------------------------------------------------- timing


def interleave(variants: dict, repeats: int, warmup: int = 1) -> dict[str, list]:
    """Call every variant once per round, in turn (A, B, C, A, B, C, ...); return name -> list of results.

    Each round starts one variant later than the previous (A B C, B C A, C A B, ...), so that no
    variant always runs first or after the same other one. `warmup` untimed rounds run first
    (lazy initialisation, caches). Garbage is collected before each call so that one variant's
    garbage is not collected in another's time.
    """
    names = list(variants)
    results = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            value = variants[name]()
            if round_ >= warmup:
                results[name].append(value)
    return results


def timed(fn) -> float:
    """Wall seconds of one call of `fn`."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> dict:
    """Median and the min/max of a list of samples."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) on log(x): 1 means linear growth."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


# ---------------------------------------------------------------- training runs


def step_timer():
    """A callback that marks the start of every optimizer step and the end of the epoch.

    A step's time runs from its `on_step_begin` to the next one's (the last: to the end of the
    epoch), so it includes data loading and collation, forward, backward, optimizer and logging.
    (transformers is imported here, not at the top, so that the memory benchmark's plain
    children import no more than they need.)
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.epoch_begin = time.perf_counter()
            self.marks, self.cpu_marks = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())
            self.cpu_marks.append(time.process_time())

        def on_epoch_end(self, args, state, control, **kwargs):
            self.epoch_end = time.perf_counter()
            self.cpu_end = time.process_time()

    return StepTimer()


class CountingCollator:
    """Wraps a collator; records each batch's real (attention mask; packed: sequence lengths) and padded tokens."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = []

    def __call__(self, examples):
        batch = self.collator(examples)
        if "lengths" in batch:  # a packed batch (pcrm.packing): no attention mask, rows of several sequences
            real, shape = int(batch["lengths"].sum()), tuple(batch["input_ids"].shape)
        else:
            real, shape = int(batch["attention_mask"].sum()), tuple(batch["attention_mask"].shape)
        self.batches.append((real, shape[0] * shape[1], shape))
        return batch


def instrument(trainer):
    """Attach a `StepTimer` and a `CountingCollator` to a (TRL or pcrm) trainer; return the trainer.

    The printer of log lines is removed (from every trainer alike): it would flood the table.
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.step_timer = step_timer()
    trainer.add_callback(trainer.step_timer)
    trainer.data_collator = CountingCollator(trainer.data_collator)
    return trainer


def share_model(trainers) -> None:
    """Make the trainers train one and the same model object (the first one's).

    Without this each trainer's copy of the same weights lives at other addresses, and the
    first one loaded measured a few per cent slower in CPU time than later ones, whatever its
    loss: a difference of memory placement, not of method. (Only for trainers that leave the
    model as they found it: gradient checkpointing, once enabled by a trainer, stays on.)
    """
    trainers = list(trainers)
    model = trainers[0].model
    for trainer in trainers[1:]:
        trainer.model = trainer.model_wrapped = model


def warm_up(trainers) -> None:
    """Two untimed steps per trainer: one-time costs (optimizer state, log writers, lazy imports) stay untimed."""
    for trainer in trainers:
        run_training(trainer, 2)


def time_trainers(trainers: dict, steps: int, repeats: int) -> tuple[dict, dict, dict, dict]:
    """Share one model, warm up, then time `steps` training steps of each trainer, interleaved `repeats` times.

    Returns per-trainer runs (one per repetition), step wall seconds, step CPU seconds and the first run's batch
    shapes."""
    share_model(trainers.values())
    warm_up(trainers.values())
    runs = interleave(
        {name: (lambda t=t: run_training(t, steps)) for name, t in trainers.items()}, repeats=repeats, warmup=0
    )
    wall = {name: [s for run in rs for s in run["step_seconds"]] for name, rs in runs.items()}
    cpu = {name: [s for run in rs for s in run["step_cpu_seconds"]] for name, rs in runs.items()}
    return runs, wall, cpu, {name: rs[0]["shapes"] for name, rs in runs.items()}


def run_training(trainer, max_steps: int = -1) -> dict:
    """Train an instrumented trainer from the start of its data for `max_steps` (-1: one epoch).

    Returns the epoch's wall time, the per-step wall and CPU (process) times (the first step,
    which creates the optimizer state, left out), and the real and padded tokens of the batches
    trained on. CPU time counts this process's threads only, so it is less sensitive than wall
    time to other processes' load on a shared machine.
    """
    trainer.args.max_steps = max_steps
    trainer.args.num_train_epochs = 1
    trainer.data_collator.batches.clear()
    trainer.train()
    timer = trainer.step_timer
    marks = timer.marks + [timer.epoch_end]
    cpu_marks = timer.cpu_marks + [timer.cpu_end]
    steps = len(timer.marks)
    batches = trainer.data_collator.batches[:steps]  # the dataloader may collate one batch ahead
    return {
        "epoch_seconds": timer.epoch_end - timer.epoch_begin,
        "step_seconds": [b - a for a, b in zip(marks, marks[1:])][1:],
        "step_cpu_seconds": [b - a for a, b in zip(cpu_marks, cpu_marks[1:])][1:],
        "steps": steps,
        "real_tokens": sum(b[0] for b in batches),
        "padded_tokens": sum(b[1] for b in batches),
        "shapes": [b[2] for b in batches],
    }


def tempdir(prefix: str) -> Path:
    """A temporary directory, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"pcrm-bench-{prefix}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def bench_config(**overrides):
    """A pcrm `Config` for benchmarking: output in a temporary directory, no checkpoints, no progress bars."""
    from dataclasses import fields

    from pcrm.commands.train_rm import Config
    from pcrm.constraints import PriorOptions

    output = tempdir("run")
    options = dict(output=str(output), save_steps=10**9, progress=False, learning_rate=1e-5, warmup_ratio=0.0)
    options.update(overrides)
    prior = {f.name: options.pop(f.name) for f in fields(PriorOptions) if f.name in options}  # e.g. encoder=, unit=
    return Config(**options, prior=PriorOptions(**prior))


def build_pcrm_trainer(config):
    """`pcrm.trainers.reward.build_trainer`, instrumented; the output directory is created first."""
    from pcrm.trainers.reward import build_trainer

    Path(config.output).mkdir(parents=True, exist_ok=True)
    trainer, tokenizer, facts = build_trainer(config)
    return instrument(trainer), tokenizer, facts


# ---------------------------------------------------------------- reporting


def machine() -> dict:
    """Where and under what load the figures were measured."""
    import torch
    import transformers
    import trl

    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()),
        "uptime": run(["uptime"]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "git_commit": run(["git", "rev-parse", "--short", "HEAD"]),
    }


def format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table of `rows` (dicts), one column per key."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def target(value: float, bound: float, direction: str) -> dict:
    """A figure against its target: direction '<=' or '>='."""
    met = value <= bound if direction == "<=" else value >= bound
    return {"value": value, "target": f"{direction} {bound}", "met": bool(met)}


def report(args, rows: list[dict], figures: dict, raw: dict | None = None, load_before=None, notes: str = "") -> dict:
    """Print the table and the targets; write the JSON result; return it."""
    result = {
        "benchmark": args.bench_name,
        "command": " ".join([".venv/bin/python", f"benchmarks/{args.bench_name}.py", *sys.argv[1:]])
        if Path(sys.argv[0]).stem == args.bench_name
        else None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "bench_name")},
        "figures": figures,
        "table": rows,
        "machine": machine(),
        "load_average_before": load_before,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": notes
        or "ratios measured side by side in one process, repetitions interleaved, medians; "
        "shared machine under load from other processes (see machine.load_average)",
        "raw": raw or {},
    }
    print(table(rows))
    for name, figure in figures.items():
        if isinstance(figure, dict) and "target" in figure:
            verdict = "met" if figure["met"] else "MISSED"
            print(f"{name}: {format_value(figure['value'])} (target {figure['target']}: {verdict})")
    m = result["machine"]
    print(
        f"machine: {m['cpu_count']} CPUs ({m['cpu']}), torch threads {m['torch_threads']}, "
        f"load average {m['load_average']}"
    )
    path = output_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return result


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def start() -> list[float]:
    """Call first in `main`: quiets library logging; returns the load average before the run."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("pcrm").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    return list(os.getloadavg())
