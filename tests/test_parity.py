"""A saved reward model gives pcrm's score (`pcrm.scoring.score_texts`) in every client, to 1e-4: each text
scored alone by a plain forward, batched with right or left padding, a `transformers` text-classification
pipeline with default arguments, pcrm's TRL reward function; long inputs are cut from the left, not crashed on."""

import pytest
import torch

from pcrm.models import CHAT_TEMPLATE, save_reward_model
from pcrm.rewards import PaddingInvariant, load_reward_function, reward_logits
from pcrm.scoring import score_texts
from pcrm.tokenization import render, tokenize
from tests.conftest import PAIRS

MAX_LENGTH = 120  # above the longest pair, below the tiny models' 128 positions: longer inputs must be cut, not crash
TOL = 1e-4
PROMPTS = [p for p, _, _ in PAIRS]
COMPLETIONS = [c for _, c, _ in PAIRS] + [r for _, _, r in PAIRS]
PROMPTS = PROMPTS + PROMPTS
LONG = "Human: " + "a very long question about many things " * 20 + "\n\nAssistant: the end."  # > 128 tokens


def _tiny(kind: str, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=128, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**common))
    return LlamaForSequenceClassification(LlamaConfig(num_key_value_heads=2, **common))


@pytest.fixture(scope="module", params=["bert", "llama", "minilm"])
def rm_dir(request, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, ByT5Tokenizer

    from pcrm.models import load_tokenizer, resolve_model

    if request.param == "minilm":  # the bundled real encoder with a randomly initialised one-output head
        torch.manual_seed(0)
        tokenizer = load_tokenizer("minilm")
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=1)
    else:
        tokenizer = ByT5Tokenizer()  # bytes; pad 0, eos 1 appended to every text
        model = _tiny(request.param, tokenizer)
    path = tmp_path_factory.mktemp(f"rm-{request.param}")
    save_reward_model(model, tokenizer, path, max_length=MAX_LENGTH)
    return path


@pytest.fixture(scope="module")
def loaded(rm_dir):
    from pcrm.models import load_reward_model, load_tokenizer

    return load_reward_model(rm_dir).eval(), load_tokenizer(rm_dir)


def _texts(tokenizer):
    return [render(p, c, tokenizer) for p, c in zip(PROMPTS, COMPLETIONS)] + [LONG]


@torch.no_grad()
def _alone(model, tokenizer, texts):
    """Each text tokenized as pcrm does (left-truncated, special tokens) and scored alone: no padding at all."""
    ids, _ = tokenize(tokenizer, texts, MAX_LENGTH)
    return torch.tensor([model(input_ids=torch.tensor([row])).logits[0, 0].item() for row in ids])


def _padded_batch(tokenizer, texts, side):
    ids, _ = tokenize(tokenizer, texts, MAX_LENGTH)
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        input_ids[i, span], mask[i, span] = torch.tensor(row), 1
    return input_ids, mask


def test_saved_for_other_clients(rm_dir):
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(rm_dir).problem_type == "regression"
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    assert (tokenizer.truncation_side, tokenizer.padding_side, tokenizer.model_max_length) == ("left", "right", MAX_LENGTH)
    assert tokenizer.chat_template == CHAT_TEMPLATE  # none of these tokenizers had one


def test_pcrm_scores_equal_each_text_alone(loaded):
    model, tokenizer = loaded
    texts = _texts(tokenizer)
    assert len(tokenize(tokenizer, [LONG], None)[0][0]) > MAX_LENGTH  # (tiny models: longer than the position table) cut, no crash
    pcrm = torch.from_numpy(score_texts(model, tokenizer, texts, MAX_LENGTH, batch_size=5, progress=False)).float()
    assert torch.allclose(pcrm, _alone(model, tokenizer, texts), atol=TOL)


