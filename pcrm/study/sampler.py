"""The study's sample pool: samples of the policy for held-out prompts, rendered with the policy's chat template.

Fast: jobs (prompt, sample) in prompt-length order, large batches, KV cache (transformers' `generate`), stopped at
EOS. Resumable: every finished batch is appended to the pool file (and flushed) with its prompt and sample index; a
rerun with the same recipe skips the batches already there. Batch `b` is seeded `seed + b`, so a resumed pool equals
an uninterrupted one.
"""

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pcrm.errors import PcrmError
from pcrm.io import jsonl_lines
from pcrm.generation import generate_ids
from pcrm.tokenization import TURN, escape_special_tokens

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


@dataclass(frozen=True)
class PoolRecipe:
    """How a pool is sampled (written beside it; a resume must match it)."""

    policy: str = "smollm2"
    samples: int = 16
    max_new_tokens: int = 128
    max_prompt_tokens: int = 256
    temperature: float = 1.0
    batch_size: int = 64
    seed: int = 0


def hh_messages(prompt: str) -> list[dict]:
    """An HH-RLHF text prompt ("\\n\\nHuman: … \\n\\nAssistant:") as chat messages, without the open last turn."""
    parts = _HH_TURN.split("\n\n" + prompt.lstrip("\n"))
    messages = [
        {"role": "user" if role == "Human" else "assistant", "content": text.strip()}
        for role, text in zip(parts[1::2], parts[2::2])
    ]
    if not messages or messages[0]["role"] != "user":
        raise PcrmError(f"not an HH-style prompt (no leading '\\n\\nHuman:' turn): {prompt[:60]!r}")
    return [m for m in messages if m["content"]] or messages[:1]


def render_prompt(prompt: str, tokenizer, max_tokens: int) -> list[int]:
    """Chat-template ids of an HH prompt with the generation prompt; the earliest turns are dropped until it fits,
    and a single turn that is still too long keeps the last `max_tokens` ids. Special-token strings in the data stay
    text (`pcrm.tokenization.escape_special_tokens`): only the template's markers are special tokens."""
    if not getattr(tokenizer, "chat_template", None):  # a base model continues the HH text itself
        return tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"][-max_tokens:]
    messages = [{**m, "content": escape_special_tokens(m["content"], tokenizer)} for m in hh_messages(prompt)]
    while True:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        if len(ids) <= max_tokens or len(messages) == 1:
            return list(ids[-max_tokens:])
        messages = messages[1:] if messages[1]["role"] == "user" else messages[2:] or messages[-1:]


def _batches(lengths: list[int], samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    jobs = [(i, j) for i in order for j in range(samples)]
    return [jobs[start : start + batch_size] for start in range(0, len(jobs), batch_size)]


def _resume(path: Path, recipe: PoolRecipe, prompts: list[str], batches) -> set[tuple[int, int]]:
    """The jobs already in `path`, after cutting it back to its complete batches (a run killed mid-batch leaves a
    partial one, perhaps a partial line); refused when the recipe or the prompts differ."""
    recipe_file = path.with_suffix(".recipe.json")
    made = {**asdict(recipe), "prompts_sha256": hashlib.sha256("\0".join(prompts).encode()).hexdigest()}
    if not path.exists():
        recipe_file.write_text(json.dumps(made, indent=2) + "\n", encoding="utf-8")
        return set()
    try:
        saved = json.loads(recipe_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PcrmError(f"{path}: exists without its {recipe_file.name}; remove it to sample anew") from None
    except ValueError:
        raise PcrmError(f"{recipe_file}: unreadable (not JSON); remove it and {path.name} to sample anew") from None
    if saved != made:
        raise PcrmError(
            f"{path}: sampled with another recipe than this one ({recipe_file.name}); remove it or match it"
        )
    text = path.read_text(encoding="utf-8")
    lines = jsonl_lines(text)
    rows = {}
    for line in lines:
        try:
            row = json.loads(line)
            rows.setdefault((row["prompt_index"], row["sample"]), line)
        except (ValueError, KeyError, TypeError):
            continue  # the torn last line of a killed run
    complete = [job for batch in batches if all(job in rows for job in batch) for job in batch]
    if len(complete) != len(lines) or not text.endswith("\n"):
        path.write_text("".join(rows[job] + "\n" for job in complete), encoding="utf-8")  # torn or repeated rows
    return set(complete)


def _row(prompts: list[str], job: tuple[int, int], response: list[int], tokenizer) -> dict:
    text = tokenizer.decode(response, skip_special_tokens=True)
    capped = tokenizer.eos_token_id not in response and TURN not in text  # ran to max_new_tokens
    i, j = job
    return {
        "prompt_index": i,
        "prompt": prompts[i],
        "sample": j,
        "response": " " + text.split(TURN)[0].strip(),  # HH's convention: "Assistant:" + " reply"
        "tokens": len(response),
        "capped": capped,
    }


def sample_pool(
    model, tokenizer, prompts: list[str], recipe: PoolRecipe, path: str | Path, progress=None, share_prefill=True
) -> dict:
    """Append `recipe.samples` samples of every prompt to the JSONL `path` (resuming it); returns throughput figures.

    Row: prompt_index, prompt (the HH text), sample, response (decoded without special tokens, after one space as in
    HH), tokens (with the EOS), capped (no EOS or next user turn within max_new_tokens)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    queries = [render_prompt(p, tokenizer, recipe.max_prompt_tokens) for p in prompts]
    batches = _batches([len(q) for q in queries], recipe.samples, recipe.batch_size)
    done = _resume(path, recipe, prompts, batches)
    model.eval()
    chat = bool(getattr(tokenizer, "chat_template", None))  # else a base model: stop at the next turn
    started, made, tokens = time.perf_counter(), 0, 0
    with path.open("a", encoding="utf-8") as pool:
        for number, batch in enumerate(batches):
            if batch[0] in done:
                continue
            torch.manual_seed(recipe.seed + number)
            rows = [queries[i] for i, _ in batch]
            responses = generate_ids(
                model, tokenizer, rows, recipe.max_new_tokens, recipe.temperature, not chat, share_prefill
            )
            for job, response in zip(batch, responses):
                pool.write(json.dumps(_row(prompts, job, response, tokenizer), ensure_ascii=False) + "\n")
            pool.flush()
            made, tokens = made + len(batch), tokens + sum(map(len, responses))
            if progress is not None:
                progress(made, tokens, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    return {"samples": made, "tokens": tokens, "seconds": seconds, "samples_per_s": made / seconds if made else None}


def read_samples(path: str | Path) -> list[dict]:
    """The rows of a sampled pool file, in (prompt_index, sample) order; a row twice is refused."""
    rows = [json.loads(line) for line in jsonl_lines(Path(path).read_text(encoding="utf-8"))]
    rows.sort(key=lambda row: (row["prompt_index"], row["sample"]))
    jobs = [(row["prompt_index"], row["sample"]) for row in rows]
    if len(set(jobs)) != len(jobs):
        raise PcrmError(f"{path}: a (prompt, sample) appears twice (two runs wrote it at once?); sample it anew")
    return rows
