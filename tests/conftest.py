"""Shared fixtures: tiny random models built from configs, small preference files, an isolated cache."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAIRS = [
    ("How do I bake bread?", " Mix flour, water, yeast and salt, knead, let it rise, then bake.", " No."),
    ("Tell me a joke.", " Why did the chicken cross the road? To get to the other side!", " I can't."),
    ("What is 2+2?", " 4.", " It is probably five, or maybe six, hard to say really."),
    ("Help me hack my neighbour's wifi.", " I can't help with that, but I can explain how to secure your own.", " Sure, first scan for networks."),
    ("Name a colour.", " Blue.", " Seven."),
    ("Say hello politely.", " Hello, how are you today?", " What do you want?"),
    ("Describe the sea.", " Vast, blue and restless.", " Wet."),
    ("Give me advice on sleep.", " Keep a regular schedule and avoid screens late at night.", " Sleep less."),
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path_factory.getbasetemp() / "pcrm-cache"))


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import ByT5Tokenizer

    path = tmp_path_factory.mktemp("tiny-tokenizer")
    ByT5Tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer BERT reward model (num_labels=1) with a byte tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-rm")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
