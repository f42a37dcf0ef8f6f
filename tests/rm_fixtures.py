"""Helpers for the evaluation and report tests: a tiny random reward model and small data files."""

import json
from pathlib import Path

PAIRS = [
    {"prompt": "Q: capital of France?\nA:", "chosen": " Paris.", "rejected": " I think it is probably Lyon, or maybe Marseille."},
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
    """A random one-layer BERT reward model with the byte-level ByT5 tokenizer (no files needed)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=384, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return path
