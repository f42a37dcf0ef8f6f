"""`pcrm align --method ppo`: PPO on transformers + accelerate, in one readable loop.

Every step:
1. rollout: one sampled response (temperature 1) per prompt of the batch; per-token log-probs of the
   policy and of the frozen reference, values from a linear value head on the policy's last hidden state;
   the proxy RM's score (raw, or normalised/clipped by `RewardShaper`) is the reward of the last response
   token, and every token pays `kl_coef · (log π − log π_ref)`;
2. advantages by GAE (whitened over the batch), returns = advantages + values;
3. `ppo_epochs` passes over shuffled minibatches: clipped policy loss + `vf_coef` · clipped value loss.
The policy runs in eval mode throughout (no dropout), as usual for RLHF.
"""

import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pcrm.alignment.rollout import RewardShaper, StepLog, forward, pack, reward_stats, sample, select_rows
from pcrm.errors import PcrmError


class PolicyWithValue(nn.Module):
    """A causal LM and a linear value head on its last hidden state (zero-initialised: values start at 0)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.value_head = nn.Linear(model.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: dict):
        """Log-probs and values of the response tokens of a packed batch."""
        logp, hidden = forward(self.model, batch, hidden=True)
        return logp, self.value_head(hidden).squeeze(-1)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask):
    mean = masked_mean(x, mask)
    return (x - mean) * torch.rsqrt(masked_mean((x - mean) ** 2, mask) + 1e-8) * mask


def gae(rewards, values, mask, gamma: float, lam: float):
    """Advantages A_t = Σ_k (γλ)^k δ_{t+k} with δ_t = r_t + γ·V_{t+1} − V_t over right-padded token rows
    (V = 0 after a row's last token), and returns A_t + V_t."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def policy_loss(logp, old_logp, advantages, mask, clip: float):
    """PPO's clipped surrogate max(−A·ρ, −A·clip(ρ, 1±ε)) with ρ = π/π_old, and the fraction of tokens clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = -advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)
    return masked_mean(torch.max(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float):
    """½·max((V − R)², (V_clipped − R)²), V_clipped kept within ±clip of the rollout's values."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def explained_variance(values, returns, mask) -> float:
    """1 − Var[R − V] / Var[R] over response tokens (1: perfect values, ≤ 0: no better than a constant)."""
    variance = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    error = returns - values
    return (1 - masked_mean((error - masked_mean(error, mask)) ** 2, mask) / variance.clamp(min=1e-8)).item()


@torch.no_grad()
def rollout(
    policy: PolicyWithValue, reference, tokenizer, prompts: list[str], reward_model, shaper: RewardShaper, config
):
    """Sample, score and compute advantages for one batch of prompts: (packed batch with targets, statistics)."""
    queries, responses, texts = sample(policy.model, tokenizer, prompts, config.max_new_tokens, 1.0, config.batch_size)
    batch = pack(queries, responses, tokenizer.pad_token_id, policy.model.device)
    mask = batch["response_mask"]
    logp, values = policy(batch)
    ref_logp, _ = forward(reference, batch)
    raw = reward_model.scores(prompts, texts)
    kl = (logp - ref_logp) * mask
    rewards = -config.kl_coef * kl
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(last)), last] += torch.as_tensor(shaper(raw), dtype=rewards.dtype, device=rewards.device)
    advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
    batch.update(old_logp=logp, old_values=values, advantages=masked_whiten(advantages, mask), returns=returns)
    stats = {
        **reward_stats(raw),
        "kl": kl.sum(1).mean().item(),
        "length": mask.sum(1).mean().item(),
        "explained_variance": explained_variance(values, returns, mask),
    }
    return batch, stats


