"""The losses the trainers actually compute, against formulas evaluated by hand.

Rewards and log-probs are computed here independently of pcrm: the plain transformers model is
called on the token ids, and log-probs are `log_softmax` + `gather` over the completion tokens.
`PcrmDPOTrainer` without a `delta` column is also checked against stock `trl.DPOTrainer`.
"""

import math

import pytest
import torch
from tests.rm_fixtures import tiny_llama_config

RM_PAIRS = [
    ("How do I bake bread?", " Mix flour, water and yeast, then bake.", " No."),
    ("Name a colour.", " Blue.", " Seven, or maybe a chair."),
    ("Say hello politely.", " Hello, how are you today?", " What do you want?"),
    ("What is 2+2?", " 4.", " It is probably five."),
]
DELTAS = [0.05, 0.5, -0.02, 1.5]


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + eˣ), evaluated stably."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def neg_log_sigmoid(x: float) -> float:
    return softplus(-x)


def ranking(x: float, eps: float = 0.0) -> float:
    return (1 - eps) * neg_log_sigmoid(x) + eps * neg_log_sigmoid(-x)


# ---- reward model -----------------------------------------------------------------------


def _rm_trainer(tiny_rm_dir, tmp_path, method, with_delta, **kwargs):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from pcrm.trainers.collators import DeltaCollator
    from pcrm.trainers.reward import PCRMRewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    rows = {
        "chosen_ids": [tokenizer(p + c)["input_ids"] for p, c, _ in RM_PAIRS],
        "rejected_ids": [tokenizer(p + r)["input_ids"] for p, _, r in RM_PAIRS],
    }
    if with_delta:
        rows["delta"] = DELTAS
    args = RewardConfig(
        output_dir=str(tmp_path / "unused"),
        per_device_train_batch_size=len(RM_PAIRS),
        max_length=None,
        train_sampling_strategy="sequential",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir)
    trainer = PCRMRewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        processing_class=tokenizer,
        data_collator=DeltaCollator(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)),
        method=method,
        **kwargs,
    )
    return trainer, rows


def _independent_rewards(tiny_rm_dir, rows):
    """r_w and r_l of every pair: the plain model on each unpadded sequence."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir).eval()
    with torch.no_grad():
        score = lambda ids: model(input_ids=torch.tensor([ids])).logits[0, 0].item()  # noqa: E731
        return [score(ids) for ids in rows["chosen_ids"]], [score(ids) for ids in rows["rejected_ids"]]


@pytest.mark.parametrize(
    "method, with_delta, kwargs",
    [
        ("bt", False, {}),
        ("length", True, {}),
        ("lower-margin", False, {"lower_margin": 0.7}),
        ("center", False, {"center_coefficient": 0.3}),
    ],
)
def test_reward_trainer_loss_is_the_formula(tiny_rm_dir, tmp_path, method, with_delta, kwargs):
    trainer, rows = _rm_trainer(tiny_rm_dir, tmp_path, method, with_delta, **kwargs)
    batch = next(iter(trainer.get_train_dataloader()))
    assert ("delta" in batch) == with_delta
    model = trainer.model.eval()  # no dropout: the loss is a function of the batch
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()

    chosen, rejected = _independent_rewards(tiny_rm_dir, rows)
    m0 = kwargs.get("lower_margin", 0.0)
    c = kwargs.get("center_coefficient", 0.0)
    per_pair = []
    for i, (r_w, r_l) in enumerate(zip(chosen, rejected)):
        m = r_w - r_l
        value = neg_log_sigmoid(m - m0) + c * (r_w + r_l) ** 2
        if with_delta:
            value += neg_log_sigmoid(DELTAS[i] - m)
        per_pair.append(value)
    assert loss == pytest.approx(sum(per_pair) / len(per_pair), abs=1e-6)
    if method == "length":  # δ must matter: the same rewards without the prior give a different loss
        assert abs(loss - sum(neg_log_sigmoid(a - b) for a, b in zip(chosen, rejected)) / len(chosen)) > 1e-3


# ---- DPO --------------------------------------------------------------------------------

DPO_PAIRS = [
    ("Q: capital of France?\nA:", " Paris.", " I think it is Lyon."),
    ("Q: 2+2?\nA:", " 4", " 5, or six."),
    ("Q: say hi\nA:", " Hello there!", " no"),
    ("Q: a fruit?\nA:", " An apple.", " A chair."),
]
DPO_DELTAS = [0.3, 2.0, -0.1, 0.8]
BETA = 0.5


@pytest.fixture(scope="module")
def llamas(tmp_path_factory):
    """A tiny random Llama policy and a differently initialised reference, with a byte tokenizer."""
    from transformers import ByT5Tokenizer, LlamaForCausalLM

    root = tmp_path_factory.mktemp("llamas")
    tokenizer = ByT5Tokenizer()
    config = tiny_llama_config(tokenizer, bos_token_id=None)
    for seed, name in ((0, "policy"), (1, "reference")):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def _dpo_args(tmp_path, loss_type="sigmoid", label_smoothing=0.0):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(tmp_path / "unused"),
        beta=BETA,
        loss_type=[loss_type],
        label_smoothing=label_smoothing,
        max_length=128,
        per_device_train_batch_size=len(DPO_PAIRS),
        precompute_ref_log_probs=False,
        bf16=False,
        train_sampling_strategy="sequential",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )


def _dpo_trainer(cls, llamas, args, with_delta):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in DPO_PAIRS]
    if with_delta:
        rows = [{**row, "delta": d} for row, d in zip(rows, DPO_DELTAS)]
    policy = AutoModelForCausalLM.from_pretrained(llamas / "policy")
    reference = AutoModelForCausalLM.from_pretrained(llamas / "reference")
    return cls(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(llamas / "policy"),
    )


def _completion_logps(model_dir, batch) -> tuple[list[float], list[float]]:
    """Σ log p(token) over the completion tokens, from a freshly loaded model's logits with plain torch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.double()
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logps = (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1).tolist()
    half = len(logps) // 2
    return logps[:half], logps[half:]


