"""Test helpers (plain functions, importable anywhere): the tiny random reward model, JSONL files, small data."""

import json
from pathlib import Path

PAIRS = [
    {
        "prompt": "Q: capital of France?\nA:",
        "chosen": " Paris.",
        "rejected": " I think it is probably Lyon, or maybe Marseille.",
    },
    {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Q: say hi\nA:", "chosen": " Hello there, nice to meet you!", "rejected": " no"},
    {"prompt": "Q: colour of the sky?\nA:", "chosen": " Blue on a clear day.", "rejected": " Green."},
    {"prompt": "Q: opposite of hot?\nA:", "chosen": " Cold.", "rejected": " Warm, sort of, depending on context."},
    {"prompt": "Q: largest planet?\nA:", "chosen": " Jupiter is the largest planet.", "rejected": " Mars."},
]
RANKED = [
    {"prompt": "Q1", "responses": ["a", "bb", "ccc"], "scores": [1, 2, 3]},
    {"prompt": "Q2", "responses": ["only one"], "scores": [5]},
    {"prompt": "Q3", "responses": ["x", "yy"], "scores": [2, 2]},
    {"prompt": "Q4", "responses": ["hello", "hi", "hey there"], "scores": [3, 1, 2]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_reward_model(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT reward model (num_labels=1) with the byte-level ByT5 tokenizer.

    The one tiny reward model of the suite (conftest's `tiny_rm_dir` is this with seed 0).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SIZES = {
    "small": dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64),
    "micro": dict(hidden_size=16, num_hidden_layers=1, intermediate_size=32),
}


def tiny_llama_config(tokenizer, size: str = "small", **overrides):
    """The suite's tiny random Llama for `tokenizer` (its vocabulary, pad and EOS ids): "small" is 32 wide × 2 layers,
    "micro" 16 × 1; two attention heads; `overrides` for the rest (num_key_value_heads=1, num_labels=1, ...)."""
    from transformers import LlamaConfig

    settings = dict(vocab_size=len(tokenizer), num_attention_heads=2, num_key_value_heads=2, **SIZES[size])
    settings |= dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaConfig(**settings | overrides)


def slow_marks(reason: str) -> list:
    """The marks of a test (or a `pytest.param`) that runs only in CI (`CI=true`, as `.ci/run` there) or with
    `PCRM_SLOW=1`: the default suite stays under 5 minutes on 2 CPU cores."""
    import os

    import pytest

    on = bool(os.environ.get("CI") or os.environ.get("PCRM_SLOW"))
    return [pytest.mark.slow, pytest.mark.skipif(not on, reason=f"{reason}: CI or PCRM_SLOW=1")]


def slow(reason: str):
    """Decorator form of `slow_marks`."""

    def mark(test):
        for each in slow_marks(reason):
            test = each(test)
        return test

    return mark


def free_port() -> int:
    """A port nobody listens on now, for `accelerate launch` (a fixed one collides when test runs share the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
