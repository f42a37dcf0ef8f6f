"""Pairwise preference losses: pure, vectorised functions of tensors (imports only torch).

Every function takes tensors of shape (batch,) and returns the per-pair loss of shape
(batch,), unreduced. `r_w`/`r_l` are the rewards of the chosen/rejected response and
`m = r_w − r_l` their margin. All terms use `logsigmoid`, so margins of ±1e4 stay finite.
"""

import torch
import torch.nn.functional as F


def ranking_term(x: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """`−(1−ε)·log σ(x) − ε·log σ(−x)`: the ranking loss of "x > 0" with label smoothing ε."""
    loss = -F.logsigmoid(x)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-x)
    return loss


def constraint_term(margin: torch.Tensor, delta: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """PCRM's prior term `−log σ(δ − m)`: pushes each margin below its bound δ (no gradient to δ)."""
    return ranking_term(delta.detach().to(margin.dtype) - margin, label_smoothing)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """`−log σ(r_w − r_l)`."""
    return ranking_term(chosen_rewards - rejected_rewards)


def pcrm_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`−log σ(r_w − r_l) − log σ(δ − (r_w − r_l))`, with δ the pair's prior margin bound δ*."""
    margin = chosen_rewards - rejected_rewards
    return ranking_term(margin) + constraint_term(margin, delta)


def lower_margin_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | float
) -> torch.Tensor:
    """`−log σ(r_w − r_l − m₀)`: a fixed lower margin m₀ (Llama-2 style)."""
    return ranking_term(chosen_rewards - rejected_rewards - margin)


def centering_penalty(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, coefficient: float) -> torch.Tensor:
    """`c · (r_w + r_l)²`: pulls rewards towards zero mean (TRL's `center_rewards_coefficient`)."""
    return coefficient * (chosen_rewards + rejected_rewards) ** 2


def dpo_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Implicit reward margin `m = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]`."""
    return beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))


def sigmoid_pair_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO: `−(1−ε)·log σ(m) − ε·log σ(−m)`."""
    return ranking_term(margin, label_smoothing)


def ipo_pair_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO: `(m/β − 1/(2β))²`, i.e. the log-ratio difference regressed to 1/(2β)."""
    return (margin / beta - 1 / (2 * beta)) ** 2


def hinge_pair_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """SLiC hinge: `max(0, 1 − m)`."""
    return torch.relu(1 - margin)


PAIR_LOSSES = {"sigmoid": sigmoid_pair_loss, "ipo": ipo_pair_loss, "hinge": hinge_pair_loss}


def constrained_pair_loss(
    margin: torch.Tensor,
    delta: torch.Tensor | None,
    loss_type: str = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Any rank-based pairwise loss plus PCRM's prior term on the same margin.

    Returns `(base_loss, constraint_loss)`, each of shape (batch,); the constraint is zero
    when `delta` is None. The one mechanism by which PCRM composes with DPO, IPO and hinge.
    """
    if loss_type not in PAIR_LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(PAIR_LOSSES)}, got {loss_type!r}")
    base = PAIR_LOSSES[loss_type](margin, beta, label_smoothing)
    if delta is None:
        return base, torch.zeros_like(base)
    return base, constraint_term(margin, delta, label_smoothing)


def pcrm_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    delta: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> torch.Tensor:
    """PCRM-DPO: `−log σ(m) − log σ(δ − m)` with DPO's implicit reward margin `m` (see `dpo_margin`).

    With label smoothing ε both terms become `−(1−ε)·log σ(x) − ε·log σ(−x)` (x = m, x = δ − m),
    as in the paper authors' code. `loss_type` swaps the first term for IPO or hinge.
    """
    margin = dpo_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    base, constraint = constrained_pair_loss(margin, delta, loss_type, beta, label_smoothing)
    return base + constraint
