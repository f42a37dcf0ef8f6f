"""Score texts with a reward model: batched, length-sorted, no-grad."""

import numpy as np
import torch
from tqdm.auto import tqdm

from pcrm.tokenization import tokenize


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], max_length: int | None = 512, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Reward of each text (read by the model at its last token), in the input order."""
    ids, _ = tokenize(tokenizer, texts, max_length)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    scores = np.empty(len(texts), dtype=np.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id
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


def score_responses(model, tokenizer, prompts, responses, max_length: int | None = 512, batch_size: int = 32,
                    progress: bool = False) -> np.ndarray:
    """Reward of each (prompt, response), rendered as training rendered pairs (`pcrm.tokenization.render`)."""
    from pcrm.tokenization import render

    texts = [render(p if p is not None else "", r, tokenizer) for p, r in zip(prompts, responses)]
    return score_texts(model, tokenizer, texts, max_length, batch_size, progress)


def score_pairs(model, tokenizer, dataset, max_length: int | None = 512, batch_size: int = 32, progress: bool = True):
    """(chosen_scores, rejected_scores) of every pair of a preference dataset."""
    from pcrm.tokenization import render_pairs

    chosen, rejected = render_pairs(dataset, tokenizer)
    scores = score_texts(model, tokenizer, chosen + rejected, max_length, batch_size, progress)
    return scores[: len(chosen)], scores[len(chosen) :]
