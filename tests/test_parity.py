"""The reward model that `pcrm train-rm` writes scores the same in every client (issue 17): each client loads the
command's own output folder, never a helper-saved one, and is compared with an independent oracle: the stock
`transformers` tokenizer and model loaded from the folder, each text cut by hand (special tokens kept, content
left-truncated to the training `--max-length`, special-token strings in the data read as plain text) and scored
alone (no padding).

Clients: `pcrm evaluate` (CLI), `pcrm.load_reward_function` (what `pcrm align` scores with), the
text-classification pipeline (default arguments and `truncation=True`), TRL's `GRPOTrainer` given the reward
function and given the folder path, and a RewardBench-style left-padded batch. Where a client cannot give pcrm's
score (a pipeline without truncation on long texts, BERT under left padding, TRL's own path loader), the test
asserts the documented behaviour (README: "Same score in every client")."""

import json

import numpy as np
import pytest
import torch

from pcrm.cli import main
from tests.conftest import PAIRS
from tests.rm_fixtures import tiny_llama_config, write_jsonl

MAX_LENGTH = 48  # the training --max-length: most test texts are longer
TOL = 1e-4
ZWSP = "\u200b"
MEASURED: dict = {}  # (model, client) -> max |score − oracle|; PCRM_PARITY_TABLE=FILE writes it (README table)


def _check(name, client, scores, expected, equal=True):
    """Record max |scores − expected| for the README table; assert it is ≤ TOL (or > TOL where documented)."""
    diff = float(np.abs(np.asarray(scores, dtype=float) - np.asarray(expected, dtype=float)).max())
    MEASURED[f"{name}|{client}"] = diff
    assert (diff <= TOL) if equal else (diff > TOL), f"{client}: max |diff| {diff:.3g}"


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    import os

    if os.environ.get("PCRM_PARITY_TABLE"):
        with open(os.environ["PCRM_PARITY_TABLE"], "w", encoding="utf-8") as f:
            json.dump(MEASURED, f, indent=1)


def _backbone(kind: str, tokenizer, path):
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    if kind == "bert":  # the MiniLM tokenizer and its 512 positions
        model = BertForSequenceClassification(BertConfig(max_position_embeddings=512, **common))
    else:  # the SmolLM2 tokenizer (BPE, ChatML template, no BOS added)
        model = LlamaForSequenceClassification(
            LlamaConfig(num_key_value_heads=2, max_position_embeddings=2048, **common)
        )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SPECIAL = {"bert": "[SEP] [CLS] [MASK]", "llama": "<|im_start|>system <|im_end|>"}
PROMPTS = [p for p, _, _ in PAIRS]
RESPONSES = [c for _, c, _ in PAIRS]
LONG = "Human: " + "a very long question about many things and more " * 60 + "\n\nAssistant:"  # > 512 tokens


def _bundled_texts():
    """Bundled held-out HH-RLHF texts from the shortest to the longest (18 to over 700 MiniLM tokens)."""
    from pcrm.data import load_preferences
    from pcrm.models import load_tokenizer

    test = load_preferences("hh-rlhf-harmless", split="test")
    texts = [(p, r) for p, c, x in zip(test["prompt"], test["chosen"], test["rejected"]) for r in (c, x)]
    counts = np.array([len(ids) for ids in load_tokenizer("minilm")([p + r for p, r in texts])["input_ids"]])
    order = np.argsort(counts, kind="stable")
    picked = order[np.linspace(0, len(order) - 1, 12).round().astype(int)]
    assert counts[picked].min() <= 20 and counts[picked].max() > 700
    return [texts[i][0] for i in picked], [texts[i][1] for i in picked]


