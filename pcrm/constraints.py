"""Prior constraints: a similarity per comparison pair and its margin bound δ*.

    δ* = β1 / (s + β2) + β3

with `s` the length ratio (shorter / longer) or the angular similarity of the two
responses' embeddings. Similarities depend on the data only, so they are computed once,
batched, and cached on disk.
"""

import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from datasets import Dataset

from pcrm.data import as_text, fingerprint, progress_bars
from pcrm.errors import PcrmError
from pcrm.io import cache_path, read_cached_npz, write_cache, write_npz

METHODS = ("length", "cosine", "fixed", "random")
LENGTH_UNITS = ("tokens", "chars", "words")


def length_ratio(len_a, len_b) -> torch.Tensor:
    """Shorter / longer, elementwise in [0, 1]; two empty outputs give 1."""
    a = torch.as_tensor(len_a, dtype=torch.float64)
    b = torch.as_tensor(len_b, dtype=torch.float64)
    longer = torch.maximum(a, b)
    shorter = torch.minimum(a, b)
    return torch.where(longer > 0, shorter / longer.clamp(min=1e-12), torch.ones_like(longer)).float()


def angular_similarity(emb_a, emb_b) -> torch.Tensor:
    """Row-wise `(π − arccos(c)) / π` with `c` the cosine clamped to [0, 1]; in [0.5, 1]."""
    a = torch.as_tensor(emb_a, dtype=torch.float64)
    b = torch.as_tensor(emb_b, dtype=torch.float64)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12).clamp(0.0, 1.0)
    return ((math.pi - torch.arccos(cosine)) / math.pi).float()


def delta_star(similarity, beta1: float = 6.0, beta2: float = 0.001, beta3: float = 0.0) -> torch.Tensor:
    """Margin bound `β1 / (s + β2) + β3`."""
    _check_betas(beta1, beta2, beta3)
    s = torch.as_tensor(similarity, dtype=torch.float32)
    return beta1 / (s + beta2) + beta3


def _check_betas(beta1: float, beta2: float, beta3: float) -> None:
    for name, value in (("beta1", beta1), ("beta2", beta2), ("beta3", beta3)):
        if not math.isfinite(value):
            raise PcrmError(f"--{name} must be a finite number, got {value}")
    if beta1 <= 0:
        raise PcrmError(f"--beta1 must be > 0 (it scales the bound), got {beta1}")
    if beta2 <= 0:
        raise PcrmError(f"--beta2 must be > 0 (it keeps β1/(s+β2) finite at s=0), got {beta2}")


@dataclass
class PriorOptions:
    """The knobs of a similarity prior; which prior is used is the command's `--method`."""

    beta1: float | None = field(default=None, metadata={"help": "β1 of δ*=β1/(s+β2)+β3 (default: per method)"})
    beta2: float = field(default=0.001, metadata={"help": "β2 of δ*"})
    beta3: float | None = field(default=None, metadata={"help": "β3 of δ* (default: per method)"})
    unit: str = field(
        default="tokens", metadata={"help": f"length unit for --method length: {', '.join(LENGTH_UNITS)}"}
    )
    encoder: str = field(default="minilm", metadata={"help": "sentence encoder for --method cosine"})
    fixed_delta: float = field(default=0.45, metadata={"help": "δ* of every pair for --method fixed"})
    random_low: float = field(default=0.4, metadata={"help": "lower end of δ* for --method random"})
    random_high: float = field(default=0.5, metadata={"help": "upper end of δ* for --method random"})
    encoder_batch_size: int = field(default=64, metadata={"help": "batch size of the sentence encoder"})

    def resolve(self, method: str, seed: int = 0, default_betas: dict | None = None) -> "ConstraintConfig | None":
        """The `ConstraintConfig` of `method` with these options (None when `method` uses no prior)."""
        if method not in METHODS:
            return None
        beta1, beta3 = (DEFAULT_BETAS if default_betas is None else default_betas).get(method, (None, None))
        options = asdict(self)
        options["beta1"] = beta1 if self.beta1 is None else self.beta1
        options["beta3"] = beta3 if self.beta3 is None else self.beta3
        return ConstraintConfig(method=method, seed=seed, **options)


