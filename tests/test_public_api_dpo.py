"""The DPO side of the library's front door: `pcrm.train_dpo_policy` trains and saves a policy, and leaves the process
as it found it; `pcrm.evaluate_reward_models` is importable with its config."""

import json
from pathlib import Path

import pytest

from tests.rm_fixtures import PAIRS, write_jsonl


def _tiny_policy(path: Path) -> Path:
    """A randomly initialised 2-layer Llama causal LM with the byte-level ByT5 tokenizer."""
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    return _tiny_policy(tmp_path_factory.mktemp("tiny-policy"))


def _config(policy: Path, data: Path, output: Path):
    from pcrm import DPOPolicyConfig

    return DPOPolicyConfig(
        method="fixed",
        policy=str(policy),
        data=str(data),
        output=str(output),
        max_steps=2,
        batch_size=2,
        gradient_accumulation=1,
        max_length=64,
        learning_rate=1e-3,
        progress=False,
    )


def test_dpo_and_evaluation_names_import():
    import pcrm
    from pcrm import DPOPolicyConfig, PcrmDPOTrainer, RewardModelEvaluationConfig, evaluate_reward_models
    from pcrm import train_dpo_policy
    from pcrm.commands import evaluate, train_dpo

    assert {"DPOPolicyConfig", "train_dpo_policy", "evaluate_reward_models"} <= set(pcrm.__all__)
    assert train_dpo.Config is DPOPolicyConfig and train_dpo.train_dpo_policy is train_dpo_policy
    assert evaluate.Config is RewardModelEvaluationConfig and evaluate.evaluate_reward_models is evaluate_reward_models
    assert PcrmDPOTrainer.__name__ == "PcrmDPOTrainer"


def test_train_dpo_policy_writes_a_loadable_policy(policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pcrm import train_dpo_policy

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    summary = train_dpo_policy(_config(policy_dir, data, tmp_path / "policy"))
    assert summary["metrics"]["last_step"]["step"] == 2 and summary["data"]["pairs"] == len(PAIRS)
    saved = json.loads((tmp_path / "policy" / "pcrm_config.json").read_text())
    assert saved["method"] == "fixed" and saved["prior"]["fixed_delta"] == 2.5
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert model.config.hidden_size == 32
    AutoTokenizer.from_pretrained(tmp_path / "policy")


def test_train_dpo_policy_twice_leaves_the_process_as_it_was(policy_dir, tmp_path):
    """No process-wide side effects: a process group the caller set up stays up (and is the same group), and the
    SIGTERM/SIGINT handlers are the caller's after each call."""
    import signal

    import torch.distributed as dist

    from pcrm import train_dpo_policy

    def handler(signum, frame):  # the caller's own
        pass

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    previous = signal.signal(signal.SIGTERM, handler)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        for run in range(2):
            train_dpo_policy(_config(policy_dir, data, tmp_path / f"policy{run}"))
            assert (tmp_path / f"policy{run}" / "pcrm_config.json").is_file()
            assert dist.is_initialized() and dist.group.WORLD is group and dist.get_world_size() == 1
            assert signal.getsignal(signal.SIGTERM) is handler
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        dist.destroy_process_group()
        signal.signal(signal.SIGTERM, previous)
