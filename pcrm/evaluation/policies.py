"""Policy evaluation: implicit rewards on held-out pairs (the DPO trainer's own log-prob code), one
response per held-out prompt, and judge scores with win rates (`pcrm evaluate-policy`)."""

import json
from pathlib import Path

import numpy as np
import torch

from pcrm.evaluation.metrics import win_rate
from pcrm.io import atomic_write_text
from pcrm.tokenization import TURN, cut_prompts


class PairScorer:
    """Implicit rewards of policies on fixed pairs, by TRL's preprocessing and the trainer's log-prob code."""

    def __init__(self, reference, tokenizer, pairs, config):
        from trl import DPOConfig

        from pcrm.models import default_device
        from pcrm.trainers.dpo import PcrmDPOTrainer

        args = DPOConfig(
            output_dir=config.output,  # nothing is written: the trainer is never trained
            max_length=config.max_length,
            precompute_ref_log_probs=True,
            per_device_train_batch_size=config.batch_size,
            bf16=False,
            use_cpu=default_device(getattr(config, "device", "auto")) == "cpu",  # --device
            report_to="none",
            disable_tqdm=not getattr(config, "progress", True),
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
        chosen, rejected, ref_chosen, ref_rejected = (
            torch.cat(x).double() for x in (chosen, rejected, ref_chosen, ref_rejected)
        )
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
def generate(model, tokenizer, texts: list[str], config) -> list[str]:
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
            batch = tokenizer(texts[start : start + config.batch_size], return_tensors="pt", padding=True).to(
                model.device
            )
            out = model.generate(**batch, generation_config=generation, tokenizer=tokenizer)
            new_tokens = out[:, batch["input_ids"].size(1) :]
            responses += [text.split(TURN)[0] for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return responses


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


def table_rows(metrics: dict) -> list[dict]:
    """`format_table` as report rows (one dict per policy, labelled columns; a column nobody has is left out)."""
    rows = []
    for row in metrics["policies"]:
        implicit = row.get("implicit")
        cells = {
            "policy": Path(row["policy"]).name,
            "training time (s)": f"{row['train_seconds']:.0f}" if row.get("train_seconds") is not None else "",
            "implicit-reward accuracy": f"{implicit['accuracy']:.3f}" if implicit else "",
            "implicit margin mean ± std": f"{implicit['margin_mean']:.3f} ± {implicit['margin_std']:.3f}"
            if implicit
            else "",
            "implicit margin p95": f"{implicit['margin_p95']:.3f}" if implicit else "",
            "judge win rate vs start [95% CI]": _format_rate(row.get("win_rate_vs_reference")),
            "judge win rate vs baseline [95% CI]": _format_rate(row.get("win_rate_vs_baseline")),
            "judge score mean": f"{row['judge_mean']:.3f}" if "judge_mean" in row else "",
            "response length (tokens)": f"{row['length']['mean_tokens']:.1f}",
        }
        rows.append(cells)
    used = [key for key in rows[0] if any(r[key] for r in rows)] if rows else []
    return [{key: r[key] for key in used} for r in rows]


def _format_rate(rate: dict | None) -> str:
    return f"{rate['rate']:.2f} [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]" if rate else ""


def judge_responses(rows: dict, prompts: list, config, device) -> None:
    from pcrm.scoring import RewardScorer

    judge = RewardScorer.load(config.judge, device=device, batch_size=config.batch_size)  # at the judge's own length
    for row in rows.values():
        row["judge_scores"] = judge.scores(prompts, row["responses"])
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


def prompt_texts(prompts: list, tokenizer, max_tokens: int) -> list[str]:
    """Generation inputs: text prompts cut from the left; conversations through the chat template."""
    if isinstance(prompts[0], list):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return cut_prompts(prompts, tokenizer, max_tokens)[0]


def training_info(name: str) -> dict:
    """Method, loss, β and training time from a policy's pcrm_config.json (empty when absent)."""
    path = Path(name) / "pcrm_config.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return {key: saved.get(key) for key in ("method", "loss", "beta", "train_seconds")}


def length_stats(responses: list[str], tokenizer) -> dict:
    lengths = np.array([len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]])
    return {
        "mean_tokens": float(lengths.mean()),
        "median_tokens": float(np.median(lengths)),
        "empty": int((lengths == 0).sum()),
    }


def write_responses(path: Path, rows: dict, prompts: list) -> None:
    lines = []
    for name, row in rows.items():
        scores = row.get("judge_scores") or [None] * len(prompts)
        for prompt, response, score in zip(prompts, row["responses"], scores):
            lines.append(
                json.dumps({"policy": name, "prompt": prompt, "response": response, "judge": score}, ensure_ascii=False)
            )
    atomic_write_text(path, "\n".join(lines) + "\n")
