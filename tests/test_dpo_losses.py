"""PCRM-DPO losses (`pcrm.losses`) against values computed by hand."""

import math

import pytest
import torch

from pcrm.losses import constrained_pair_loss, dpo_margin, pcrm_dpo_loss

# β = 0.5; log-ratios chosen [1, 0], rejected [-1, 1] -> margins m = 0.5·[2, -1] = [1, -0.5]
LOGPS = dict(
    policy_chosen_logps=torch.tensor([-1.0, -2.0]),
    policy_rejected_logps=torch.tensor([-3.0, -1.0]),
    ref_chosen_logps=torch.tensor([-2.0, -2.0]),
    ref_rejected_logps=torch.tensor([-2.0, -2.0]),
)
BETA = 0.5
DELTA = torch.tensor([2.0, 1.0])  # δ − m = [1, 1.5]
SOFTPLUS = {1.0: 0.31326168751822286, -0.5: 0.97407698418010670, 1.5: 0.20141327798275246}  # −log σ(x) = log(1 + e^−x)


def test_margin_by_hand():
    assert dpo_margin(*LOGPS.values(), beta=BETA).tolist() == [1.0, -0.5]


@pytest.mark.parametrize(
    "loss_type, base",
    [
        ("sigmoid", [SOFTPLUS[1.0], SOFTPLUS[-0.5]]),  # −log σ(m)
        ("ipo", [1.0, 4.0]),  # (m/β − 1/(2β))² = (2m − 1)²
        ("hinge", [0.0, 1.5]),  # max(0, 1 − m)
    ],
)
def test_pcrm_dpo_loss_by_hand(loss_type, base):
    constraint = [SOFTPLUS[1.0], SOFTPLUS[1.5]]  # −log σ(δ − m)
    loss = pcrm_dpo_loss(**LOGPS, delta=DELTA, beta=BETA, loss_type=loss_type)
    assert loss.tolist() == pytest.approx([b + c for b, c in zip(base, constraint)], rel=1e-6)


def test_label_smoothing_smooths_both_sigmoid_terms():
    eps = 0.1
    smooth = lambda x: (1 - eps) * math.log1p(math.exp(-x)) + eps * math.log1p(math.exp(x))  # noqa: E731
    loss = pcrm_dpo_loss(**LOGPS, delta=DELTA, beta=BETA, label_smoothing=eps)
    assert loss.tolist() == pytest.approx([smooth(1.0) + smooth(1.0), smooth(-0.5) + smooth(1.5)], rel=1e-6)
    assert loss.tolist() == pytest.approx([0.4132616875 * 2, 0.9240769842 + 0.3514132780], rel=1e-6)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_label_smoothing_leaves_ipo_and_hinge_bases(loss_type):
    margin = dpo_margin(*LOGPS.values(), beta=BETA)
    plain, _ = constrained_pair_loss(margin, DELTA, loss_type, BETA)
    smoothed, constraint = constrained_pair_loss(margin, DELTA, loss_type, BETA, label_smoothing=0.1)
    assert smoothed.tolist() == plain.tolist()
    assert constraint.tolist() == pytest.approx([0.4132616875, 0.3514132780], rel=1e-6)


def test_constraint_gradient_is_sigmoid_of_excess_and_delta_gets_none():
    margin = torch.tensor([1.0, -0.5, 3.0], requires_grad=True)
    delta = torch.tensor([2.0, 1.0, 2.0], requires_grad=True)
    _, constraint = constrained_pair_loss(margin, delta)
    constraint.sum().backward()
    # d/dm −log σ(δ − m) = σ(m − δ)
    assert margin.grad.tolist() == pytest.approx(torch.sigmoid(torch.tensor([-1.0, -1.5, 1.0])).tolist(), rel=1e-6)
    assert delta.grad is None


def test_gradient_through_logps_and_stationary_point_at_half_delta():
    chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    pcrm_dpo_loss(chosen, *list(LOGPS.values())[1:], delta=DELTA, beta=BETA).sum().backward()
    margin = torch.tensor([1.0, -0.5])
    # dL/d logπ(y_w) = β·(σ(m − δ) − σ(−m))
    expected = BETA * (torch.sigmoid(margin - DELTA) - torch.sigmoid(-margin))
    assert chosen.grad.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    # −log σ(m) − log σ(δ − m) is smallest at m = δ/2
    m = torch.tensor([0.75], requires_grad=True)
    base, constraint = constrained_pair_loss(m, torch.tensor([1.5]))
    (base + constraint).sum().backward()
    assert m.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_no_delta_means_no_constraint():
    margin = torch.tensor([1.0, -0.5])
    base, constraint = constrained_pair_loss(margin, None)
    assert constraint.tolist() == [0.0, 0.0]
    assert base.tolist() == pytest.approx([SOFTPLUS[1.0], SOFTPLUS[-0.5]], rel=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        constrained_pair_loss(margin, None, "kto")


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_extreme_margins_stay_finite(loss_type):
    margin = torch.tensor([1e4, -1e4], requires_grad=True)
    base, constraint = constrained_pair_loss(margin, torch.tensor([2.0, 2.0]), loss_type, 0.1, label_smoothing=0.1)
    (base + constraint).sum().backward()
    assert torch.isfinite(base).all() and torch.isfinite(constraint).all() and torch.isfinite(margin.grad).all()
    # the constraint costs ≈ (1−ε)·(m − δ) above the bound and ≈ ε·(δ − m) far below it
    assert constraint.tolist() == pytest.approx([0.9 * 9998, 0.1 * 10002], rel=1e-4)
