"""What best-of-N, PPO, RLOO and GRPO share: prompts, seeded sampling, reward scoring and shaping,
per-token log-probs, the step log, and the probe that judges a policy on fixed held-out prompts.

A response ends at the policy's EOS or at the token that completes the next user turn
("\\n\\nHuman:", as in `pcrm evaluate-policy`); reward models read it without that turn.
"""

import json
from pathlib import Path

import numpy as np
import torch

from pcrm.errors import PcrmError
from pcrm.io import jsonl_lines
from pcrm.evaluation.metrics import win_rate
from pcrm.tokenization import TURN, cut_prompts


def load_prompts(
    source: str,
    split: str,
    tokenizer,
    max_tokens: int,
    count: int | None = None,
    seed: int = 0,
    config_name: str | None = None,
    columns: str | None = None,
    use: str | None = None,
) -> list[str]:
    """Distinct text prompts of a split in a seeded order (the first `count`), cut from the left to `max_tokens` tokens.
    `use` (what the prompts are for): print the data summary (`pcrm.console.print_data_summary`)."""
    from pcrm.console import print_data_summary
    from pcrm.data import LoadReport, load_preferences

    report = LoadReport() if use else None  # none: the loader logs its warnings
    prompts = load_preferences(source, split, config_name=config_name, columns=columns, report=report).shuffle(
        seed=seed
    )["prompt"]
    if not isinstance(prompts[0], str):
        raise PcrmError(f"{source}: pcrm align needs text prompts (this data is conversational)")
    prompts, cut = cut_prompts(list(dict.fromkeys(prompts))[:count], tokenizer, max_tokens)
    if use:
        cut = f", {cut} cut to their last {max_tokens} tokens" if cut else ""
        print_data_summary(report, f"{len(prompts)} distinct prompts for {use}{cut}")
    return prompts


def response_length(ids: list[int], tokenizer) -> int:
    """Tokens of a generated response: up to its first EOS, or to the token that completes the next user turn."""
    for k in range(1, len(ids) + 1):
        if ids[k - 1] == tokenizer.eos_token_id or TURN in tokenizer.decode(ids[:k]):
            return k
    return len(ids)


def response_text(ids: list[int], tokenizer) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).split(TURN)[0]


def sample(model, tokenizer, texts: list[str], max_new_tokens: int, temperature: float = 1.0, batch_size: int = 8):
    """One sampled response per text (seed with `torch.manual_seed` first): (query ids, response ids, response texts).
    Generation is `pcrm.generation.generate_ids` (the samples of one prompt in a batch share its prefill)."""
    from pcrm.generation import generate_ids

    queries, responses = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size])["input_ids"]
        for query, generated in zip(batch, generate_ids(model, tokenizer, batch, max_new_tokens, temperature)):
            queries.append(list(query))
            responses.append(generated[: response_length(generated, tokenizer)])
    return queries, responses, [response_text(r, tokenizer) for r in responses]


def pack(queries: list[list[int]], responses: list[list[int]], pad_id: int, device="cpu") -> dict:
    """Queries left-padded, responses right-padded, in one batch; `width` is the query width, `response_mask` marks
    response tokens."""
    width, length = max(map(len, queries)), max(map(len, responses))
    input_ids = torch.full((len(queries), width + length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, (q, r) in enumerate(zip(queries, responses)):
        input_ids[i, width - len(q) : width + len(r)] = torch.tensor(q + r)
        attention_mask[i, width - len(q) : width + len(r)] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": attention_mask[:, width:].float(),
    }
    return {"width": width, **{k: v.to(device) for k, v in batch.items()}}


def forward(model, batch: dict, hidden: bool = False):
    """Log-probs of the response tokens under `model` ([rows, response tokens]) and, with `hidden`, the last hidden
    states that predict them (the input of a value head)."""
    logits, states = _response_logits(model, batch, hidden)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, batch["input_ids"][:, batch["width"] :, None]).squeeze(-1)
    return logp, states


def _response_logits(model, batch: dict, hidden: bool = False):
    """(float logits over the vocabulary at the positions that predict the response tokens, their last hidden
    states)."""
    mask, width = batch["attention_mask"], batch["width"]
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=(mask.cumsum(1) - 1).clamp(min=0),
        output_hidden_states=hidden,
        use_cache=False,
    )
    return out.logits[:, width - 1 : -1].float(), (out.hidden_states[-1][:, width - 1 : -1] if hidden else None)


def exact_kl(policy, reference, batch: dict) -> torch.Tensor:
    """KL(π ‖ π_ref) of each row's response, exact per token: Σ over its tokens of Σ_v π(v | prefix) ·
    (log π(v | prefix) − log π_ref(v | prefix)), the prefixes being the sampled ones. Every term is a KL between two
    distributions, so the sum is ≥ 0 (unlike Σ log π/π_ref over the sampled tokens, an unbiased but noisy estimate that
    can go negative)."""
    logp, logq = (torch.log_softmax(_response_logits(model, batch)[0], dim=-1) for model in (policy, reference))
    per_token = (logp.exp() * (logp - logq)).sum(-1).clamp(min=0.0)  # ≥ 0 up to rounding
    return (per_token * batch["response_mask"]).sum(1)


