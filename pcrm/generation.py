"""The one place pcrm generates text: a batch of token-id queries in, response ids out.

Used by best-of-N, PPO and the probe (`pcrm.alignment.rollout.sample`), `pcrm evaluate-policy`
(`pcrm.evaluation.policies.generate`) and the study's pool (`pcrm.study.sampler`). Queries are left-padded into one
batch; transformers' `generate` runs with its KV cache. Samples of the same query in a batch share one prefill: the
query is encoded once and its cache copied to each of its rows (the same responses as a stock `generate`; tested).
Decoding dominates on a CPU: the pool of the study samples 7% faster with it (benchmarks/pool_sampling.py).
"""

import inspect

import torch

from pcrm.tokenization import TURN


def _left_padded(queries: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, queries))
    ids = torch.tensor([[pad] * (width - len(q)) + list(q) for q in queries])
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in queries])
    return ids, mask


def _shared_prefill(model, queries: list[list[int]], pad: int):
    """The KV cache of every query but its last token, computed once per distinct query and copied to its rows;
    None when no query repeats or the model's cache cannot be shared (recurrent layers, a fixed
    `cache_implementation`): then `generate` prefills as usual."""
    from transformers import DynamicCache

    distinct = list(dict.fromkeys(map(tuple, queries)))
    if len(distinct) == len(queries) or min(map(len, queries)) < 2:
        return None
    if getattr(model.generation_config, "cache_implementation", None) is not None:
        return None
    ids, mask = _left_padded([list(q) for q in distinct], pad)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` numbers left-padded rows
    inputs = {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "position_ids": positions[:, :-1]}
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(model).forward).parameters else {}
    out = model(**{k: v.to(model.device) for k, v in inputs.items()}, use_cache=True, **extra)  # 1: no prompt logits
    cache = getattr(out, "cache", None)
    if type(cache) is not DynamicCache or not all(hasattr(layer, "batch_select_indices") for layer in cache.layers):
        return None
    row_of = {q: k for k, q in enumerate(distinct)}
    cache.batch_select_indices(torch.tensor([row_of[tuple(q)] for q in queries], device=model.device))
    return cache


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    queries: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    stop_at_turn: bool = True,
    share_prefill: bool = True,
) -> list[list[int]]:
    """One response per query: sampled at `temperature` (top-k and top-p off; seed torch first), greedy at 0.

    A response ends with the policy's EOS (kept) or, with `stop_at_turn`, at the token that completes the next user
    turn ("\\n\\nHuman:"); the padding after it is dropped. `share_prefill` False: every row prefills itself
    (the same responses; for benchmarks)."""
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sample = temperature > 0
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,  # set, or the policy's own generation_config fills them in
        min_p=None,
        repetition_penalty=1.0,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        stop_strings=[TURN] if stop_at_turn else None,
    )
    was_training = model.training
    model.eval()
    try:
        ids, mask = _left_padded(queries, pad)
        cache = _shared_prefill(model, queries, pad) if share_prefill else None
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            cache=cache,
            generation_config=generation,
            tokenizer=tokenizer,
        ).cpu()
    finally:
        model.train(was_training)
    return [_cut(row, tokenizer.eos_token_id, pad) for row in out[:, ids.size(1) :].tolist()]


def _cut(row: list[int], eos: int | None, pad: int) -> list[int]:
    end = row.index(eos) + 1 if eos in row else len(row)
    while end and row[end - 1] == pad != eos:  # padding after a stop string
        end -= 1
    return row[:end]
