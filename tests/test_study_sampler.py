"""The study's pool sampler: chat-template prompts, EOS stop, and a resumed pool equal to an uninterrupted one."""

import json

import numpy as np
import pytest
import torch

from pcrm.errors import PcrmError
from pcrm.study.sampler import PoolRecipe, hh_messages, read_samples, render_prompt, sample_pool
from tests.rm_fixtures import tiny_llama_config

PROMPTS = [
    "\n\nHuman: How do I bake bread?\n\nAssistant:",
    "\n\nHuman: hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke about cats, please.\n\nAssistant:",
    "\n\nHuman: What is <|im_start|> in ChatML?\n\nAssistant:",
]


@pytest.fixture(scope="module")
def policy(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer, "micro", num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # EOS likely enough that some samples stop early and some hit the cap
        hidden = model.model(torch.arange(1, 200)[None]).last_hidden_state[0]
        direction = hidden.mean(0) / hidden.mean(0).norm() ** 2
        model.lm_head.weight[tokenizer.eos_token_id] = 2.0 * direction
    return model.eval(), tokenizer


def test_hh_messages_by_hand():
    assert hh_messages(PROMPTS[1]) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about cats, please."},
    ]
    with pytest.raises(PcrmError, match="HH-style"):
        hh_messages("no turns here")


def test_render_prompt_is_the_chat_template_and_drops_early_turns(policy):
    _, tokenizer = policy
    ids = render_prompt(PROMPTS[1], tokenizer, 1000)
    expected = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke about cats, please."},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert tokenizer.decode(ids) == expected
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    short = render_prompt(PROMPTS[1], tokenizer, len(ids) - 1)
    assert "Hello!" not in tokenizer.decode(short) and "joke about cats" in tokenizer.decode(short)
    # data that spells a special token stays text: the template's own markers are the only real ones
    special = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert render_prompt(PROMPTS[2], tokenizer, 1000).count(special) == 3  # system, user, assistant


def test_resumed_pool_equals_uninterrupted(policy, tmp_path):
    model, tokenizer = policy
    recipe = PoolRecipe(samples=4, max_new_tokens=12, batch_size=5, seed=3)
    whole = tmp_path / "whole.jsonl"
    figures = sample_pool(model, tokenizer, PROMPTS, recipe, whole)
    assert figures["samples"] == 12
    rows = read_samples(whole)
    assert [(r["prompt_index"], r["sample"]) for r in rows] == [(i, j) for i in range(3) for j in range(4)]
    for row in rows:
        assert 1 <= row["tokens"] <= 12 and (row["tokens"] == 12 or not row["capped"])
    assert any(r["capped"] for r in rows) and any(r["tokens"] < 12 for r in rows)  # both ends exercised
    # interrupted after the first batch, then resumed
    part = tmp_path / "part.jsonl"
    lines = whole.read_text().splitlines()
    part.write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])  # killed in batch 2, mid-line
    part.with_suffix(".recipe.json").write_text(whole.with_suffix(".recipe.json").read_text())
    assert sample_pool(model, tokenizer, PROMPTS, recipe, part)["samples"] == 7
    assert read_samples(part) == rows
    with pytest.raises(PcrmError, match="another recipe"):
        sample_pool(model, tokenizer, PROMPTS, PoolRecipe(samples=4, max_new_tokens=13, batch_size=5), part)
    assert json.loads(part.with_suffix(".recipe.json").read_text())["max_new_tokens"] == 12


def test_a_reply_with_a_line_separator_is_one_row(policy, tmp_path):
    """JSONL rows are split on newlines only: a reply holding U+2028 or U+0085 (json.dumps(ensure_ascii=False) writes
    them raw; str.splitlines splits there) resumes as complete, reads back whole and reads as a pool."""
    from pcrm.study.pool import read_pool, write_pool

    model, tokenizer = policy
    recipe = PoolRecipe(samples=2, max_new_tokens=4, batch_size=2, seed=0)
    path = tmp_path / "samples.jsonl"
    sample_pool(model, tokenizer, PROMPTS, recipe, path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    rows[1]["response"] = " first\u2028second\x85third"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert sample_pool(model, tokenizer, PROMPTS, recipe, path)["samples"] == 0  # nothing re-sampled
    assert read_samples(path)[1]["response"] == " first\u2028second\x85third"
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, ["a"], [[" first\u2028second", " x"]], np.zeros((1, 2)))
    assert read_pool(pool)[1] == [[" first\u2028second", " x"]]
