"""The one collator extension pcrm needs: carry each pair's prior bound δ* into the batch."""

import torch


class DeltaCollator:
    """Wraps a collator; adds the examples' `delta` (if present) to its batch as a float32 tensor of shape (batch,)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        if "delta" in examples[0]:
            batch["delta"] = torch.tensor([example["delta"] for example in examples], dtype=torch.float32)
        return batch
