"""`pcrm evaluate-policy`: judge aligned policies against their starting policy.

On held-out pairs: the implicit reward margin `m = β·[log π/π_ref (y_w) − log π/π_ref (y_l)]`,
computed by the training code path (TRL's tokenisation, `PcrmDPOTrainer.sequence_logps`): accuracy
(m > 0), margin scale, log-prob drift. On held-out prompts: one response per policy (greedy, or
seeded sampling), its length, and, with `--judge` (a reward-model directory), the judge's score and
the win rate against the starting policy and against `--baseline` (e.g. plain DPO) with percentile
bootstrap CIs over prompts. Policies are assumed to share the starting policy's tokenizer.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcrm.errors import PcrmError
from pcrm.io import atomic_write_text, write_json

TURN = "\n\nHuman:"  # a text prompt's next user turn: where a response to an HH-style prompt ends


@dataclass
class Config:
    """Implicit rewards on held-out pairs, judge win rates and response lengths on held-out prompts."""

    policy: list[str] = field(default_factory=list, metadata={"help": "policy directory to evaluate (repeat for several)"})
    reference: str = field(default="smollm2", metadata={"help": "starting policy: π_ref of the implicit rewards, opponent of the win rate"})
    baseline: str | None = field(default=None, metadata={"help": "second opponent of the win rates, e.g. a plain DPO policy"})
    judge: str | None = field(default=None, metadata={"help": "reward-model directory that scores responses (none: no win rates)"})
    data: str = field(default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory"})
    split: str = field(default="test", metadata={"help": "held-out split"})
    pairs: int = field(default=64, metadata={"help": "held-out pairs for the implicit rewards"})
    prompts: int = field(default=32, metadata={"help": "held-out prompts to generate responses for"})
    beta: float | None = field(default=None, metadata={"help": "β of the implicit reward (default: the policy's pcrm_config.json, else 0.1)"})
    max_length: int = field(default=256, metadata={"help": "max tokens of prompt + response (as in training)"})
    max_prompt_length: int | None = field(default=None, metadata={"help": "prompts are cut from the left to this many tokens (default: max-length/2)"})
    max_new_tokens: int = field(default=48, metadata={"help": "max tokens of a generated response"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0: greedy)"})
    batch_size: int = field(default=8, metadata={"help": "batch size of scoring and generation"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the win-rate CIs"})
    seed: int = field(default=0, metadata={"help": "seed of the subsets, sampling and bootstrap"})
    output: str = field(default="runs/policy-eval", metadata={"help": "directory for metrics.json, table.md, responses.jsonl"})

    def __post_init__(self):
        if self.max_prompt_length is None:
            self.max_prompt_length = self.max_length // 2
        checks = (
            (bool(self.policy), "--policy is required (a policy directory; repeat for several)"),
            (self.beta is None or (math.isfinite(self.beta) and self.beta > 0), f"--beta must be a finite number > 0, got {self.beta}"),
            (self.pairs >= 1 and self.prompts >= 1, f"--pairs and --prompts must be >= 1, got {self.pairs} and {self.prompts}"),
            (0 < self.max_prompt_length < self.max_length, f"--max-prompt-length must be in [1, --max-length), got {self.max_prompt_length}"),
            (self.max_new_tokens >= 1, f"--max-new-tokens must be >= 1, got {self.max_new_tokens}"),
            (math.isfinite(self.temperature) and self.temperature >= 0, f"--temperature must be >= 0, got {self.temperature}"),
            (self.batch_size >= 1 and self.bootstrap >= 1, "--batch-size and --bootstrap must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise PcrmError(message)


def run(config: Config) -> dict:
    from pcrm.data import load_preferences
    from pcrm.models import load_causal_lm, load_tokenizer, resolve_model

    start = time.perf_counter()
    for name in (*config.policy, config.reference, config.baseline, config.judge):
        if name is not None:
            resolve_model(name)  # fail early on a missing directory
    held_out = load_preferences(config.data, split=config.split).shuffle(seed=config.seed)
    pairs = held_out.select(range(min(config.pairs, len(held_out))))
    unique = {}
    for prompt in held_out["prompt"]:
        unique.setdefault(json.dumps(prompt, sort_keys=True), prompt)
    prompts = list(unique.values())[: config.prompts]
    tokenizer = load_tokenizer(config.reference)
    reference = load_causal_lm(config.reference)
    scorer = PairScorer(reference, tokenizer, pairs, config)
    inputs = _prompt_texts(prompts, tokenizer, config.max_prompt_length)

    names = list(dict.fromkeys([config.reference, *([config.baseline] if config.baseline else []), *config.policy]))
    rows = {config.reference: {"policy": config.reference, "responses": generate(reference, tokenizer, inputs, config)}}
    for name in names[1:]:
        model = load_causal_lm(name).to(scorer.device)
        info = _training_info(name)
        rows[name] = {
            "policy": name,
            **info,
            "implicit": scorer.implicit_rewards(model, config.beta or info.get("beta") or 0.1),
            "responses": generate(model, tokenizer, inputs, config),
        }
        print(f"{name}: implicit-reward accuracy {rows[name]['implicit']['accuracy']:.3f}", flush=True)
        del model
    for row in rows.values():
        row["length"] = _length_stats(row["responses"], tokenizer)
    if config.judge:
        _judge(rows, prompts, config, scorer.device)
    metrics = {
        "config": asdict(config),
        "pairs": len(pairs),
        "prompts": len(prompts),
        "seconds": time.perf_counter() - start,
        "policies": [{k: v for k, v in row.items() if k != "responses"} for row in rows.values()],
    }
    output = Path(config.output)
    write_json(output / "metrics.json", metrics)
    _write_responses(output / "responses.jsonl", rows, prompts)
    table = format_table(metrics)
    atomic_write_text(output / "table.md", table + "\n")
    print(table)
    print(f"wrote {output / 'metrics.json'}, {output / 'table.md'} and {output / 'responses.jsonl'}")
    return metrics


class PairScorer:
    """Implicit rewards of policies on fixed pairs, by TRL's preprocessing and the trainer's log-prob code."""

    def __init__(self, reference, tokenizer, pairs, config: Config):
        from trl import DPOConfig

        from pcrm.alignment.dpo import PcrmDPOTrainer, cut_prompts

        args = DPOConfig(
            output_dir=config.output,  # nothing is written: the trainer is never trained
            max_length=config.max_length,
            precompute_ref_log_probs=True,
            per_device_train_batch_size=config.batch_size,
            bf16=False,
            report_to="none",
        )
        prompts, _ = cut_prompts(list(pairs["prompt"]), tokenizer, config.max_prompt_length)
        pairs = pairs.remove_columns("prompt").add_column("prompt", prompts)
        # The reference log-probs are computed once, here.
        self.trainer = PcrmDPOTrainer(model=reference, args=args, train_dataset=pairs, processing_class=tokenizer)
        self.device = self.trainer.accelerator.device
        self.batch_size = config.batch_size

    @torch.no_grad()
    def implicit_rewards(self, model, beta: float) -> dict:
        from torch.utils.data import DataLoader
        from trl.trainer.utils import add_fused_lm_head

        from pcrm.losses import dpo_margin

        add_fused_lm_head(model)
        model.eval()
        chosen, rejected, ref_chosen, ref_rejected = [], [], [], []
        for batch in DataLoader(self.trainer.train_dataset, self.batch_size, collate_fn=self.trainer.data_collator):
            c, r = self.trainer.sequence_logps(model, {k: v.to(self.device) for k, v in batch.items()})
            chosen.append(c.cpu())
            rejected.append(r.cpu())
            ref_chosen.append(batch["ref_chosen_logps"])
            ref_rejected.append(batch["ref_rejected_logps"])
        chosen, rejected, ref_chosen, ref_rejected = (torch.cat(x).double() for x in (chosen, rejected, ref_chosen, ref_rejected))
        margin = dpo_margin(chosen, rejected, ref_chosen, ref_rejected, beta).numpy()
        return {
            "beta": beta,
            "accuracy": float((margin > 0).mean()),
            "margin_mean": float(margin.mean()),
            "margin_std": float(margin.std()),
            **{f"margin_p{q}": float(np.percentile(margin, q)) for q in (5, 25, 50, 75, 95)},
            "chosen_drift": float((chosen - ref_chosen).mean()),
            "rejected_drift": float((rejected - ref_rejected).mean()),
        }


@torch.no_grad()
def generate(model, tokenizer, texts: list[str], config: Config) -> list[str]:
    """One response per prompt text: greedy, or sampled with `config.seed`; cut at the next user turn."""
    from transformers import GenerationConfig

    sample = config.temperature > 0
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=sample,
        temperature=config.temperature if sample else None,
        top_k=0 if sample else None,
        top_p=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stop_strings=[TURN],
    )
    torch.manual_seed(config.seed)
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    responses = []
    try:
        for start in range(0, len(texts), config.batch_size):
            batch = tokenizer(texts[start : start + config.batch_size], return_tensors="pt", padding=True).to(model.device)
            out = model.generate(**batch, generation_config=generation, tokenizer=tokenizer)
            new_tokens = out[:, batch["input_ids"].size(1) :]
            responses += [text.split(TURN)[0] for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return responses


def win_rate(scores_a, scores_b, resamples: int, seed: int) -> dict:
    """Fraction of prompts where A's response outscores B's (ties count ½), with a 95% percentile bootstrap CI."""
    wins = (np.sign(np.asarray(scores_a) - np.asarray(scores_b)) + 1) / 2
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, len(wins), size=(resamples, len(wins)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"rate": float(wins.mean()), "ci_low": float(low), "ci_high": float(high)}


def format_table(metrics: dict) -> str:
    """A Markdown table: one row per policy."""
    header = "| policy | train s | acc | margin mean ± std | p95 | vs start | vs baseline | judge | length |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in metrics["policies"]:
        implicit = row.get("implicit")
        cells = [
            Path(row["policy"]).name,
            f"{row['train_seconds']:.0f}" if row.get("train_seconds") is not None else "",
            f"{implicit['accuracy']:.3f}" if implicit else "",
            f"{implicit['margin_mean']:.3f} ± {implicit['margin_std']:.3f}" if implicit else "",
            f"{implicit['margin_p95']:.3f}" if implicit else "",
            _format_rate(row.get("win_rate_vs_reference")),
            _format_rate(row.get("win_rate_vs_baseline")),
            f"{row['judge_mean']:.3f}" if "judge_mean" in row else "",
            f"{row['length']['mean_tokens']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format_rate(rate: dict | None) -> str:
    return f"{rate['rate']:.2f} [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]" if rate else ""


def _judge(rows: dict, prompts: list, config: Config, device) -> None:
    from pcrm.models import load_reward_model, load_tokenizer
    from pcrm.scoring import score_texts
    from pcrm.tokenization import render

    judge, judge_tokenizer = load_reward_model(config.judge).to(device), load_tokenizer(config.judge)
    for row in rows.values():
        texts = [render(p, r, judge_tokenizer) for p, r in zip(prompts, row["responses"])]
        row["judge_scores"] = score_texts(judge, judge_tokenizer, texts, config.max_length, config.batch_size, progress=False)
        row["judge_mean"] = float(row["judge_scores"].mean())
    start = rows[config.reference]["judge_scores"]
    baseline = rows[config.baseline]["judge_scores"] if config.baseline else None
    for name, row in rows.items():
        if name != config.reference:
            row["win_rate_vs_reference"] = win_rate(row["judge_scores"], start, config.bootstrap, config.seed)
        if baseline is not None and name not in (config.reference, config.baseline):
            row["win_rate_vs_baseline"] = win_rate(row["judge_scores"], baseline, config.bootstrap, config.seed)
    for row in rows.values():
        row["judge_scores"] = row["judge_scores"].tolist()


def _prompt_texts(prompts: list, tokenizer, max_tokens: int) -> list[str]:
    """Generation inputs: text prompts cut from the left; conversations through the chat template."""
    from pcrm.alignment.dpo import cut_prompts

    if isinstance(prompts[0], list):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return cut_prompts(prompts, tokenizer, max_tokens)[0]


def _training_info(name: str) -> dict:
    """Method, loss, β and training time from a policy's pcrm_config.json (empty when absent)."""
    path = Path(name) / "pcrm_config.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return {key: saved.get(key) for key in ("method", "loss", "beta", "train_seconds")}


def _length_stats(responses: list[str], tokenizer) -> dict:
    lengths = np.array([len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]])
    return {"mean_tokens": float(lengths.mean()), "median_tokens": float(np.median(lengths)), "empty": int((lengths == 0).sum())}


def _write_responses(path: Path, rows: dict, prompts: list) -> None:
    lines = []
    for name, row in rows.items():
        scores = row.get("judge_scores") or [None] * len(prompts)
        for prompt, response, score in zip(prompts, row["responses"], scores):
            lines.append(json.dumps({"policy": name, "prompt": prompt, "response": response, "judge": score}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