def _texts(kind):
    """(prompts, responses): short texts, texts longer than MAX_LENGTH, one longer than BERT's 512 positions,
    and texts carrying the backbone's special-token strings; for the real MiniLM, bundled held-out texts too."""
    if kind == "minilm":
        prompts, responses = _bundled_texts()
        more = _texts("bert")
        return prompts + more[0][-3:], responses + more[1][-3:]
    special = SPECIAL[kind]
    prompts = PROMPTS + [LONG, f"Q: what does {special} mean?\nA:", "Q: " + "why " * 30 + "?\nA:"]
    responses = RESPONSES + [" the end.", f" It is written {special} in the data.", " Because."]
    return prompts, responses


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2_tokenizer_dir):
    """`pcrm train-rm` outputs: kind -> folder (tiny BERT, tiny Llama, tiny Llama with LoRA merged)."""
    from transformers import AutoTokenizer

    from pcrm.models import load_tokenizer

    root = tmp_path_factory.mktemp("contract")
    special = [{"prompt": f"Say {SPECIAL[k]}", "chosen": f" {SPECIAL[k]} said.", "rejected": " no"} for k in SPECIAL]
    data = write_jsonl(root / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS] + special)
    tokenizers = {"bert": load_tokenizer("minilm"), "llama": AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)}
    folders = {}
    runs = (
        ("bert", "bert", []),
        ("llama", "llama", []),
        ("llama-lora", "llama", ["--lora-r", "4"]),
        ("minilm", "minilm", []),
    )
    for name, kind, extra in runs:
        backbone = "minilm" if kind == "minilm" else _backbone(kind, tokenizers[kind], root / f"backbone-{name}")
        out = root / name
        argv = [
            "train-rm",
            "--model",
            str(backbone),
            "--data",
            str(data),
            "--eval-data",
            str(data),
            "--method",
            "bt",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--max-length",
            str(MAX_LENGTH),
            "--learning-rate",
            "1e-3",
            "--no-progress",
            "--output",
            str(out),
            *extra,
        ]
        assert main(argv) == 0
        folders[name] = out
    return folders


@pytest.fixture(scope="module", params=["bert", "llama", "llama-lora", "minilm"])
def folder(request, trained):
    return request.param, trained[request.param]


def _kind(name):
    """The oracle's special-token layout: BERT's for the MiniLM backbones, none for SmolLM2's tokenizer."""
    return "bert" if name in ("bert", "minilm") else "llama"


def _texts_of(name):
    return _texts("minilm" if name == "minilm" else _kind(name))


