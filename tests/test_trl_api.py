"""pcrm overrides TRL internals (pcrm/trainers/reward.py, pcrm/trainers/dpo.py); fail loudly when TRL changes them.

pyproject.toml pins trl to the tested minor. Before widening that pin, run this file against the new TRL: a failure
names the internal that changed, and the pcrm override to review.
"""

import inspect
import re

import pytest
import trl
from trl import DPOTrainer, RewardTrainer
from trl.trainer import reward_trainer

OVERRIDDEN = [  # (TRL class, method, expected parameter names, pcrm file that overrides or calls it)
    (RewardTrainer, "_set_signature_columns_if_needed", ["self"], "pcrm/trainers/reward.py"),
    (
        RewardTrainer,
        "compute_loss",
        ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
        "pcrm/trainers/reward.py",
    ),
    (DPOTrainer, "_compute_loss", ["self", "model", "inputs", "return_outputs"], "pcrm/trainers/dpo.py"),
    (DPOTrainer, "compute_ref_log_probs", ["self", "model", "inputs"], "pcrm/trainers/dpo.py"),
    (DPOTrainer, "_set_signature_columns_if_needed", ["self"], "pcrm/trainers/dpo.py"),
]


def _changed(what: str, expected, found, where: str) -> str:
    return (
        f"TRL {trl.__version__} changed {what}: pcrm expects {expected}, found {found}. "
        f"Review the override in {where} against the new TRL before widening the trl pin in pyproject.toml."
    )


@pytest.mark.parametrize("cls, method, expected, where", OVERRIDDEN, ids=lambda x: getattr(x, "__name__", str(x)))
def test_overridden_method_signatures(cls, method, expected, where):
    function = getattr(cls, method, None)
    assert function is not None, _changed(f"{cls.__name__}.{method}", "it to exist", "no such method", where)
    found = list(inspect.signature(function).parameters)
    assert found == expected, _changed(f"the signature of {cls.__name__}.{method}", expected, found, where)


def test_dpo_compute_loss_dispatches_to_compute_loss():
    source = inspect.getsource(DPOTrainer.compute_loss)
    assert "self._compute_loss(" in source, _changed(
        "DPOTrainer.compute_loss",
        "a call of self._compute_loss",
        "no such call",
        "pcrm/trainers/dpo.py (PcrmDPOTrainer._compute_loss)",
    )


def test_reward_collator_takes_pad_token_id():
    import torch

    collator_class = getattr(reward_trainer, "DataCollatorForPreference", None)
    where = "pcrm/trainers/reward.py (build_trainer)"
    assert collator_class is not None, _changed(
        "trl.trainer.reward_trainer.DataCollatorForPreference", "it to exist", "none", where
    )
    parameters = list(inspect.signature(collator_class).parameters)
    assert "pad_token_id" in parameters, _changed(
        "DataCollatorForPreference's parameters", "pad_token_id", parameters, where
    )
    batch = collator_class(pad_token_id=0)(
        [{"chosen_ids": [5, 6, 7], "rejected_ids": [5]}, {"chosen_ids": [8], "rejected_ids": [9, 9]}]
    )
    assert {"input_ids", "attention_mask"} <= set(batch), _changed(
        "DataCollatorForPreference's batch keys", "input_ids, attention_mask", sorted(batch), where
    )
    # chosen rows first, then rejected: PCRMRewardTrainer.compute_loss chunks the logits in two
    assert batch["input_ids"][:, 0].tolist() == [5, 8, 5, 9] and batch["attention_mask"].sum().item() == 7
    assert isinstance(batch["input_ids"], torch.Tensor)


@pytest.mark.parametrize(
    "cls, where",
    [(RewardTrainer, "pcrm/trainers/reward.py"), (DPOTrainer, "pcrm/trainers/dpo.py")],
    ids=["RewardTrainer", "DPOTrainer"],
)
def test_metrics_attribute(cls, where):
    init = inspect.getsource(cls.__init__)
    pattern = r'self\._metrics\s*=\s*\{\s*"train":\s*defaultdict\(list\),\s*"eval":\s*defaultdict\(list\)\s*\}'
    assert re.search(pattern, init), _changed(
        f"{cls.__name__}._metrics",
        '{"train": defaultdict(list), "eval": defaultdict(list)}',
        "another definition",
        where,
    )
    assert "self._metrics" in inspect.getsource(cls.log), _changed(
        f"{cls.__name__}.log", "it to log self._metrics", "no use of self._metrics", where
    )


def test_dpo_attributes_pcrm_reads():
    init = inspect.getsource(DPOTrainer.__init__)
    for name in ("precompute_ref_logps", "loss_types", "beta", "label_smoothing", "ref_model"):
        assert re.search(rf"self\.{name}\s*=", init), _changed(
            f"DPOTrainer.{name}",
            "an attribute set in __init__",
            "none",
            "pcrm/trainers/dpo.py (PcrmDPOTrainer._compute_loss)",
        )
