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

    def __init__(
        self,
        reference,
        tokenizer,
        pairs,
        *,
        output_dir: str,
        max_length: int,
        max_prompt_length: int,
        batch_size: int = 8,
        device: str = "auto",
        progress: bool = True,
    ):
        """`pairs` cut to `max_length` tokens (prompts from the left to `max_prompt_length`); `output_dir`: the
        trainer's (it is never trained: the folder is created, nothing is written in it); `device`: auto, cpu, cuda."""
        from trl import DPOConfig

        from pcrm.models import default_device
        from pcrm.trainers.dpo import PcrmDPOTrainer

        args = DPOConfig(
            output_dir=output_dir,
            max_length=max_length,
            precompute_ref_log_probs=True,
            per_device_train_batch_size=batch_size,
            bf16=False,
            use_cpu=default_device(device) == "cpu",
            report_to="none",
            disable_tqdm=not progress,
        )
        prompts, _ = cut_prompts(list(pairs["prompt"]), tokenizer, max_prompt_length)
        pairs = pairs.remove_columns("prompt").add_column("prompt", prompts)
        # The reference log-probs are computed once, here.
        self.trainer = PcrmDPOTrainer(model=reference, args=args, train_dataset=pairs, processing_class=tokenizer)
        self.device = self.trainer.accelerator.device
        self.batch_size = batch_size

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
def generate(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[str]:
    """One response per prompt text: greedy (`temperature` 0), or sampled with `seed`; cut at the next user turn."""
    from pcrm.generation import generate_ids

    torch.manual_seed(seed)
    responses = []
    for start in range(0, len(texts), batch_size):
        queries = tokenizer(texts[start : start + batch_size])["input_ids"]
        for ids in generate_ids(model, tokenizer, queries, max_new_tokens, temperature):
            responses.append(tokenizer.decode(ids, skip_special_tokens=True).split(TURN)[0])
    return responses


def format_table(metrics: dict) -> str:
    """A Markdown table (table.md and the console): one row per policy."""
    from pcrm.report.render import markdown_table

    return markdown_table(table_rows(metrics))


def table_rows(metrics: dict) -> list[dict]:
    """One dict per policy, labelled columns (a column nobody has is left out): rows of the report and table.md."""
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


def judge_responses(
    rows: dict,
    prompts: list,
    *,
    judge: str,
    reference: str,
    baseline: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    device="auto",
) -> None:
    """Add to each policy's row (name -> row with its `responses`) the `judge` reward model's scores and mean, and
    its win rates (bootstrap CIs) against the `reference` policy and the `baseline` one."""
    from pcrm.scoring import RewardScorer

    scorer = RewardScorer.load(judge, device=device, batch_size=batch_size)  # at the judge's own length
    for row in rows.values():
        row["judge_scores"] = scorer.scores(prompts, row["responses"])
        row["judge_mean"] = float(row["judge_scores"].mean())
    start = rows[reference]["judge_scores"]
    opponent = rows[baseline]["judge_scores"] if baseline else None
    for name, row in rows.items():
        if name != reference:
            row["win_rate_vs_reference"] = win_rate(row["judge_scores"], start, bootstrap, seed)
        if opponent is not None and name not in (reference, baseline):
            row["win_rate_vs_baseline"] = win_rate(row["judge_scores"], opponent, bootstrap, seed)
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
