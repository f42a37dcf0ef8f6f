"""Aligning policies against trained reward models: best-of-N (`bon`), PPO (`ppo`), RLOO/GRPO through TRL
(`rl_trl`), what they share (`rollout`) and the per-reward-model RL runs (`rl`)."""
