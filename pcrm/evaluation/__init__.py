"""Evaluation: pure metrics (`metrics`), reward models on preference data (`reward_models`), policies (`policies`)."""
