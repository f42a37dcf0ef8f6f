"""What the training pipelines share about processes: the torch process group (a caller's stays up, one that came up
under `accelerate launch` is ended), the FSDP-on-CPU refusal, and the whole model gathered from ZeRO-3 shards."""

import contextlib


@contextlib.contextmanager
def caller_process_group_kept():
    """Run the block; afterwards end a torch process group that came up during it (`accelerate launch`: a rank
    exiting with gloo threads alive may abort), and leave one the caller had set up as it was."""
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())
    try:
        yield
    finally:
        if owned:
            end_process_group()


def end_process_group() -> None:
    """Destroy the torch.distributed process group if one is up (a rank exiting with gloo threads alive may abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def refuse_fsdp_on_cpu(cpu: bool) -> None:
    """`accelerate launch` with an FSDP config on the CPU would train with plain DDP: accelerate enables FSDP only
    for GPU runs (and pcrm trains on the CPU when there is no CUDA GPU). Refuse rather than run another engine."""
    from accelerate.utils import parse_flag_from_env

    from pcrm.errors import PcrmError

    if cpu and parse_flag_from_env("ACCELERATE_USE_FSDP"):
        raise PcrmError(
            "FSDP needs CUDA GPUs (accelerate would silently run DDP on the CPU): on the CPU use "
            "--config_file pcrm/configs/zero2.yaml or zero3.yaml (DeepSpeed) or --multi_gpu (DDP over gloo)"
        )


def whole_model(trainer):
    """The trained model with all its weights on the main process (None on the others); every rank must call it.

    Under DeepSpeed ZeRO-3 each rank holds a shard of every parameter and the modules carry DeepSpeed's hooks: the
    weights are gathered (a collective) into a plain copy, and transformers' ZeRO-3 switch is turned off, so that
    `from_pretrained` on the main process alone (the held-out evaluation's encoder) is not a collective either."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return trainer.model if trainer.accelerator.is_main_process else None
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    engine = trainer.model_wrapped  # the DeepSpeed engine once trainer.train() ran
    gather = getattr(engine, "_zero3_consolidated_16bit_state_dict", None)
    state_dict = gather() if gather else None  # the training dtype (fp32 here), despite the name
    unset_hf_deepspeed_config()
    if not trainer.accelerator.is_main_process:
        return None
    sharded = trainer.model
    if state_dict is None:  # never sharded (nothing was trained in this process)
        return sharded
    if hasattr(sharded, "peft_config"):  # LoRA: the same adapters on a fresh backbone
        from peft import get_peft_model

        backbone = sharded.get_base_model()
        model = get_peft_model(type(backbone)(backbone.config), sharded.peft_config[sharded.active_adapter])
    else:
        model = type(sharded)(sharded.config)
    model.load_state_dict(state_dict)
    return model.train(sharded.training)
