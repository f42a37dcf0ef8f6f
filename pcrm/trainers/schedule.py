"""A warm-up whose first step learns, and a notice when a run is too short to learn.

transformers' warm-up multiplies the learning rate by step / W for the first W steps, so step 0 runs at a learning rate
of 0: a 2-step run (`--max-steps 2`, warm-up 1 step) spends half its steps learning nothing. `FirstStepWarmup` makes the
warm-up (step + 1) / (W + 1) instead (the rest of the schedule is transformers'); with W = 0 nothing changes.
"""

import logging

from transformers import TrainerCallback

SHORT_RUN = 10  # optimizer steps below which a run is announced as too short to learn much


class FirstStepWarmup(TrainerCallback):
    """Rewrites the trainer's LambdaLR warm-up at the start of training (after a resumed schedule state was loaded)."""

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        steps = state.max_steps
        if state.is_world_process_zero and 0 < steps < SHORT_RUN and state.global_step == 0:
            logging.getLogger("pcrm").warning(
                "only %d optimizer step(s): too few to learn much; the trained model stays close to the starting one",
                steps,
            )
        warmup = args.get_warmup_steps(steps)
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper, where there is one
        if warmup > 0 and hasattr(scheduler, "lr_lambdas"):
            first_step_warmup(scheduler, warmup)


def first_step_warmup(scheduler, warmup: int) -> None:
    """Replace the first `warmup` steps of each lambda of a LambdaLR by (step + 1) / (warmup + 1); set the lr."""

    def wrap(inner):
        def factor(step):  # a plain function: LambdaLR.state_dict stores none of it, so checkpoints stay the same
            return (step + 1) / (warmup + 1) if step < warmup else inner(step)

        return factor

    scheduler.lr_lambdas = [wrap(inner) for inner in scheduler.lr_lambdas]
    step = max(scheduler.last_epoch, 0)
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
