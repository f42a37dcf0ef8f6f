"""Scoring with a saved pcrm reward model outside pcrm's commands, with the score pcrm gives.

* `load_reward_function(dir)`: a TRL reward function `(prompts, completions, **kw) -> list[float]` for
  `GRPOTrainer(reward_funcs=...)` / `RLOOTrainer`. It renders and tokenizes as training did
  (`pcrm.tokenization.render` + `tokenize`: special tokens included, the prompt's start cut when too long).
  Passing the model directory itself as `reward_funcs` is not equivalent: TRL then tokenizes with
  `add_special_tokens=False` (no [CLS]/[SEP] for BERT-style backbones) and without truncation.
* `PaddingInvariant(model)` / `reward_logits(model, input_ids, attention_mask)`: rewards of a padded batch that
  do not depend on the padding side. Decoder backbones (Llama, Qwen, SmolLM) read the rightmost non-pad token and
  use relative (rotary) positions, so they give the same score left- or right-padded. Encoder backbones (BERT,
  MiniLM) do not: they pool the first token (a pad under left padding) and use absolute positions, and position
  ids from the attention mask cannot fix the pooling. Saved pcrm tokenizers pad on the right; a client that forces
  left padding (RewardBench-style batching) must right-align the batch first, which these two do.
* A `transformers` text-classification pipeline returns the raw score of a saved pcrm reward model
  (`problem_type="regression"`); pass `truncation=True`, or it reads texts longer than the training `--max-length`
  whole (and fails past the model's positions); the saved tokenizer truncates from the left, as pcrm does.
"""

import torch

from pcrm.scoring import RewardScorer

RewardFunction = RewardScorer  # the TRL reward function: `(prompts, completions, **kwargs) -> list[float]`


def right_align(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int | None = None):
    """The batch with each row's attended tokens moved to the front (right padding), in their order."""
    order = torch.argsort((attention_mask == 0).to(torch.int8), dim=1, stable=True)
    input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
    if pad_token_id is not None:
        input_ids = input_ids.masked_fill(attention_mask == 0, pad_token_id)
    return input_ids, attention_mask


def reward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Rewards ([rows]) of a left- or right-padded batch: the same as each row scored alone."""
    input_ids, attention_mask = right_align(input_ids, attention_mask, model.config.pad_token_id)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]


class PaddingInvariant(torch.nn.Module):
    """A reward model whose forward right-aligns its batch first: any padding side gives each text's score alone."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is not None:
            input_ids, attention_mask = right_align(input_ids, attention_mask, self.config.pad_token_id)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def load_reward_function(
    path, max_length: int | None = None, device: str = "auto", batch_size: int = 32, dtype: str | None = None
) -> RewardScorer:
    """A TRL reward function scoring with the reward model at `path` (a `pcrm train-rm` output, or any one-output
    sequence classifier). `max_length`: tokens read (default: the `--max-length` it was trained with,
    `pcrm.models.recorded_max_length`). `dtype`: default bfloat16 on CUDA with bf16, else float32."""
    return RewardScorer.load(path, max_length, device, batch_size, dtype)