@dataclass
class ConstraintConfig(PriorOptions):
    """How to compute each pair's similarity and δ*: the prior (`method`) and its options."""

    method: str = field(default="cosine", metadata={"help": f"similarity prior: {', '.join(METHODS)}"})
    seed: int = field(default=0, metadata={"help": "seed of --method random"})

    def __post_init__(self):
        from pcrm.preflight import check_numbers

        check_numbers(self)
        if self.method not in METHODS:
            raise PcrmError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.unit not in LENGTH_UNITS:
            raise PcrmError(f"--unit must be one of {', '.join(LENGTH_UNITS)}, got {self.unit!r}")
        default_beta1, default_beta3 = DEFAULT_BETAS.get(self.method, (1.0, 0.0))
        self.beta1 = default_beta1 if self.beta1 is None else self.beta1
        self.beta3 = default_beta3 if self.beta3 is None else self.beta3
        _check_betas(self.beta1, self.beta2, self.beta3)
        if self.method == "random" and not 0 < self.random_low < self.random_high:  # δ* > 0 for every pair
            raise PcrmError(
                f"--random-low must be > 0 and < --random-high, got {self.random_low} and {self.random_high}"
            )
        if self.method == "fixed" and not (math.isfinite(self.fixed_delta) and self.fixed_delta > 0):
            raise PcrmError(f"--fixed-delta must be a finite number > 0, got {self.fixed_delta}")
        if self.encoder_batch_size < 1:
            raise PcrmError(f"--encoder-batch-size must be >= 1, got {self.encoder_batch_size}")

    @property
    def options(self) -> PriorOptions:
        return PriorOptions(**{f.name: getattr(self, f.name) for f in fields(PriorOptions)})


# The paper authors' settings for 7B models (length β1=10, β3=−5; cosine β1=20, β3=−15; fixed 4.5;
# random [4, 5]) scaled by 1/10, the ratio of reward scales: a BT-trained MiniLM RM on the bundled
# data has held-out margins with p95 ≈ 1.4 (see README "Choosing β"). δ*(s=1) = 0.5 for both priors.
DEFAULT_BETAS = {"length": (1.0, -0.5), "cosine": (2.0, -1.5)}


def add_constraints(dataset: Dataset, config: ConstraintConfig, tokenizer=None, show_progress: bool = True) -> Dataset:
    """Return `dataset` with `similarity` and `delta` columns (NaN similarity for fixed/random)."""
    n = len(dataset)
    if config.method == "fixed":
        similarity = np.full(n, np.nan)
        delta = np.full(n, config.fixed_delta)
    elif config.method == "random":
        rng = np.random.default_rng(config.seed)
        similarity = np.full(n, np.nan)
        delta = rng.uniform(config.random_low, config.random_high, size=n)
    else:
        similarity = compute_similarity(dataset, config, tokenizer, show_progress).numpy()
        delta = delta_star(similarity, config.beta1, config.beta2, config.beta3).numpy()
        _check_positive_delta(delta, similarity, config)
    for column in ("similarity", "delta"):
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
    dataset = dataset.add_column("similarity", similarity.astype(np.float32).tolist())
    return dataset.add_column("delta", delta.astype(np.float32).tolist())


def _check_positive_delta(delta, similarity, config: ConstraintConfig) -> None:
    """δ* must be > 0 for every pair (δ* ≤ 0 asks the chosen response to score at most the rejected one)."""
    bad = ~(np.asarray(delta) > 0)
    if bad.any():
        s = float(np.nanmax(np.asarray(similarity)[bad]))
        raise PcrmError(
            f"β1={config.beta1}, β2={config.beta2}, β3={config.beta3} "
            f"give δ* ≤ 0 for {int(bad.sum())} of {len(bad)} pairs "
            f"of --method {config.method} (similarity up to {s:.3f}; δ*(s) = β1/(s+β2)+β3 needs β3 > −β1/(s+β2))"
        )


def compute_similarity(
    dataset: Dataset, config: ConstraintConfig, tokenizer=None, show_progress: bool = True
) -> torch.Tensor:
    """Similarity of each pair's two responses under `config.method` ('length' or 'cosine')."""
    if config.method == "length":  # batched on Arrow: never a Python list of every text
        count = _length_counter(config.unit, tokenizer)
        with progress_bars(show_progress and len(dataset) >= 50_000):
            lengths = (
                dataset.select_columns(["chosen", "rejected"])
                .map(
                    _count_lengths,
                    batched=True,
                    fn_kwargs={"count": count},
                    remove_columns=["chosen", "rejected"],
                    keep_in_memory=True,
                    new_fingerprint=uuid.uuid4().hex,
                    desc="Counting lengths",
                    num_proc=min(4, os.cpu_count() or 1)
                    if config.unit == "tokens" and len(dataset) >= 50_000
                    else None,
                )
                .with_format("numpy")[:]
            )
        return length_ratio(lengths["n_chosen"], lengths["n_rejected"])
    chosen = [as_text(x) for x in dataset["chosen"]]
    rejected = [as_text(x) for x in dataset["rejected"]]
    emb_chosen, emb_rejected = cached_embeddings(dataset, chosen, rejected, config, show_progress)
    return angular_similarity(emb_chosen, emb_rejected)


def _count_lengths(batch, count):
    return {
        "n_chosen": count([as_text(x) for x in batch["chosen"]]),
        "n_rejected": count([as_text(x) for x in batch["rejected"]]),
    }


