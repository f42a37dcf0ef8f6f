"""The gold reward model of the over-optimisation study: SmolLM2-135M with a LoRA adapter and a score head.

It defines the "truth" of the synthetic gold-reward setting (Gao, Schulman & Hilton 2022): proxies are
trained on comparisons labelled by it and policies optimised against the proxies are scored by it. It is
a larger, different backbone than the MiniLM proxies, trained once with the ranking (BT) loss on the
bundled human comparisons by `train_gold` (the exact recipe is `GOLD_RECIPE`), and shipped inside the
package as its adapter + score head in fp16 (`pcrm/data/gold-smollm2/`, a few MB), loaded by name:

    model, tokenizer = load_gold()          # or --gold gold-smollm2 on the command line
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pcrm.errors import PcrmError

GOLD_NAME = "gold-smollm2"
GOLD_DIR = Path(__file__).resolve().parents[1] / "data" / GOLD_NAME


@dataclass
class GoldRecipe:
    """How the shipped gold RM was trained (`python -m pcrm.study.gold OUTPUT` re-creates it)."""

    backbone: str = "smollm2"
    data: str = "hh-rlhf-harmless"
    split: str = "train"
    max_pairs: int = 800
    max_length: int = 128
    lora_r: int = 8
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 8
    seed: int = 0


GOLD_RECIPE = GoldRecipe()


def train_gold(output: str | Path, recipe: GoldRecipe = GOLD_RECIPE, progress: bool = True) -> Path:
    """Train the gold RM with pcrm's BT trainer (LoRA) and save only its adapter and score head, in fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    from pcrm.pipelines.reward import RewardModelConfig
    from pcrm.trainers.reward import build_trainer

    output = Path(output)
    work = output.with_name(output.name + ".work")
    config = RewardModelConfig(
        method="bt",
        model=recipe.backbone,
        data=recipe.data,
        split=recipe.split,
        max_pairs=recipe.max_pairs,
        max_length=recipe.max_length,
        lora_r=recipe.lora_r,
        learning_rate=recipe.learning_rate,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        output=str(work),
        save_steps=10**9,
        progress=progress,
    )
    work.mkdir(parents=True, exist_ok=True)
    trainer, _, facts = build_trainer(config)
    trainer.train()
    output.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output)
    weights = output / "adapter_model.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(weights).items()}, weights)
    (output / "recipe.json").write_text(
        json.dumps({**asdict(recipe), **facts, "steps": trainer.state.global_step}, indent=2) + "\n"
    )
    return output


def load_gold(path: str | Path = GOLD_DIR, device: str = "cpu"):
    """(model, tokenizer): the SmolLM2 backbone with the gold adapter merged, in fp32, eval mode."""
    import torch
    from peft import PeftModel

    from pcrm.models import load_reward_model, load_tokenizer, resolve_model

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise PcrmError(f"{path}: no gold adapter here (train one with `python -m pcrm.study.gold {path}`)")
    backbone = resolve_model(GOLD_RECIPE.backbone)
    tokenizer = load_tokenizer(backbone)
    model = load_reward_model(backbone)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, path).merge_and_unload().to(torch.float32)
    return model.to(device).eval(), tokenizer


def load_gold_model(name: str, device: str = "cpu"):
    """(model, tokenizer) of `--gold`: "gold-smollm2" (the shipped gold RM), a gold adapter directory, or any
    reward-model directory."""
    from pcrm.models import load_reward_model, load_tokenizer

    if name == GOLD_NAME:
        return load_gold(GOLD_DIR, device)
    if (Path(name) / "adapter_config.json").is_file():
        return load_gold(name, device)
    tokenizer = load_tokenizer(name)
    model = load_reward_model(name)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


if __name__ == "__main__":
    import sys

    print(train_gold(sys.argv[1] if len(sys.argv) > 1 else GOLD_DIR))
