"""`pcrm align --method rloo|grpo`: TRL 1.16's `RLOOTrainer` / `GRPOTrainer` with a pcrm reward model.

The reward function is a callable (`ProxyReward`): it scores each completion cut at the next user
turn as `pcrm train-rm` rendered pairs (TRL samples to EOS or the length limit, so the tokens after
that turn share the reward of the text before it), and applies PPO's optional normalisation/clipping.
TRL logs the rewards it was given; the raw proxy scores are logged here, to `log.jsonl`, in the
same rows as PPO's. RLOO's advantage is the reward minus the mean of the prompt's other completions,
so it keeps the reward's scale; GRPO also divides by the group's std (`scale_rewards="group"`), so
its learner never sees the scale: the raw log is where scale drift shows. `kl` is TRL's per-token KL
estimate times the mean completion length, i.e. the mean summed KL of a completion (RLOO: log π − log π_ref;
GRPO: Schulman's k3 estimator).
"""

import json
import time
from pathlib import Path

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from pcrm.alignment.rollout import RewardShaper, StepLog, reward_stats
from pcrm.errors import PcrmError
from pcrm.tokenization import TURN

SHAPER_FILE = "reward_shaper.json"


class ProxyReward:
    """A TRL reward function: shaped proxy scores of the completions; the raw scores are kept in `raw`."""

    __name__ = "proxy"  # TRL names its reward metrics after it

    def __init__(self, reward_model, shaper: RewardShaper):
        self.reward_model, self.shaper, self.raw = reward_model, shaper, []  # a pcrm.scoring.RewardScorer

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        raw = self.reward_model.scores(prompts, [c.split(TURN)[0] for c in completions])
        self.raw.append(raw)
        return self.shaper(raw).tolist()


class StepLogger(TrainerCallback):
    """One `log.jsonl` row per optimizer step (raw rewards, KL, length; the probe every `probe_every` steps);
    the reward statistics are saved with each checkpoint."""

    def __init__(self, log: StepLog, reward: ProxyReward, probe, config):
        self.log, self.reward, self.probe, self.config = log, reward, probe, config
        self.tic = time.perf_counter()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if "completions/mean_length" not in logs:  # the end-of-training summary
            return
        length = logs["completions/mean_length"]
        row = {"step": state.global_step, **reward_stats(np.concatenate(self.reward.raw)), "length": length}
        if "kl" in logs:
            row["kl"] = logs["kl"] * length
        self.reward.raw.clear()
        if state.global_step % self.config.probe_every == 0 or state.global_step == state.max_steps:
            row |= self.probe(model)
        self.log.write(row | {"seconds": time.perf_counter() - self.tic}, state.max_steps)
        self.tic = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / SHAPER_FILE
        path.write_text(json.dumps(self.reward.shaper.state_dict()))


def train_trl(config, reward_model, prompts: list[str], tokenizer, probe, output: Path) -> None:
    """RLOO or GRPO (`config.method`) of `config.policy` against `reward_model`; logs, checkpoints and the policy
    under `output`."""
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from pcrm.models import default_device, load_causal_lm

    trainer_class, args_class = {"rloo": (RLOOTrainer, RLOOConfig), "grpo": (GRPOTrainer, GRPOConfig)}[config.method]
    args = args_class(
        output_dir=str(output / "checkpoints"),
        per_device_train_batch_size=config.batch_size * config.generations,
        num_generations=config.generations,
        max_completion_length=config.max_new_tokens,
        temperature=1.0,
        beta=config.kl_coef,
        epsilon=config.clip_range,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=config.max_grad_norm,
        max_steps=config.steps,
        logging_steps=1,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 1,
        seed=config.seed,
        bf16=False,  # fp32, like the PPO path
        use_cpu=default_device(config.device) == "cpu",  # --device
        report_to="none",
    )
    shaper = RewardShaper(config.reward_norm, config.reward_clip)
    resume_step = None
    if config.resume:
        last = get_last_checkpoint(output / "checkpoints") if (output / "checkpoints").is_dir() else None
        if last is None:
            raise PcrmError(f"{output / 'checkpoints'}: no checkpoint to resume from")
        shaper.load_state_dict(json.loads((Path(last) / SHAPER_FILE).read_text()))
        resume_step = int(Path(last).name.split("-")[-1])
    reward = ProxyReward(reward_model, shaper)
    log = StepLog(output / "log.jsonl", resume_step)
    trainer = trainer_class(
        model=load_causal_lm(config.policy),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[StepLogger(log, reward, probe, config)],
    )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    if not config.resume:
        log.write({"step": 0, **probe(trainer.model)}, config.steps)
    trainer.train(resume_from_checkpoint=config.resume or None)
    trainer.model.save_pretrained(output / "policy")
    tokenizer.save_pretrained(output / "policy")