def _length_counter(unit: str, tokenizer):
    if unit == "chars":
        return lambda texts: [len(t) for t in texts]
    if unit == "words":
        return lambda texts: [len(t.split()) for t in texts]
    if tokenizer is None:
        raise PcrmError("--unit tokens needs a tokenizer (pass --model, or use --unit chars/words)")
    return lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def cached_embeddings(dataset, chosen, rejected, config: ConstraintConfig, show_progress: bool = True):
    """Embeddings of both responses, from the disk cache when this data and encoder were seen before."""
    path = cache_path("embeddings", _cache_key(dataset, config), ".npz")
    n = len(chosen)
    cached = read_cached_npz(
        path,
        ("chosen", "rejected"),
        lambda a: (
            a["chosen"].ndim == 2
            and a["chosen"].shape == a["rejected"].shape
            and len(a["chosen"]) == n
            and bool(np.isfinite(a["chosen"]).all() and np.isfinite(a["rejected"]).all())
        ),
    )
    if cached is not None:
        return torch.from_numpy(cached["chosen"]), torch.from_numpy(cached["rejected"])
    from pcrm.models import load_encoder

    encoder = load_encoder(config.encoder)
    # One call over both columns: sentence-transformers sorts by length and batches.
    embeddings = encoder.encode(
        chosen + rejected,
        batch_size=config.encoder_batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    emb_chosen, emb_rejected = embeddings[: len(chosen)], embeddings[len(chosen) :]
    write_cache(write_npz, path, {"chosen": emb_chosen, "rejected": emb_rejected})
    return torch.from_numpy(emb_chosen), torch.from_numpy(emb_rejected)


def _cache_key(dataset: Dataset, config: ConstraintConfig) -> dict:
    from pcrm.models import model_fingerprint, resolve_model

    return {
        "data": fingerprint(dataset, ("chosen", "rejected")),
        "encoder": model_fingerprint(resolve_model(config.encoder)),
        "method": config.method,
    }


def summarize(dataset: Dataset) -> dict:
    """Count and quantiles of the `similarity` and `delta` columns."""
    summary = {"pairs": len(dataset)}
    for column in ("similarity", "delta"):
        values = np.asarray(dataset[column], dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            summary[column] = None
            continue
        q = np.quantile(values, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
        summary[column] = {
            "mean": float(values.mean()),
            **{name: float(v) for name, v in zip(("min", "p5", "p25", "p50", "p75", "p95", "max"), q)},
        }
    return summary


def timed_constraints(dataset: Dataset, config: ConstraintConfig, tokenizer=None, show_progress: bool = True):
    """`add_constraints` plus its wall time and throughput in pairs/s."""
    start = time.perf_counter()
    result = add_constraints(dataset, config, tokenizer, show_progress)
    seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "pairs_per_second": len(dataset) / max(seconds, 1e-9)}


def suggest_betas(
    similarity,
    margins,
    beta2: float = 0.001,
    quantiles: tuple[float, float] = (0.05, 0.95),
    max_similarity: float | None = None,
) -> tuple[float, float]:
    """β1, β3 that map a reference (e.g. BT-trained) model's margin scale onto δ*.

    The most similar pairs (similarity at the upper quantile) get δ* = the median of the
    positive margins; the least similar (lower quantile) get δ* = the upper-quantile margin:
    β1 = (m_hi − m_lo) / (1/(s_lo+β2) − 1/(s_hi+β2)),  β3 = m_lo − β1/(s_hi+β2).
    δ* falls with s, so pairs more similar than s_hi get less than m_lo; where that would leave
    the most similar pair below m_lo/2 (or at δ* ≤ 0), the upper anchor moves to the largest
    similarity, so that δ* ≥ m_lo > 0 for every pair. `max_similarity`: the largest similarity of all the pairs the
    βs will be applied to, when `similarity` is only a sample of them (δ* > 0 must hold for those too).
    """
    s = np.asarray(similarity, dtype=np.float64)
    m = np.asarray(margins, dtype=np.float64)
    s_lo, s_hi = np.quantile(s, quantiles)
    positive = m[m > 0]
    if len(positive) == 0 or s_hi - s_lo < 1e-6:
        raise PcrmError("cannot suggest β: the reference margins are never positive or the similarities do not vary")
    m_lo, m_hi = float(np.median(positive)), float(np.quantile(m, quantiles[1]))
    if m_hi <= m_lo:
        raise PcrmError("cannot suggest β: the reference margins do not spread (upper quantile <= median)")
    beta1 = (m_hi - m_lo) / (1 / (s_lo + beta2) - 1 / (s_hi + beta2))
    s_max = float(s.max()) if max_similarity is None else max(float(s.max()), float(max_similarity))
    if beta1 / (s_max + beta2) + m_lo - beta1 / (s_hi + beta2) < m_lo / 2:
        s_hi = s_max
        beta1 = (m_hi - m_lo) / (1 / (s_lo + beta2) - 1 / (s_hi + beta2))
    return float(beta1), float(m_lo - beta1 / (s_hi + beta2))
