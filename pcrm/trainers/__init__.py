"""Trainers: thin subclasses of TRL's RewardTrainer (reward.py) and DPOTrainer (dpo.py) that change only the loss."""


def common_arguments(config) -> dict:
    """The TrainingArguments both trainers take from a command config alike (TRL's config classes add their own)."""
    return {
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "bf16": config.precision == "bf16",
        "fp16": config.precision == "fp16",
        "activation_checkpointing": config.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        "logging_steps": 1,
        "seed": config.seed,
        "disable_tqdm": not config.progress,
    }