@torch.no_grad()
def oracle(folder, kind, texts, max_length=MAX_LENGTH):
    """Each text scored alone by the stock model; ids built by hand: content tokens with special-token strings split
    into plain text, cut from the left to leave room for the backbone's own special tokens ([CLS] … [SEP] for BERT,
    none for SmolLM2's tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    for text in texts:
        content = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if kind == "bert":
            ids = [
                tokenizer.cls_token_id,
                *content[len(content) - min(len(content), max_length - 2) :],
                tokenizer.sep_token_id,
            ]
        else:
            ids = content[-max_length:]
        scores.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    return np.array(scores)


def _token_count(folder, text):
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder)(text, split_special_tokens=True)["input_ids"])


def test_the_folder_records_how_it_is_read(folder):
    from transformers import AutoConfig, AutoTokenizer

    name, path = folder
    assert AutoConfig.from_pretrained(path).problem_type == "regression"
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert (tokenizer.truncation_side, tokenizer.padding_side) == ("left", "right")
    assert tokenizer.model_max_length == MAX_LENGTH and tokenizer.split_special_tokens is True
    assert tokenizer.chat_template  # the backbone's own (SmolLM2) or pcrm's plain one (MiniLM)
    record = json.loads((path / "pcrm_config.json").read_text())
    assert record["config"]["max_length"] == MAX_LENGTH and record["split_special_tokens"] is True
    assert not (path / "adapter_config.json").exists()  # LoRA merged: a plain reward-model folder


def test_texts_cover_short_long_and_special(folder):
    name, path = folder
    prompts, responses = _texts_of(name)
    counts = [_token_count(path, p + r) for p, r in zip(prompts, responses)]
    assert min(counts) < MAX_LENGTH < max(counts) and max(counts) > 512
    # the oracle would fail if data special tokens became real ones: splitting them changes the score
    special_text = prompts[-2] + responses[-2]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer(special_text, split_special_tokens=False)["input_ids"] != tokenizer(special_text)["input_ids"]


def test_pcrm_evaluate_scores_with_the_recorded_length(folder, tmp_path):
    name, path = folder
    prompts, responses = _texts_of(name)
    data = write_jsonl(
        tmp_path / "eval.jsonl", [{"prompt": p, "chosen": r, "rejected": " x"} for p, r in zip(prompts, responses)]
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(path),
                "--data",
                str(data),
                "--bootstrap",
                "0",
                "--priors",
                "length",
                "--no-progress",
                "--output",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )  # no --max-length: the recorded one
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (result,) = metrics["results"]
    assert result["max_length"] == MAX_LENGTH
    scores = np.load(tmp_path / "eval" / result["arrays"])["score"][0::2]  # responses are [chosen, rejected] per row
    expected = oracle(path, _kind(name), [p + r for p, r in zip(prompts, responses)])
    _check(name, "pcrm evaluate (recorded length)", scores, expected)


def test_reward_function_of_align_scores_as_evaluate(folder):
    from pcrm import load_reward_function
    from pcrm.scoring import RewardScorer

    name, path = folder
    prompts, responses = _texts_of(name)
    reward = load_reward_function(path, device="cpu")
    assert reward.max_length == MAX_LENGTH  # the recorded length, not 512
    assert RewardScorer.load(path, device="cpu").max_length == MAX_LENGTH  # what `pcrm align` loads
    scores = reward(prompts=prompts, completions=responses, completion_ids=None, trainer_state=None)
    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    _check(
        name,
        "load_reward_function (pcrm align)",
        scores,
        oracle(path, _kind(name), [p + r for p, r in zip(prompts, responses)]),
    )


def test_pipeline(folder):
    from transformers import pipeline

    name, path = folder
    prompts, responses = _texts_of(name)
    texts = [p + r for p, r in zip(prompts, responses)]
    expected = oracle(path, _kind(name), texts)
    classifier = pipeline("text-classification", model=str(path), device="cpu")
    # the raw score, cut as pcrm cuts
    _check(name, "pipeline truncation=True", [o["score"] for o in classifier(texts, truncation=True)], expected)
    _check(
        name,
        "pipeline truncation=True, batch_size=4",
        [o["score"] for o in classifier(texts, truncation=True, batch_size=4)],
        expected,
    )
    # default arguments: texts within the training length score the same; longer ones are read whole (documented)
    short = [i for i, t in enumerate(texts) if _token_count(path, t) <= MAX_LENGTH]
    _check(
        name,
        "pipeline default, texts within --max-length",
        [o["score"] for o in classifier([texts[i] for i in short])],
        expected[short],
    )
    longest = max(range(len(texts)), key=lambda i: _token_count(path, texts[i]))
    if _kind(name) == "bert":  # past the 512 positions the default pipeline fails (documented: pass truncation=True)
        with pytest.raises(Exception):
            classifier([texts[longest]])
    else:  # read whole: another score than pcrm's (documented)
        _check(
            name,
            "pipeline default, text over --max-length",
            [classifier([texts[longest]])[0]["score"]],
            expected[[longest]],
            equal=False,
        )


def _grpo(reward_funcs, policy_dir, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        bf16=False,
    )  # fp32: exact
    dataset = Dataset.from_dict({"prompt": ["a", "b"]})
    return GRPOTrainer(model=str(policy_dir), reward_funcs=reward_funcs, args=args, train_dataset=dataset)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer, "micro", num_key_value_heads=1)
    path = tmp_path_factory.mktemp("policy")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_trl_grpo_trainer(folder, policy_dir, tmp_path):
    """TRL's GRPOTrainer given pcrm's reward function and, as a second reward, the folder path (TRL's own loader:
    no special tokens added, no truncation; documented). SmolLM2's tokenizer adds no special tokens, so texts within
    the training length score the same through the path; BERT's lack [CLS]/[SEP] and differ."""
    from pcrm import load_reward_function

    name, path = folder
    prompts, responses = _texts_of(name)
    expected = oracle(path, _kind(name), [p + r for p, r in zip(prompts, responses)])
    short = [i for i, (p, r) in enumerate(zip(prompts, responses)) if _token_count(path, p + r) <= MAX_LENGTH]
    prompts, responses, expected = [prompts[i] for i in short], [responses[i] for i in short], expected[short]
    trainer = _grpo([load_reward_function(path, device="cpu"), str(path)], policy_dir, tmp_path)
    rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, responses, [[0]] * len(prompts))
    rewards = rewards.cpu().numpy()
    _check(name, "TRL GRPOTrainer, reward_funcs=load_reward_function(folder)", rewards[:, 0], expected)
    _check(
        name,
        "TRL GRPOTrainer, reward_funcs=folder path (texts within --max-length)",
        rewards[:, 1],
        expected,
        equal=_kind(name) == "llama",
    )


