"""Trainers: thin subclasses of TRL's RewardTrainer (reward.py) and DPOTrainer (dpo.py) whose only change is the loss."""
