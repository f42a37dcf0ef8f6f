"""Score texts with a reward model: batched, length-sorted, no-grad; and `RewardScorer`, the one way pcrm loads a
reward model for scoring (device, dtype, the max length and tokenization recorded with the model)."""

import functools
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from pcrm.tokenization import tokenize


@torch.no_grad()
def score_texts(
    model,
    tokenizer,
    texts: list[str],
    max_length: int | None = 512,
    batch_size: int = 32,
    progress: bool = True,
    split_special_tokens: bool = True,
) -> np.ndarray:
    """Reward of each text (read by the model at its last token), in the input order."""
    ids, _ = tokenize(tokenizer, texts, max_length, split_special_tokens)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    scores = np.empty(len(texts), dtype=np.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id
    from pcrm.packing import packed_scores, packing_exact

    if packing_exact(model, pad_id):  # the packed forward equals the padded one here: no compute on padding
        scores = packed_scores(model, ids, pad_id, batch_size)
        model.train(was_training)
        return scores
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress, leave=False):
        rows = order[start : start + batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
            attention_mask[j, : len(ids[i])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        scores[rows] = logits[:, 0].float().cpu().numpy()
    model.train(was_training)
    return scores


def score_responses(
    model, tokenizer, prompts, responses, max_length: int | None = 512, batch_size: int = 32, progress: bool = False
) -> np.ndarray:
    """Reward of each (prompt, response), rendered as training rendered pairs (`pcrm.tokenization.render`)."""
    from pcrm.tokenization import render, splits_special_tokens

    texts = [render(p if p is not None else "", r, tokenizer) for p, r in zip(prompts, responses)]
    split = splits_special_tokens(tokenizer, responses)
    return score_texts(model, tokenizer, texts, max_length, batch_size, progress, split)


def score_pairs(model, tokenizer, dataset, max_length: int | None = 512, batch_size: int = 32, progress: bool = True):
    """(chosen_scores, rejected_scores) of every pair of a preference dataset."""
    prompts = dataset["prompt"] if "prompt" in dataset.column_names else [""] * len(dataset)
    scores = score_responses(
        model,
        tokenizer,
        list(prompts) * 2,
        list(dataset["chosen"]) + list(dataset["rejected"]),
        max_length,
        batch_size,
        progress,
    )
    return scores[: len(dataset)], scores[len(dataset) :]


@dataclass
class RewardScorer:
    """A loaded reward model that scores (prompt, response) exactly as `pcrm train-rm` trained it.

    It is also a TRL reward function, `(prompts, completions, **kwargs) -> list[float]`, for
    `GRPOTrainer(reward_funcs=...)` / `RLOOTrainer`; prompts and completions may be text or conversations.
    """

    model: object
    tokenizer: object
    max_length: int | None = 512
    batch_size: int = 32
    path: str | None = None

    __name__ = "pcrm_reward"  # TRL names its reward metrics after the function

    @classmethod
    def load(
        cls, name, max_length: int | None = None, device: str = "auto", batch_size: int = 32, dtype: str | None = None
    ) -> "RewardScorer":
        """Load the reward model `name` (a pcrm output folder, any one-output sequence classifier, a Hub id).

        `max_length`: tokens read, default the length recorded with the model (`pcrm.models.recorded_max_length`);
        `dtype`: default bfloat16 on a CUDA device with bf16, else float32."""
        scorer = LazyRewardScorer(name, max_length, device, batch_size, dtype)
        scorer.model  # noqa: B018 (the weights now, not on first use)
        return scorer

    def responses(self, prompts, responses, progress: bool = False) -> np.ndarray:
        return score_responses(
            self.model, self.tokenizer, prompts, responses, self.max_length, self.batch_size, progress
        )

    def pairs(self, dataset, progress: bool = False):
        return score_pairs(self.model, self.tokenizer, dataset, self.max_length, self.batch_size, progress)

    def scores(self, prompts, completions) -> np.ndarray:
        return self.responses(prompts, completions)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.responses(prompts, completions).tolist()

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @property
    def device_type(self) -> str:
        return next(self.model.parameters()).device.type


class LazyRewardScorer(RewardScorer):
    """A `RewardScorer.load` whose weights are read on first use (a cache hit needs only the tokenizer)."""

    def __init__(
        self, name, max_length: int | None = None, device: str = "auto", batch_size: int = 32, dtype: str | None = None
    ):
        from pcrm.models import check_reward_model, default_device, load_tokenizer, recorded_max_length, scoring_dtype

        self.path = check_reward_model(str(name))
        self._device = default_device(device)
        self._dtype = dtype or scoring_dtype(self._device)
        self.tokenizer = load_tokenizer(self.path)
        self.max_length = max_length or recorded_max_length(self.path, self.tokenizer)
        self.batch_size = batch_size

    @functools.cached_property
    def model(self):
        from pcrm.models import load_reward_model

        return load_reward_model(self.path, dtype=self._dtype).to(self._device).eval()

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def device_type(self) -> str:
        return torch.device(self._device).type