class RewardShaper:
    """Raw scores → the learner's rewards: optionally standardised by the running mean/std of all raw scores seen
    so far (`normalize`), then optionally clipped to [−clip, clip]. Both are the usual reward-scale controls."""

    def __init__(self, normalize: bool = False, clip: float | None = None):
        self.normalize, self.clip = normalize, clip
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        rewards = np.asarray(raw, dtype=np.float64)
        if self.normalize:
            n, mean = len(rewards), rewards.mean()
            delta, total = mean - self.mean, self.count + n
            self.m2 += ((rewards - mean) ** 2).sum() + delta**2 * self.count * n / total
            self.mean += delta * n / total
            self.count = total
            rewards = (rewards - self.mean) / np.sqrt(self.m2 / self.count + 1e-8)
        if self.clip is not None:
            rewards = np.clip(rewards, -self.clip, self.clip)
        return rewards

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


def reward_stats(raw: np.ndarray) -> dict:
    return {"reward_mean": float(np.mean(raw)), "reward_std": float(np.std(raw)), "reward_max": float(np.max(raw))}


class Probe:
    """Fixed held-out prompts, one seeded sample per prompt at every call (the same random numbers each time):
    proxy and judge reward, KL to the reference (`exact_kl`: the exact per-token KL over the vocabulary, summed over
    the response; never negative) and length. The first
    call's judge scores, kept in `start_file`, are the opponent of the win rate."""

    def __init__(self, prompts, tokenizer, reference, proxy, judge, config, start_file: Path):
        self.prompts, self.tokenizer, self.reference, self.proxy, self.judge = (
            prompts,
            tokenizer,
            reference,
            proxy,
            judge,
        )
        self.config, self.start_file = config, Path(start_file)
        self.start = json.loads(self.start_file.read_text()) if self.start_file.exists() else None

    @torch.no_grad()
    def __call__(self, policy) -> dict:
        config = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            queries, responses, texts = sample(
                policy, self.tokenizer, self.prompts, config.max_new_tokens, 1.0, config.batch_size
            )
        batch = pack(queries, responses, self.tokenizer.pad_token_id, policy.device)
        chunks = (
            select_rows(batch, slice(i, i + config.batch_size)) for i in range(0, len(queries), config.batch_size)
        )
        kl = torch.cat([exact_kl(policy, self.reference, b) for b in chunks])
        proxy = self.proxy.scores(self.prompts, texts)
        judge = self.judge.scores(self.prompts, texts) if self.judge else None
        if self.start is None:  # the starting policy; its proxy spread is the unit of proxy gain
            self.start = {
                "proxy_mean": float(proxy.mean()),
                "proxy_std": float(proxy.std()),
                "judge": None if judge is None else judge.tolist(),
            }
            self.start_file.write_text(json.dumps(self.start))
        row = {
            "probe_kl": kl.mean().item(),
            "probe_proxy": float(proxy.mean()),
            "probe_proxy_gain": (float(proxy.mean()) - self.start["proxy_mean"]) / max(self.start["proxy_std"], 1e-8),
            "probe_length": batch["response_mask"].sum(1).mean().item(),
        }
        if judge is not None:
            row["probe_judge"] = float(judge.mean())
            row["probe_win_rate"] = win_rate(judge, self.start["judge"], config.bootstrap, config.seed)
        return row


def select_rows(batch: dict, rows) -> dict:
    """The rows (a slice or an index tensor) of a packed batch."""
    return {k: v if k == "width" else v[rows] for k, v in batch.items()}


class StepLog:
    """`log.jsonl` (one JSON object per step) and a console line. On resume, rows after `resume_step` are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        rows = []
        if resume_step is not None and self.path.exists():
            saved = map(json.loads, jsonl_lines(self.path.read_text(encoding="utf-8")))
            rows = [r for r in saved if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict, steps: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        parts = [f"step {row['step']}/{steps}"]
        if "reward_mean" in row:
            parts.append(f"reward {row['reward_mean']:.3f} ± {row['reward_std']:.3f} (max {row['reward_max']:.3f})")
            parts += [f"{key} {row[key]:.3f}" for key in ("kl", "length", "explained_variance") if key in row]
        if "probe_kl" in row:
            judge = (
                f", judge {row['probe_judge']:.3f}, win {row['probe_win_rate']['rate']:.2f}"
                if "probe_judge" in row
                else ""
            )
            parts.append(f"probe: proxy {row['probe_proxy']:.3f}, kl {row['probe_kl']:.3f}{judge}")
        print(" | ".join(parts), flush=True)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl_lines(Path(path).read_text(encoding="utf-8"))]
