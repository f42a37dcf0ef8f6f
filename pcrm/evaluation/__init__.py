"""Reward-model evaluation: pure metrics (`metrics`) and the `pcrm evaluate` command (`command.evaluate`)."""
