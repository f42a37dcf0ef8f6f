"""Reward-model losses against values computed by hand."""

import math
import subprocess
import sys

import pytest
import torch

from pcrm import losses


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_losses_import_nothing_heavier_than_torch():
    heavy = ("transformers", "trl", "datasets", "numpy.f2py", "scipy")
    code = f"import sys, pcrm.losses; print(any(m in sys.modules for m in {heavy!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bradley_terry_by_hand():
    chosen = torch.tensor([1.0, 0.0, -2.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    expected = [-log_sigmoid(1.0), math.log(2.0), -log_sigmoid(-3.0)]
    assert losses.bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-6)


def test_pcrm_by_hand():
    chosen = torch.tensor([1.0, 3.0, 0.5])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    delta = torch.tensor([2.0, 2.0, 5.0])
    # margins 1, 3, -0.5 with bounds 2, 2, 5
    expected = [
        -log_sigmoid(1.0) - log_sigmoid(1.0),
        -log_sigmoid(3.0) - log_sigmoid(-1.0),
        -log_sigmoid(-0.5) - log_sigmoid(5.5),
    ]
    assert losses.pcrm_loss(chosen, rejected, delta).tolist() == pytest.approx(expected, rel=1e-6)


def test_scale_controls_by_hand():
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.5])
    assert losses.lower_margin_loss(chosen, rejected, 1.0).tolist() == pytest.approx([math.log(2), -log_sigmoid(-1.5)])
    assert losses.centering_penalty(chosen, rejected, 0.1).tolist() == pytest.approx([0.9, 0.625])


def test_label_smoothing_by_hand():
    x = torch.tensor([0.7])
    eps = 0.2
    expected = -(1 - eps) * log_sigmoid(0.7) - eps * log_sigmoid(-0.7)
    assert losses.ranking_term(x, eps).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fn", ["bradley_terry", "pcrm"])
def test_stable_at_huge_margins(fn):
    chosen = torch.tensor([1e4, -1e4, 0.0], requires_grad=True)
    rejected = torch.tensor([-1e4, 1e4, 0.0])
    delta = torch.tensor([3.0, 3.0, 3.0])
    loss = (
        losses.bradley_terry_loss(chosen, rejected)
        if fn == "bradley_terry"
        else losses.pcrm_loss(chosen, rejected, delta)
    )
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(chosen.grad).all()
    if fn == "pcrm":
        assert loss[0].item() == pytest.approx(2e4 - 3.0, rel=1e-6)  # −log σ(3 − 2e4) ≈ 2e4 − 3


def margin_gradient(margin: float, delta: float) -> float:
    m = torch.tensor([margin], requires_grad=True)
    losses.pcrm_loss(m, torch.zeros(1), torch.tensor([delta])).sum().backward()
    return m.grad.item()


def test_pcrm_gradient_vanishes_only_inside_the_band():
    delta = 20.0
    # d/dm = −σ(−m) + σ(m − δ): comfortably inside 0 < m < δ it is ~0.
    assert abs(margin_gradient(10.0, delta)) < 1e-4
    assert margin_gradient(-1.0, delta) < -0.5  # wrong order: pushed up
    assert margin_gradient(25.0, delta) > 0.9  # above the bound: pushed down
    assert margin_gradient(0.0, delta) == pytest.approx(-0.5, abs=1e-6)
    assert margin_gradient(delta, delta) == pytest.approx(0.5, abs=1e-6)
    m = torch.tensor([0.3], requires_grad=True)
    losses.bradley_terry_loss(m, torch.zeros(1)).sum().backward()
    assert m.grad.item() == pytest.approx(-1 / (1 + math.exp(0.3)), rel=1e-6)


def test_delta_gets_no_gradient():
    delta = torch.tensor([1.0], requires_grad=True)
    losses.pcrm_loss(torch.tensor([2.0], requires_grad=True), torch.zeros(1), delta).sum().backward()
    assert delta.grad is None