@torch.no_grad()
def test_left_padding_gives_the_same_scores(loaded):
    model, tokenizer = loaded
    texts = _texts(tokenizer)
    alone = _alone(model, tokenizer, texts)
    right = model(*_padded_batch(tokenizer, texts, "right")).logits[:, 0]
    assert torch.allclose(right, alone, atol=TOL)
    left_ids, left_mask = _padded_batch(tokenizer, texts, "left")
    # pcrm's padding-independent forward (and wrapper) right-aligns a left-padded batch first
    assert torch.allclose(reward_logits(model, left_ids, left_mask), alone, atol=TOL)
    assert torch.allclose(PaddingInvariant(model)(input_ids=left_ids, attention_mask=left_mask).logits[:, 0], alone, atol=TOL)
    plain = model(input_ids=left_ids, attention_mask=left_mask).logits[:, 0]
    if model.config.model_type == "llama":
        # a decoder reads the rightmost non-pad token, and rotary positions are relative: a plain left-padded
        # forward (RewardBench-style batching) already gives each text's score, with or without position ids
        assert torch.allclose(plain, alone, atol=TOL)
        positions = (left_mask.cumsum(1) - 1).clamp(min=0)
        assert torch.allclose(model(input_ids=left_ids, attention_mask=left_mask, position_ids=positions).logits[:, 0], alone, atol=TOL)
    else:
        # an encoder pools its first token, a pad under left padding: documented, clients must right-align
        assert (plain - alone).abs().max() > TOL


def test_pipeline_with_default_arguments(rm_dir, loaded):
    from transformers import pipeline

    model, tokenizer = loaded
    texts = _texts(tokenizer)[:-1]  # the pipeline does not truncate unless asked
    pcrm = score_texts(model, tokenizer, texts, MAX_LENGTH, progress=False)
    classifier = pipeline("text-classification", model=str(rm_dir), device="cpu")
    out = classifier(texts)
    assert [o["score"] for o in out] == pytest.approx(pcrm.tolist(), abs=TOL)  # the raw score: no sigmoid
    batched = classifier(texts, batch_size=4)  # padded by the saved tokenizer (right)
    assert [o["score"] for o in batched] == pytest.approx(pcrm.tolist(), abs=TOL)
    (long,) = classifier([LONG], truncation=True)  # cut from the left to the training max length, as pcrm does
    assert long["score"] == pytest.approx(float(score_texts(model, tokenizer, [LONG], MAX_LENGTH, progress=False)[0]), abs=TOL)


def test_trl_reward_function(rm_dir, loaded):
    model, tokenizer = loaded
    reward = load_reward_function(rm_dir, device="cpu")
    assert reward.max_length == MAX_LENGTH  # from the saved tokenizer
    prompts, completions = PROMPTS + [LONG], COMPLETIONS + [" short answer"]
    scores = reward(prompts=prompts, completions=completions, completion_ids=None, trainer_state=None)
    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    expected = _alone(model, tokenizer, [p + c for p, c in zip(prompts, completions)])
    assert torch.allclose(torch.tensor(scores), expected, atol=TOL)
    # conversational prompts and completions, as TRL passes them, go through the saved chat template
    conv_prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    conv_completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    texts = [f"User: {p}\n\nAssistant: {c}" for p, c in zip(PROMPTS, COMPLETIONS)]
    assert torch.allclose(torch.tensor(reward(conv_prompts, conv_completions)), _alone(model, tokenizer, texts), atol=TOL)


def test_chat_template_renders_as_pcrm(rm_dir):
    from transformers import AutoTokenizer

    from pcrm.models import load_tokenizer

    saved = AutoTokenizer.from_pretrained(rm_dir)
    plain = load_tokenizer(rm_dir)
    plain.chat_template = None
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi\nthere"},
                {"role": "assistant", "content": " Hello!"}, {"role": "user", "content": "bye"}]
    assert saved.apply_chat_template(messages, tokenize=False) == render([], messages, plain)
    assert render(messages[:2], messages[2:], saved) == render(messages[:2], messages[2:], plain)


def test_proxy_reward_uses_the_reward_function(rm_dir, loaded):
    import numpy as np

    from pcrm.alignment.rl_trl import ProxyReward
    from pcrm.alignment.rollout import RewardModel, RewardShaper

    proxy = ProxyReward(RewardModel(str(rm_dir), MAX_LENGTH, 4), RewardShaper())
    completions = [c + "\n\nHuman: and more" for c in COMPLETIONS]
    scores = proxy(PROMPTS, completions)
    model, tokenizer = loaded
    assert np.allclose(scores, _alone(model, tokenizer, [p + c for p, c in zip(PROMPTS, COMPLETIONS)]).numpy(), atol=TOL)