def _hand_dpo_loss(llamas, batch, loss_type, eps, deltas):
    policy_w, policy_l = _completion_logps(llamas / "policy", batch)
    ref_w, ref_l = _completion_logps(llamas / "reference", batch)
    base, constraint = [], []
    for i in range(len(policy_w)):
        m = BETA * ((policy_w[i] - ref_w[i]) - (policy_l[i] - ref_l[i]))
        base.append(
            {"sigmoid": ranking(m, eps), "ipo": (m / BETA - 1 / (2 * BETA)) ** 2, "hinge": max(0.0, 1 - m)}[loss_type]
        )
        constraint.append(ranking(deltas[i] - m, eps) if deltas is not None else 0.0)
    return sum(base) / len(base) + sum(constraint) / len(constraint)


@pytest.mark.parametrize(
    "loss_type, with_delta, eps",
    [
        ("sigmoid", False, 0.0),
        ("sigmoid", True, 0.0),
        ("ipo", False, 0.0),
        ("ipo", True, 0.0),
        ("hinge", False, 0.0),
        ("hinge", True, 0.0),
        ("sigmoid", True, 0.2),
        ("ipo", True, 0.2),
    ],
)
def test_pcrm_dpo_trainer_loss_is_the_formula(llamas, tmp_path, loss_type, with_delta, eps):
    from pcrm.trainers.dpo import PcrmDPOTrainer

    trainer = _dpo_trainer(PcrmDPOTrainer, llamas, _dpo_args(tmp_path, loss_type, eps), with_delta)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["completion_mask"].sum() > 0 and batch["input_ids"].shape[0] == 2 * len(DPO_PAIRS)
    if with_delta:
        assert batch["delta"].tolist() == pytest.approx(DPO_DELTAS)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    expected = _hand_dpo_loss(llamas, batch, loss_type, eps, DPO_DELTAS if with_delta else None)
    assert loss == pytest.approx(expected, abs=1e-6)


def test_pcrm_dpo_without_delta_equals_stock_trl_dpo(llamas, tmp_path):
    from trl import DPOTrainer

    from pcrm.trainers.dpo import PcrmDPOTrainer

    stock = _dpo_trainer(DPOTrainer, llamas, _dpo_args(tmp_path), with_delta=False)
    ours = _dpo_trainer(PcrmDPOTrainer, llamas, _dpo_args(tmp_path), with_delta=False)
    batch = next(iter(stock.get_train_dataloader()))
    stock.model.eval()
    ours.model.eval()
    with torch.no_grad():
        expected = stock.compute_loss(stock.model, dict(batch)).item()
        actual = ours.compute_loss(ours.model, dict(batch)).item()
    assert actual == pytest.approx(expected, abs=1e-6)
    assert expected > 0.01  # the policy and reference differ, so the margin is not trivially 0 (loss ln 2)
    assert abs(expected - math.log(2)) > 1e-4
