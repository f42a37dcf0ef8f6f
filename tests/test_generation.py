"""pcrm.generation: one generate for rollouts, evaluate-policy and the pool; a shared prefill changes nothing."""

import pytest
import torch

from pcrm.generation import generate_ids
from tests.rm_fixtures import tiny_llama_config


@pytest.fixture(scope="module")
def policy():
    from transformers import ByT5Tokenizer, LlamaForCausalLM

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer, num_key_value_heads=1)
    return LlamaForCausalLM(config).eval(), tokenizer


def _stock(model, tokenizer, queries, max_new_tokens, temperature):
    """transformers' own generate on the left-padded batch, no cache handed in (the oracle)."""
    width = max(map(len, queries))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(q)) + q for q in queries])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(q) for q in queries])[:, None]).long()
    sample = temperature > 0
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_k=0 if sample else None,
        top_p=None,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    rows = out[:, width:].tolist()
    return [r[: r.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in r else r for r in rows]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_equals_stock_generate(policy, temperature):
    model, tokenizer = policy
    prompts = ["Human: hi there\nAssistant:", "Human: a much longer question about bread?\nAssistant:"]
    queries = [tokenizer(p)["input_ids"] for p in prompts for _ in range(3)]  # 3 samples each: prefill shared
    torch.manual_seed(5)
    ours = generate_ids(model, tokenizer, queries, 16, temperature, stop_at_turn=False)
    torch.manual_seed(5)
    assert ours == _stock(model, tokenizer, queries, 16, temperature)
    if temperature > 0:
        assert len({tuple(r) for r in ours[:3]}) > 1  # the rows of one prompt are different samples


def test_eos_ends_a_response_and_padding_is_dropped(policy):
    model, tokenizer = policy
    torch.manual_seed(0)
    rows = generate_ids(model, tokenizer, [[5, 6, 7], [8, 9]] * 8, 40, 1.0, stop_at_turn=False)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert any(row[-1] == eos for row in rows) and any(len(row) == 40 for row in rows)  # both ends occur
    for row in rows:
        assert 1 <= len(row) <= 40 and eos not in row[:-1] and row[-1] != pad
