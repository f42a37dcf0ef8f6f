"""Padding-free (packed) reward forward: several sequences per row, each read at its own reward token.

A padded batch of chosen + rejected computes every sequence at the batch's longest length; here the
sequences of a batch are packed first-fit-decreasing into rows, and the result equals the padded
forward (to float rounding, tested to 1e-5 in fp32):

* decoders (transformers' `GenericForSequenceClassification`: Llama, Qwen, Mistral, Gemma, SmolLM2, ...):
  position ids restart at 0 at every sequence and no attention mask is passed, from which transformers 5
  builds the block-diagonal causal mask itself (`masking_utils.find_packed_sequence_indices`, for sdpa,
  eager and flash attention). Their head pools the last non-pad token of a *row*, so the per-token scores
  are taken from the `score` layer (a forward hook) and read at each sequence's last non-pad token: the
  token the padded forward reads.
* BERT encoders (MiniLM): a 4-D block-diagonal mask and per-sequence position ids; the pooler, which reads
  the first token ([CLS]) of a row, is handed the first token of every sequence (a forward pre-hook).

Both run inside the model's own forward call, so DDP, DeepSpeed, PEFT (LoRA) and gradient checkpointing
see an ordinary forward. Row length: attention with a mask is computed densely over the whole row (CPU
and sdpa alike), so a row of width w costs each of its tokens attention over w positions. Rows as long as
the batch's longest sequence never cost more per row than a padded row; longer rows waste fewer tokens
on a batch of similar lengths (what length grouping makes) but pay more attention per token; the
trainer picks, per batch, among 1–4 × the longest sequence by an estimate measured on CPU (`pack`).
A row's unused tail is padding with position ids of its own from 0: a segment of its own that attends
only to itself (no fully masked row).
Whether packing is exact for a model is checked once by a probe (`packing_exact`: three random sequences
in one row against the padded forward); architectures whose token mixing ignores position ids (e.g.
state-space layers) fail it and stay padded.
"""

import weakref

import numpy as np
import torch

_EXACT = weakref.WeakKeyDictionary()  # model -> result of the probe


def _first_fit(lengths: list[int], capacity: int) -> tuple[list[list[int]], int]:
    """Sequence indices per row (first fit, longest first) into rows of `capacity` tokens; the longest row's fill."""
    rows, fill = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r in range(len(rows)):
            if fill[r] + lengths[i] <= capacity:
                rows[r].append(i)
                fill[r] += lengths[i]
                break
        else:
            rows.append([i])
            fill.append(lengths[i])
    return rows, max(fill)


def pack(
    sequences, pad_token_id: int, read: str = "last", row_tokens: int | None = None, attention_tokens: int | None = None
) -> dict:
    """Pack token-id sequences into rows; return `input_ids`, `position_ids` (rows × width), `reward_index`
    ((row, column) of each sequence's reward token, in the input order) and `lengths`.

    `read`: "last" — the sequence's last token that is not `pad_token_id` (its first token if all are: what a
    padded decoder forward reads), "first" — its first token (BERT's [CLS]). Rows hold at most
    max(`row_tokens`, the longest sequence) tokens. Without `row_tokens`, with `attention_tokens` (k), the row
    length is chosen among 1, 1.5, 2, 3 and 4 × the longest sequence for the least estimated cost
    rows · width · (1 + width / k): longer rows waste fewer tokens (a length-grouped batch of similar lengths
    fills rows of its longest sequence badly), but a dense masked attention costs each token its row's width
    (k ≈ 4 × hidden size measured on CPU: the width at which attention costs what the rest of a layer does)."""
    lengths = [len(s) for s in sequences]
    longest = max(lengths)
    if row_tokens or not attention_tokens:
        rows, width = _first_fit(lengths, max(longest, row_tokens or 0))
    else:
        packings = [_first_fit(lengths, int(longest * f)) for f in (1, 1.5, 2, 3, 4)]
        rows, width = min(packings, key=lambda p: len(p[0]) * p[1] * (1 + p[1] / attention_tokens))
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.empty((len(rows), width), dtype=torch.long)
    reward_index = torch.empty((len(sequences), 2), dtype=torch.long)
    for r, members in enumerate(rows):
        offset = 0
        for i in members:
            ids, n = torch.as_tensor(sequences[i], dtype=torch.long), lengths[i]
            input_ids[r, offset : offset + n] = ids
            position_ids[r, offset : offset + n] = torch.arange(n)
            real = (ids != pad_token_id).nonzero()
            column = int(real[-1]) if read == "last" and len(real) else 0
            reward_index[i] = torch.tensor([r, offset + column])
            offset += n
        position_ids[r, offset:] = torch.arange(width - offset)  # the tail: a padding segment of its own
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "reward_index": reward_index,
        "lengths": torch.tensor(lengths),
    }


class PackedPairCollator:
    """Collates tokenized pairs (`chosen_ids`, `rejected_ids`) into one packed batch (`pack`): rewards come back
    chosen first, then rejected, as from TRL's padded `DataCollatorForPreference`."""

    def __init__(
        self, pad_token_id: int, read: str = "last", row_tokens: int | None = None, attention_tokens: int | None = None
    ):
        self.pad_token_id, self.read = pad_token_id, read
        self.row_tokens, self.attention_tokens = row_tokens, attention_tokens

    def __call__(self, examples):
        sequences = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        return pack(sequences, self.pad_token_id, self.read, self.row_tokens, self.attention_tokens)