def update(policy, optimizer, accelerator, batch: dict, config, generator) -> dict:
    """`ppo_epochs` passes of clipped PPO over shuffled minibatches; the mean losses and clip fraction."""
    records = defaultdict(list)
    for _ in range(config.ppo_epochs):
        for rows in torch.randperm(batch["input_ids"].size(0), generator=generator).split(config.minibatch_size):
            mb = select_rows(batch, rows.to(batch["input_ids"].device))
            mask = mb["response_mask"]
            logp, values = policy(mb)
            pg, clipfrac = policy_loss(logp, mb["old_logp"], mb["advantages"], mask, config.clip_range)
            vf = value_loss(values, mb["old_values"], mb["returns"], mask, config.value_clip)
            optimizer.zero_grad()
            accelerator.backward(pg + config.vf_coef * vf)
            accelerator.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            for key, value in (("policy_loss", pg), ("value_loss", vf), ("clip_fraction", clipfrac)):
                records[key].append(value.item())
    return {key: float(np.mean(values)) for key, values in records.items()}


def train_ppo(config, reward_model, prompts: list[str], tokenizer, reference, probe, output: Path) -> None:
    """PPO of `config.policy` against `reward_model` for `config.steps` steps; logs, checkpoints and the policy under
    `output`."""
    from accelerate import Accelerator

    from pcrm.models import default_device, load_causal_lm

    checkpoint = output / "checkpoint"
    start = load_state(checkpoint / "state.pt") if config.resume else {"step": 0}
    policy = PolicyWithValue(load_causal_lm(checkpoint / "policy" if config.resume else config.policy)).eval()
    optimizer = torch.optim.Adam(
        [
            {"params": policy.model.parameters()},
            {"params": policy.value_head.parameters(), "lr": config.value_learning_rate},
        ],
        lr=config.learning_rate,
    )
    shaper = RewardShaper(config.reward_norm, config.reward_clip)
    if config.resume:
        policy.value_head.load_state_dict(start["value_head"])
        optimizer.load_state_dict(start["optimizer"])
        shaper.load_state_dict(start["shaper"])
    accelerator = Accelerator(
        cpu=default_device(config.device) == "cpu"
    )  # --device; placement and backward; one process (sampling and logging are not sharded)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    log = StepLog(output / "log.jsonl", start["step"] if config.resume else None)
    if start["step"] == 0:
        log.write({"step": 0, **probe(policy.model)}, config.steps)
    for step in range(start["step"], config.steps):
        tic = time.perf_counter()
        torch.manual_seed(config.seed + step)
        batch_prompts = [prompts[(step * config.batch_size + i) % len(prompts)] for i in range(config.batch_size)]
        batch, stats = rollout(policy, reference, tokenizer, batch_prompts, reward_model, shaper, config)
        stats |= update(
            policy, optimizer, accelerator, batch, config, torch.Generator().manual_seed(config.seed + step)
        )
        if (step + 1) % config.probe_every == 0 or step + 1 == config.steps:
            stats |= probe(policy.model)
        log.write({"step": step + 1, **stats, "seconds": time.perf_counter() - tic}, config.steps)
        if config.save_steps and (step + 1) % config.save_steps == 0:
            save_checkpoint(checkpoint, policy, optimizer, shaper, step + 1)
    policy.model.save_pretrained(output / "policy")
    tokenizer.save_pretrained(output / "policy")


def save_checkpoint(path: Path, policy: PolicyWithValue, optimizer, shaper: RewardShaper, step: int) -> None:
    """Policy weights, value head, optimizer and reward statistics after `step` steps, replacing the previous
    checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp / "policy")
    shaper_state = {
        key: float(value) for key, value in shaper.state_dict().items()
    }  # plain numbers: loadable without pickle
    state = {
        "step": step,
        "value_head": policy.value_head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "shaper": shaper_state,
    }
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_state(path: Path) -> dict:
    """A checkpoint's state.pt, read with `weights_only=True`: tensors and plain containers only,
    never code (pickle)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # a crafted or corrupt file: refused before anything in it runs
        raise PcrmError(f"{path}: not a checkpoint written by pcrm ({type(err).__name__})") from None
    if not (isinstance(state, dict) and {"step", "value_head", "optimizer", "shaper"} <= set(state)):
        raise PcrmError(f"{path}: not a checkpoint written by pcrm (expected step, value_head, optimizer, shaper)")
    return state
