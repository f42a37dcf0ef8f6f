"""Aligning policies: DPO/IPO/hinge with PCRM's prior term (`dpo`), judging policies (`policy_eval`),
and best-of-N or RL against a trained reward model (`command`)."""