def attention_tokens(model) -> int:
    """k of `pack`'s cost estimate for this model: 4 × its hidden size."""
    return 4 * _unwrap(model).config.get_text_config().hidden_size


def _unwrap(model):
    """The transformers model inside DDP / DeepSpeed / torch.compile / PEFT wrappers."""
    from transformers import PreTrainedModel

    while not isinstance(model, PreTrainedModel):
        if hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        else:  # DDP, DeepSpeed, FSDP: .module; torch.compile: ._orig_mod
            model = model.module if hasattr(model, "module") else model._orig_mod
    return model


def packing_kind(model) -> str | None:
    """ "decoder", "bert" or None (no packed forward for this architecture)."""
    from transformers import BertForSequenceClassification
    from transformers.modeling_layers import GenericForSequenceClassification

    model = _unwrap(model)
    if isinstance(model, GenericForSequenceClassification):
        return "decoder"
    if isinstance(model, BertForSequenceClassification) and model.config._attn_implementation in ("sdpa", "eager"):
        return "bert"
    return None


def read_position(model) -> str:
    """Which token of a sequence holds its reward: "first" ([CLS]) for BERT, else "last"."""
    return "first" if packing_kind(model) == "bert" else "last"


def packed_rewards(model, batch: dict) -> torch.Tensor:
    """Rewards (float, shape (sequences,)) of a packed batch (`pack`), in the packed input order."""
    inner = _unwrap(model)
    kind = packing_kind(inner)
    rows, columns = batch["reward_index"].unbind(-1)
    position_ids = batch["position_ids"]
    scores, extra = {}, {}
    if kind == "decoder":
        hook = inner.score.register_forward_hook(lambda module, args, output: scores.update(all=output))
    elif kind == "bert":
        segment = (position_ids == 0).cumsum(-1)  # every sequence (and a row's tail) starts at position 0
        mask = (segment[:, :, None] == segment[:, None, :])[:, None]
        if inner.config._attn_implementation == "eager":  # eager adds the mask to the scores
            blocked = torch.finfo(inner.dtype).min
            mask = torch.zeros(mask.shape, dtype=inner.dtype, device=mask.device).masked_fill(~mask, blocked)
        extra = {"attention_mask": mask, "token_type_ids": torch.zeros_like(position_ids)}
        pooler = getattr(inner, inner.base_model_prefix).pooler
        hook = pooler.register_forward_pre_hook(lambda module, args: (args[0][rows, columns][:, None],))
    else:
        raise ValueError(f"no packed forward for {type(inner).__name__}")
    try:
        outputs = model(input_ids=batch["input_ids"], position_ids=position_ids, use_cache=False, **extra)
    finally:
        hook.remove()
    return scores["all"][rows, columns, 0] if kind == "decoder" else outputs.logits[:, 0]


def padded_rewards(model, sequences, pad_token_id: int) -> torch.Tensor:
    """Rewards of right-padded sequences through the model's own forward (what packing must equal)."""
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for j, s in enumerate(sequences):
        input_ids[j, : len(s)] = torch.as_tensor(s)
        attention_mask[j, : len(s)] = 1
    return model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits[:, 0]


def _to(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def packing_exact(model, pad_token_id: int) -> bool:
    """Whether this model's packed forward equals its padded one: three random sequences in one row, against
    each padded (fp32: to 1e-4 relative; half precision: 3e-2). Cached per model object."""
    inner = _unwrap(model)
    if inner in _EXACT:
        return _EXACT[inner]
    exact = False
    if packing_kind(inner) is not None:
        generator = torch.Generator().manual_seed(0)
        vocab = inner.config.get_text_config().vocab_size
        sequences = [torch.randint(0, vocab, (n,), generator=generator) for n in (5, 9, 3)]
        sequences = [torch.where(s == pad_token_id, (pad_token_id + 1) % vocab, s) for s in sequences]
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            batch = _to(pack(sequences, pad_token_id, read_position(inner), row_tokens=17), device)
            packed = packed_rewards(model, batch).float()
            padded = padded_rewards(model, sequences, pad_token_id).float()
        finally:
            model.train(was_training)
        tolerance = 1e-4 if inner.dtype == torch.float32 else 3e-2
        exact = bool(((packed - padded).abs() <= tolerance * (1 + padded.abs())).all())
    _EXACT[inner] = exact
    return exact


@torch.no_grad()
def packed_scores(
    model, ids: list[list[int]], pad_token_id: int, batch_size: int = 32, row_tokens: int | None = None
) -> np.ndarray:
    """Rewards of token-id sequences (in the input order), `batch_size` sequences per packed forward, longest
    first: `pcrm.scoring.score_texts` with packing. The caller checks `packing_exact` first."""
    device = next(model.parameters()).device
    order = np.argsort([-len(x) for x in ids], kind="stable")
    scores = np.empty(len(ids), dtype=np.float64)
    read = read_position(model)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = _to(pack([ids[i] for i in rows], pad_token_id, read, row_tokens, attention_tokens(model)), device)
        scores[rows] = packed_rewards(model, batch).float().cpu().numpy()
    return scores
