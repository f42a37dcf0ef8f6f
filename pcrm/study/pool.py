"""The pool stage: held-out prompts × samples of the policy with their gold scores (pool/pool.jsonl, pool/meta.json).

A pool file is JSONL, one line per response: prompt, sample (index within the prompt), response, [tokens,] gold;
`--pool FILE` reads one instead of sampling (by default the shipped pcrm/data/gold-pool/pool.jsonl).
"""

import json
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError
from pcrm.io import atomic_write_text, write_json

DEFAULT_POOL = Path(__file__).resolve().parents[1] / "data" / "gold-pool" / "pool.jsonl"


def write_pool(path: str | Path, prompts: list[str], responses: list[list[str]], gold: np.ndarray, tokens=None) -> None:
    """The pool as JSONL, one line per response: prompt, sample (index within the prompt), response, [tokens,] gold
    (the format of scripts/make_gold_pool.py; `read_pool` ignores other fields)."""

    def line(i, j, p, r):
        row = {"prompt": p, "sample": j, "response": r} | ({"tokens": int(tokens[i][j])} if tokens is not None else {})
        return json.dumps(row | {"gold": float(gold[i, j])}, ensure_ascii=False)

    lines = [line(i, j, p, r) for i, (p, row) in enumerate(zip(prompts, responses)) for j, r in enumerate(row)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_pool(path: str | Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """(prompts, responses [prompts][samples], gold [prompts, samples]) of a pool file; every prompt needs samples
    0..n−1."""
    path = Path(path)
    if not path.is_file():
        raise PcrmError(f"--pool {path}: no such file")
    groups: dict[str, dict[int, tuple[str, float]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):  # not splitlines: U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, sample, response, gold = row["prompt"], int(row["sample"]), row["response"], float(row["gold"])
        except (ValueError, KeyError, TypeError) as err:
            raise PcrmError(f"{path}:{number}: expected JSON with prompt, sample, response, gold ({err})") from None
        if sample in groups.setdefault(prompt, {}):
            raise PcrmError(f"{path}:{number}: sample {sample} of this prompt appears twice")
        groups[prompt][sample] = (response, gold)
    if not groups:
        raise PcrmError(f"{path}: the pool is empty")
    sizes = {len(g) for g in groups.values()}
    if len(sizes) != 1 or any(sorted(g) != list(range(len(g))) for g in groups.values()):
        raise PcrmError(f"{path}: every prompt needs the same samples 0..n−1 (found sizes {sorted(sizes)})")
    if sizes.pop() < 2:
        raise PcrmError(f"{path}: best-of-N needs at least 2 samples per prompt")
    prompts = list(groups)
    responses = [[groups[p][j][0] for j in range(len(groups[p]))] for p in prompts]
    gold = np.array([[groups[p][j][1] for j in range(len(groups[p]))] for p in prompts], dtype=np.float64)
    return prompts, responses, gold


def pool_prompts(config, tokenizer) -> list[str]:
    """The first `config.prompts` distinct test prompts in the order of shuffle(seed)."""
    from pcrm.alignment.rollout import load_prompts

    return load_prompts(config.data, "test", tokenizer, 10**9, config.prompts, config.seed)


def sample_responses(config, out: Path) -> tuple[list[str], list[list[str]], list[list[int]], dict]:
    """`config.pool_size` samples of each pool prompt (`pcrm.study.sampler`: chat template, length-sorted batches,
    resumable in pool/samples.jsonl); returns prompts, responses, token counts and the sampling figures."""
    from pcrm.models import default_device, load_causal_lm, load_tokenizer
    from pcrm.study.sampler import PoolRecipe, read_samples, sample_pool

    tokenizer = load_tokenizer(config.policy)
    prompts = pool_prompts(config, tokenizer)
    recipe = PoolRecipe(
        policy=config.policy,
        samples=config.pool_size,
        max_new_tokens=config.max_new_tokens,
        max_prompt_tokens=config.max_prompt_tokens,
        temperature=config.temperature,
        batch_size=config.sample_batch_size,
        seed=config.seed,
    )
    model = load_causal_lm(config.policy).to(default_device(config.device))
    total = len(prompts) * config.pool_size

    def progress(made, tokens, seconds):
        if config.progress:
            print(f"pool: {made}/{total} samples, {made / seconds:.2f} samples/s, {tokens / seconds:.0f} tokens/s")

    figures = sample_pool(model, tokenizer, prompts, recipe, out / "pool" / "samples.jsonl", progress)
    rows = read_samples(out / "pool" / "samples.jsonl")
    figures["capped_share"] = float(np.mean([row["capped"] for row in rows]))
    figures["chat_template"] = bool(getattr(tokenizer, "chat_template", None))
    size = config.pool_size
    responses = [[row["response"] for row in rows[i * size : (i + 1) * size]] for i in range(len(prompts))]
    tokens = [[row["tokens"] for row in rows[i * size : (i + 1) * size]] for i in range(len(prompts))]
    return prompts, responses, tokens, figures


def _sample_and_score(config, out: Path) -> tuple[list[str], list[list[str]], np.ndarray, list[list[int]], dict]:
    """A pool sampled from the policy and scored by the gold RM, with the meta of how it was made."""
    from pcrm.models import default_device
    from pcrm.scoring import score_responses
    from pcrm.study.gold import load_gold_model

    print(f"== pool: {config.prompts} prompts × {config.pool_size} samples from {config.policy}", flush=True)
    prompts, responses, tokens, figures = sample_responses(config, out)
    model, tokenizer = load_gold_model(config.gold, default_device(config.device))
    flat = score_responses(
        model,
        tokenizer,
        [p for p, row in zip(prompts, responses) for _ in row],
        [r for row in responses for r in row],
        config.max_length,
        config.score_batch_size,
        config.progress,
    )
    made = ("policy", "gold", "seed", "max_new_tokens", "max_prompt_tokens", "temperature", "data")
    meta = {"source": "sampled", **{key: getattr(config, key) for key in made}, "split": "test", "sampling": figures}
    return prompts, responses, flat.reshape(len(prompts), -1), tokens, meta


def stage_pool(config, out: Path) -> dict:
    """The pool with its gold scores: read from `--pool`, or sampled from the policy and scored by the gold RM."""
    folder = out / "pool"
    if config.pool:
        prompts, responses, gold = read_pool(config.pool)
        tokens, meta = None, {"source": str(config.pool)}
    else:
        prompts, responses, gold, tokens, meta = _sample_and_score(config, out)
    meta |= {
        "prompts": len(prompts),
        "pool_size": gold.shape[1],
        "gold_mean": float(gold.mean()),
        "gold_std": float(gold.std()),
    }
    write_json(folder / "meta.json", meta)
    write_pool(folder / "pool.jsonl", prompts, responses, gold, tokens)  # written last: the stage's "done" marker
    return meta
