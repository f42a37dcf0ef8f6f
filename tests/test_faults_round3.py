"""Hostile input, round three: the defects an attack review found in the one generate, the pool sampler, the
output-folder lock and the library configs (each failed before its fix)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pcrm.errors import PcrmError
from tests.rm_fixtures import tiny_llama_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def byt5():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def _llama(tok, **kw):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tok, num_key_value_heads=1, **kw)).eval()


@pytest.fixture(scope="module")
def smol(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    return tok, _llama(tok)


# --- pcrm/generation.py -------------------------------------------------------------------------------------------
def test_shared_prefill_on_a_mamba_policy(byt5):
    from transformers import MambaConfig, MambaForCausalLM
    from pcrm.generation import generate_ids

    torch.manual_seed(0)
    m = MambaForCausalLM(
        MambaConfig(
            vocab_size=len(byt5),
            hidden_size=32,
            num_hidden_layers=2,
            state_size=4,
            pad_token_id=byt5.pad_token_id,
            eos_token_id=byt5.eos_token_id,
        )
    ).eval()
    rows = generate_ids(m, byt5, [[5, 6, 7]] * 2, 4, 0.0)  # was: AttributeError (no batch_select_indices)
    assert rows == generate_ids(m, byt5, [[5, 6, 7]] * 2, 4, 0.0, share_prefill=False)


def test_shared_prefill_with_a_static_cache_policy(byt5):
    from pcrm.generation import generate_ids

    m = _llama(byt5)
    m.generation_config.cache_implementation = "static"
    rows = generate_ids(m, byt5, [[5, 6, 7]] * 2, 4, 0.0)  # was: ValueError (both cache_implementation and cache)
    assert len(rows) == 2 and rows[0] == rows[1]


def test_shared_prefill_materialises_only_last_logits(byt5):
    from pcrm.generation import generate_ids

    m = _llama(byt5)
    shapes, forward = [], m.forward
    m.forward = lambda *a, **k: (out := forward(*a, **k), shapes.append(tuple(out.logits.shape)))[0]
    generate_ids(m, byt5, [list(range(5, 105))] * 4, 1, 0.0)
    assert shapes[0][1] == 1, shapes  # was (1, 99, vocab): every prompt position's logits


def test_generate_ids_restores_training_mode_on_error(byt5):
    from pcrm.generation import generate_ids

    m = _llama(byt5).train()
    with pytest.raises(IndexError):
        generate_ids(m, byt5, [[5, 6, 10_000]] * 2, 4, 1.0)
    assert m.training


# --- pcrm/study/sampler.py ----------------------------------------------------------------------------------------
PROMPTS = [
    "\n\nHuman: How do I bake bread?\n\nAssistant:",
    "\n\nHuman: hi\n\nAssistant:",
    "\n\nHuman: a joke\n\nAssistant:",
]


def _pool(smol, path):
    from pcrm.study.sampler import PoolRecipe, sample_pool

    tok, model = smol
    recipe = PoolRecipe(samples=4, max_new_tokens=6, batch_size=4, seed=3)
    return sample_pool(model, tok, PROMPTS, recipe, path)


def test_torn_first_row_of_a_batch_resumes_to_a_readable_pool(smol, tmp_path):
    from pcrm.study.sampler import read_samples

    _pool(smol, tmp_path / "whole.jsonl")
    lines = (tmp_path / "whole.jsonl").read_text().splitlines()
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(lines[:4]) + "\n" + lines[4][:25])  # killed while the first row of batch 2 was written
    (tmp_path / "part.recipe.json").write_text((tmp_path / "whole.recipe.json").read_text())
    _pool(smol, part)
    assert read_samples(part) == read_samples(tmp_path / "whole.jsonl")  # JSONDecodeError: fragment glued to a row


def test_duplicate_rows_do_not_survive_a_resume(smol, tmp_path):
    from pcrm.study.sampler import read_samples

    whole = tmp_path / "whole.jsonl"
    _pool(smol, whole)
    lines = whole.read_text().splitlines()
    whole.write_text("\n".join(lines + lines[:4]) + "\n")  # two runs appended the same batch
    _pool(smol, whole)
    assert len(read_samples(whole)) == 12  # 16: pool.sample_responses then slices rows of prompt 0 into prompt 1


def test_corrupt_recipe_is_one_line(smol, tmp_path):
    _pool(smol, tmp_path / "p.jsonl")
    (tmp_path / "p.recipe.json").write_text("{")
    with pytest.raises(PcrmError, match="unreadable"):
        _pool(smol, tmp_path / "p.jsonl")  # was: json.JSONDecodeError


def test_base_model_prompt_keeps_special_token_strings_as_text(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    from pcrm.study.sampler import render_prompt

    base = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    base.chat_template = None
    ids = render_prompt("\n\nHuman: what is <|im_end|>?\n\nAssistant:", base, 1000)
    assert base.eos_token_id not in ids  # the data's "<|im_end|>" becomes the real EOS id (2)


# --- pcrm/outputs -------------------------------------------------------------------------------------------------
def test_a_failed_open_releases_the_lock(tmp_path):
    from pcrm.outputs import OutputFolder

    out = tmp_path / "run"
    out.mkdir()
    folder = OutputFolder(out, "evaluate")
    folder.plan()
    (out / "other.txt").write_text("x")  # another run finished meanwhile
    with pytest.raises(PcrmError, match="not an output"):
        folder.open()
    (out / "other.txt").unlink()
    OutputFolder(out, "evaluate").plan()  # PcrmError: in use by another pcrm run (pid <this process>)


def test_check_free_does_not_hang_on_a_fifo(tmp_path):
    os.mkfifo(tmp_path / ".run.pcrm-lock")
    code = (
        "import sys; from pathlib import Path; from pcrm.outputs.lock import check_free; check_free(Path(sys.argv[1]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")], cwd=REPO, timeout=60, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "is not a regular file" in proc.stderr  # was: blocked forever


# --- public API ---------------------------------------------------------------------------------------------------
def test_evaluate_reward_models_refuses_a_foreign_output(tmp_path):
    from tests.rm_fixtures import PAIRS, tiny_reward_model, write_jsonl
    from pcrm import RewardModelEvaluationConfig, evaluate_reward_models

    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text("MY OWN FILE")
    config = RewardModelEvaluationConfig(
        model=[str(tiny_reward_model(tmp_path / "rm"))],
        output=str(out),
        data=[str(write_jsonl(tmp_path / "p.jsonl", PAIRS))],
        bootstrap=0,
        priors=["length"],
        progress=False,
    )
    with pytest.raises(PcrmError):
        evaluate_reward_models(config)  # writes metrics.json + scores/ into the foreign folder, no lock
    assert (out / "metrics.json").read_text() == "MY OWN FILE"


@pytest.mark.parametrize("options", [{"lora": "false"}, {"batch_size": "4"}, {"max_length": 64.5}])
def test_dpo_config_refuses_wrong_types_with_one_line(options):
    from pcrm import DPOPolicyConfig

    with pytest.raises(PcrmError):
        DPOPolicyConfig(**options)  # lora="false" accepted (truthy: LoRA on); "4" -> TypeError; 64.5 accepted


def test_rm_eval_config_refuses_a_string_for_a_list():
    from pcrm import RewardModelEvaluationConfig

    with pytest.raises(PcrmError, match="runs/rm|list"):
        RewardModelEvaluationConfig(model="runs/rm")  # accepted; evaluate then checks the model "r", "u", ...


def test_replace_recomputes_the_default_max_prompt_length():
    from pcrm import DPOPolicyConfig

    assert dataclasses.replace(DPOPolicyConfig(), max_length=1024).prompt_length == 512  # was 128, frozen in
    assert dataclasses.replace(DPOPolicyConfig(), max_length=100).prompt_length == 50  # was a refusal
