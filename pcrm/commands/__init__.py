"""Commands that are not a trainer, an evaluator or an aligner (those live in their packages)."""