@torch.no_grad()
def test_rewardbench_style_left_padded_batch(folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pcrm.rewards import PaddingInvariant

    name, path = folder
    prompts, responses = _texts_of(name)
    texts = [p + r for p, r in zip(prompts, responses)]
    expected = oracle(path, _kind(name), texts)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # RewardBench's batched pipeline pads on the left
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")  # truncation: the saved length/side
    plain = model(**batch).logits[:, 0].numpy()
    fixed = PaddingInvariant(model)(**batch).logits[:, 0].numpy()  # right-aligns the batch first
    _check(name, "left-padded batch through PaddingInvariant", fixed, expected)
    # a decoder reads the last non-pad token (rotary positions are relative); BERT pools its first position, a pad
    # under left padding (documented; the fix is PaddingInvariant)
    _check(name, "left-padded batch, plain forward (RewardBench style)", plain, expected, equal=_kind(name) == "llama")


def test_conversational_training_keeps_template_tokens_real(tmp_path, smollm2_tokenizer_dir):
    """Trained on conversations with SmolLM2's ChatML template: the template's tokens are real special tokens, the
    data's `<|im_start|>` strings are escaped, and the saved tokenizer does not split special tokens."""
    from transformers import AutoTokenizer

    from pcrm import load_reward_function

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    backbone = _backbone("llama", tokenizer, tmp_path / "backbone")
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in PAIRS
    ]
    rows.append(
        {
            "prompt": [{"role": "user", "content": "say <|im_start|>system"}],
            "chosen": [{"role": "assistant", "content": "<|im_end|> done"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
    )
    data = write_jsonl(tmp_path / "conv.jsonl", rows)
    out = tmp_path / "rm"
    assert (
        main(
            [
                "train-rm",
                "--model",
                str(backbone),
                "--data",
                str(data),
                "--eval-data",
                str(data),
                "--method",
                "bt",
                "--max-steps",
                "1",
                "--max-length",
                str(MAX_LENGTH),
                "--no-progress",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.split_special_tokens is False
    prompt, completion = rows[-1]["prompt"], rows[-1]["chosen"]
    reward = load_reward_function(out, device="cpu")
    escaped = [
        {
            **m,
            "content": m["content"]
            .replace("<|im_start|>", "<" + ZWSP + "|im_start|>")
            .replace("<|im_end|>", "<" + ZWSP + "|im_end|>"),
        }
        for m in prompt + completion
    ]
    ids = saved.apply_chat_template(escaped, tokenize=False)
    ids = saved(ids)["input_ids"][-MAX_LENGTH:]
    assert ids.count(saved.convert_tokens_to_ids("<|im_start|>")) == 2  # the template's two turns, not the data's
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert reward([prompt], [completion])[0] == pytest.approx(expected, abs=TOL)
