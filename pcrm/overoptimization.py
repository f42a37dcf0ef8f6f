"""Reward over-optimisation with a synthetic gold reward (Gao, Schulman & Hilton 2022; Coste et al. 2024).

A fixed "gold" reward model (`pcrm.gold`, SmolLM2-135M + LoRA) stands in for human judgement. It relabels
the bundled comparison pairs (with Bradley–Terry label noise), proxy reward models (MiniLM) are trained
on those labels with each loss (BT, PCRM-length, PCRM-cosine, lower-margin, centring) over several seeds,
and a policy's samples are selected by best-of-N against each proxy. Plotting the *gold* reward of the
selections against KL(best-of-N ‖ policy) shows whether, and how soon, optimising the proxy stops helping
the gold reward; Gao et al.'s functional form gold(d) − gold(0) = d(α − βd), d = √KL, summarises each
curve by α (initial slope) and β (over-optimisation).

Layout of a study folder (every stage is cached there and skipped when its output exists, so an
interrupted study resumes; the cheap derived stages re-run whenever an earlier stage ran):

    study.json               the settings that the cached outputs depend on (checked on resume)
    labels/                  train.jsonl (gold-labelled pairs for the proxies), test.jsonl (noiseless gold
                             order), test-human.jsonl, gold.npz (gold scores), summary.json
    proxies/METHOD-seedK/    reward-model directories (pcrm train-rm)
    pool/pool.jsonl          prompt, sample, response, gold: the shippable pool (`--pool FILE` reads one)
    scores/LABEL.npz         each proxy's scores of the pool and of the held-out pairs
    bestofn.json, fit.json   curves and fitted α, β per proxy and per method
    report.html, report.md, summary.json, *.png

Pure functions (best-of-N estimator, fit, intervals, label noise) come first; the stage functions take
the command's `Config` (`pcrm.commands.overoptimization.Config`).
"""

import json
import math
from pathlib import Path

import numpy as np

from pcrm.errors import PcrmError
from pcrm.evaluation.metrics import finite_or_none, kl_best_of_n
from pcrm.io import atomic_write_text, write_json, write_npz
from pcrm.scoring import score_responses

STAGES = ("labels", "proxies", "pool", "bestofn", "fit", "report")
ENSEMBLE = "bt-ensemble"
DEFAULT_POOL = Path(__file__).resolve().parent / "data" / "gold-pool" / "pool.jsonl"
# Default label noise: τ = NOISE_SCALE × std of the gold margins of the train pairs. For Gaussian margins this
# flips ≈ 22% of the labels relative to the noiseless gold order (E σ(−|Z|/0.5) ≈ 0.22), close to the 25%
# label noise of Coste et al. (2024) and to the disagreement rate of human annotators.
NOISE_SCALE = 0.5
# What the cached outputs depend on: a resumed study must use the same values (or a new --output).
FINGERPRINT = (
    "gold",
    "data",
    "proxy_model",
    "label_noise",
    "label_seed",
    "max_pairs",
    "test_pairs",
    "max_length",
    "learning_rate",
    "epochs",
    "batch_size",
    "betas",
    "encoder",
    "policy",
    "prompts",
    "pool_size",
    "max_new_tokens",
    "max_prompt_tokens",
    "temperature",
    "seed",
)


# -- best-of-N ------------------------------------------------------------------------------------


def best_of_n_weights(pool_size: int, n: int) -> np.ndarray:
    """Probability that the i-th smallest of `pool_size` values (i = 1..pool_size) is the maximum of a uniformly
    random subset of size `n`: C(i−1, n−1) / C(pool_size, n). The weights sum to 1."""
    if not 1 <= n <= pool_size:
        raise ValueError(f"N must be in 1..{pool_size}, got {n}")
    total = math.comb(pool_size, n)
    return np.array([math.comb(i, n - 1) / total for i in range(pool_size)], dtype=np.float64)


def _tie_means(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` with each run of equal `keys` (rows sorted by key) replaced by the run's mean."""
    out = values.astype(np.float64).copy()
    for row in range(keys.shape[0]):
        k = keys[row]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        if len(starts) == len(k):
            continue
        ends = np.r_[starts[1:], len(k)]
        for a, b in zip(starts, ends):
            if b - a > 1:
                out[row, a:b] = out[row, a:b].mean()
    return out


def expected_best_of_n(proxy: np.ndarray, values: np.ndarray, ns) -> np.ndarray:
    """Unbiased estimate, per prompt, of E[value of the best-of-N response selected by `proxy`], for each N in `ns`.

    `proxy` and `values` are [prompts, pool size]. The estimate is the exact expectation over all size-N subsets
    of the pool (order statistics: the i-th smallest proxy score is selected with weight C(i−1, N−1)/C(n, N)),
    so it is an unbiased estimator of best-of-N from the policy, with far less variance than one draw per N.
    Ties in proxy score are broken uniformly at random (tied responses share their mean value).
    Returns [prompts, len(ns)].
    """
    proxy = np.atleast_2d(np.asarray(proxy, dtype=np.float64))
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if proxy.shape != values.shape:
        raise ValueError(f"proxy {proxy.shape} and values {values.shape} differ in shape")
    order = np.argsort(proxy, axis=1, kind="stable")
    keys = np.take_along_axis(proxy, order, axis=1)
    sorted_values = _tie_means(keys, np.take_along_axis(values, order, axis=1))
    weights = np.stack([best_of_n_weights(proxy.shape[1], n) for n in ns])  # [len(ns), pool]
    return sorted_values @ weights.T


def best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, ns=None) -> dict:
    """Expected gold and proxy reward of best-of-N by `proxy`, averaged over prompts, for N = 1..pool size."""
    ns = list(range(1, proxy.shape[1] + 1)) if ns is None else list(ns)
    kl = [kl_best_of_n(n) for n in ns]
    gold_n = expected_best_of_n(proxy, gold, ns).mean(axis=0)
    proxy_n = expected_best_of_n(proxy, proxy, ns).mean(axis=0)
    return {
        "n": ns,
        "kl": kl,
        "d": [math.sqrt(k) for k in kl],
        "gold": gold_n.tolist(),
        "proxy": proxy_n.tolist(),
        "gold_gain": (gold_n - gold.mean()).tolist(),
        "proxy_gain": (proxy_n - proxy.mean()).tolist(),
    }


# -- fit ------------------------------------------------------------------------------------------


def fit_gao(d, gain) -> tuple[float, float]:
    """Least-squares α, β of Gao et al.'s best-of-N form gain(d) = d(α − βd), d = √KL (no intercept: gain(0) = 0)."""
    d = np.asarray(d, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    design = np.stack([d, -(d**2)], axis=1)
    if np.linalg.matrix_rank(design) < 2:
        raise ValueError("fit_gao needs at least two distinct d > 0")
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return float(alpha), float(beta)


def gao_curve(d, alpha: float, beta: float) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return d * (alpha - beta * d)


def gao_peak(alpha: float, beta: float) -> dict | None:
    """Where d(α − βd) peaks: d* = α/2β, KL* = d*², gain* = α²/4β (None unless β > 0 and α > 0)."""
    if not (beta > 0 and alpha > 0):
        return None
    d = alpha / (2 * beta)
    return {"d": d, "kl": d * d, "gain": alpha * alpha / (4 * beta)}


def t_interval(values, level: float = 0.95) -> dict:
    """Mean and Student-t confidence interval over seeds (low = high = None with fewer than two finite values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    if len(x) < 2:
        return {"mean": float(x.mean()), "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half), "n": int(len(x))}


# -- labels ---------------------------------------------------------------------------------------


def noisy_preferences(gold_a, gold_b, tau: float, seed: int) -> np.ndarray:
    """Whether a ≻ b for each pair, drawn with P(a ≻ b) = σ((g_a − g_b)/τ) (τ = 0: the gold order, ties by a coin)."""
    from scipy.special import expit

    margin = np.asarray(gold_a, dtype=np.float64) - np.asarray(gold_b, dtype=np.float64)
    p = expit(margin / tau) if tau > 0 else np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return np.random.default_rng(seed).random(len(margin)) < p


def default_tau(margins) -> float:
    """τ = NOISE_SCALE × std of the gold margins."""
    return NOISE_SCALE * float(np.std(np.asarray(margins, dtype=np.float64)))


def expected_flip_rate(margins, tau: float) -> float:
    """Expected share of labels that disagree with the noiseless gold order: mean σ(−|m|/τ) (ties count ½)."""
    from scipy.special import expit

    m = np.abs(np.asarray(margins, dtype=np.float64))
    return float(np.mean(expit(-m / tau))) if tau > 0 else float(np.mean(m == 0) / 2)


# -- pool files -----------------------------------------------------------------------------------


def write_pool(path: str | Path, prompts: list[str], responses: list[list[str]], gold: np.ndarray, tokens=None) -> None:
    """The pool as JSONL, one line per response: prompt, sample (index within the prompt), response, [tokens,] gold
    (the format of scripts/make_gold_pool.py; `read_pool` ignores other fields)."""

    def line(i, j, p, r):
        row = {"prompt": p, "sample": j, "response": r} | ({"tokens": int(tokens[i][j])} if tokens is not None else {})
        return json.dumps(row | {"gold": float(gold[i, j])}, ensure_ascii=False)

    lines = [line(i, j, p, r) for i, (p, row) in enumerate(zip(prompts, responses)) for j, r in enumerate(row)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_pool(path: str | Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """(prompts, responses [prompts][samples], gold [prompts, samples]) of a pool file; every prompt needs samples 0..n−1."""
    path = Path(path)
    if not path.is_file():
        raise PcrmError(f"--pool {path}: no such file")
    groups: dict[str, dict[int, tuple[str, float]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, sample, response, gold = row["prompt"], int(row["sample"]), row["response"], float(row["gold"])
        except (ValueError, KeyError, TypeError) as err:
            raise PcrmError(f"{path}:{number}: expected JSON with prompt, sample, response, gold ({err})") from None
        if sample in groups.setdefault(prompt, {}):
            raise PcrmError(f"{path}:{number}: sample {sample} of this prompt appears twice")
        groups[prompt][sample] = (response, gold)
    if not groups:
        raise PcrmError(f"{path}: the pool is empty")
    sizes = {len(g) for g in groups.values()}
    if len(sizes) != 1 or any(sorted(g) != list(range(len(g))) for g in groups.values()):
        raise PcrmError(f"{path}: every prompt needs the same samples 0..n−1 (found sizes {sorted(sizes)})")
    if sizes.pop() < 2:
        raise PcrmError(f"{path}: best-of-N needs at least 2 samples per prompt")
    prompts = list(groups)
    responses = [[groups[p][j][0] for j in range(len(groups[p]))] for p in prompts]
    gold = np.array([[groups[p][j][1] for j in range(len(groups[p]))] for p in prompts], dtype=np.float64)
    return prompts, responses, gold


# -- models ---------------------------------------------------------------------------------------


def load_gold_model(name: str, device: str = "cpu"):
    """(model, tokenizer) of `--gold`: "gold-smollm2" (the shipped gold RM), a gold adapter directory, or any reward-model directory."""
    from pcrm.gold import GOLD_DIR, GOLD_NAME, load_gold
    from pcrm.models import load_reward_model, load_tokenizer

    if name == GOLD_NAME:
        return load_gold(GOLD_DIR, device)
    if (Path(name) / "adapter_config.json").is_file():
        return load_gold(name, device)
    tokenizer = load_tokenizer(name)
    model = load_reward_model(name)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def build_tiny_models(root: str | Path) -> dict:
    """Tiny random models for `--quick` (seconds on a CPU): a BERT proxy backbone, a BERT gold RM and a Llama policy,
    all with the byte-level ByT5 tokenizer. Deterministic (seeded); built once under `root`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    root = Path(root)
    paths = {name: root / name for name in ("proxy", "gold", "policy")}
    if all((p / "config.json").is_file() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    tokenizer = ByT5Tokenizer()
    bert = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        for name, seed in (("proxy", 0), ("gold", 1)):
            torch.manual_seed(seed)
            BertForSequenceClassification(BertConfig(**bert)).save_pretrained(paths[name])
            tokenizer.save_pretrained(paths[name])
        torch.manual_seed(2)
        llama = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        LlamaForCausalLM(llama).save_pretrained(paths["policy"])
        tokenizer.save_pretrained(paths["policy"])
    return {k: str(v) for k, v in paths.items()}


# -- stages ---------------------------------------------------------------------------------------


def _device(config) -> str:
    from pcrm.models import default_device

    return default_device(config.device)


def _subset(dataset, count: int | None, seed: int):
    if count is not None and count < len(dataset):
        return dataset.shuffle(seed=seed).select(range(count))
    return dataset


def _write_pairs(path: Path, prompts, chosen, rejected) -> None:
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def check_study(config, out: Path, write: bool = True) -> None:
    """Record the settings the cached outputs depend on (unless not `write`); refuse to resume a study made with
    other ones, or whose study.json is unreadable."""
    path = out / "study.json"
    current = {key: getattr(config, key) for key in FINGERPRINT}
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PcrmError(
                f"{path}: unreadable ({type(err).__name__}); use a new --output, or remove the study"
            ) from None
        if not isinstance(saved, dict):
            raise PcrmError(f"{path}: not a study.json of pcrm overoptimization; use a new --output")
        changed = [key for key in FINGERPRINT if key in saved and saved[key] != current[key]]
        if changed:
            what = ", ".join(f"--{k.replace('_', '-')} {saved[k]!r} (now {current[k]!r})" for k in changed)
            raise PcrmError(f"--output {out} holds a study made with {what}: use a new --output, or the same options")
        return
    if write:
        write_json(path, current)


def stage_labels(config, out: Path) -> dict:
    """Gold scores of every train and test response; the train pairs relabelled with Bradley–Terry noise."""
    from pcrm.data import load_preferences

    folder = out / "labels"
    train = _subset(load_preferences(config.data, split="train"), config.max_pairs, config.label_seed)
    test = _subset(load_preferences(config.data, split="test"), config.test_pairs, config.label_seed)
    train, test = ({k: list(d[k]) for k in ("prompt", "chosen", "rejected")} for d in (train, test))
    for name, data in (("train", train), ("test", test)):
        if not (isinstance(data["prompt"][0], str) and isinstance(data["chosen"][0], str)):
            raise PcrmError(f"{config.data} ({name}): the study needs text prompts and responses")
    model, tokenizer = load_gold_model(config.gold, _device(config))
    prompts = train["prompt"] * 2 + test["prompt"] * 2
    responses = train["chosen"] + train["rejected"] + test["chosen"] + test["rejected"]
    print(f"== labels: gold scores of {len(responses)} responses", flush=True)
    scores = score_responses(
        model, tokenizer, prompts, responses, config.max_length, config.score_batch_size, config.progress
    )
    n, m = len(train["prompt"]), len(test["prompt"])
    train_c, train_r, test_c, test_r = scores[:n], scores[n : 2 * n], scores[2 * n : 2 * n + m], scores[2 * n + m :]
    margins = train_c - train_r
    tau = default_tau(margins) if config.label_noise is None else float(config.label_noise)
    keep = noisy_preferences(train_c, train_r, tau, config.label_seed)  # True: the human-chosen response wins
    _write_pairs(
        folder / "train.jsonl",
        train["prompt"],
        np.where(keep, train["chosen"], train["rejected"]),
        np.where(keep, train["rejected"], train["chosen"]),
    )
    gold_keep = test_c >= test_r  # the noiseless gold order (ties keep the human order)
    _write_pairs(
        folder / "test.jsonl",
        test["prompt"],
        np.where(gold_keep, test["chosen"], test["rejected"]),
        np.where(gold_keep, test["rejected"], test["chosen"]),
    )
    _write_pairs(folder / "test-human.jsonl", test["prompt"], test["chosen"], test["rejected"])
    write_npz(
        folder / "gold.npz",
        {
            "train_chosen": train_c,
            "train_rejected": train_r,
            "train_keep": keep,
            "test_chosen": test_c,
            "test_rejected": test_r,
        },
    )
    strict = margins != 0
    summary = {
        "gold": config.gold,
        "train_pairs": n,
        "test_pairs": m,
        "tau": tau,
        "tau_rule": f"{NOISE_SCALE} × std of the gold train margins" if config.label_noise is None else "--label-noise",
        "gold_margin_std": float(np.std(margins)),
        "gold_margin_mean": float(np.mean(margins)),
        "gold_ties_train": int((~strict).sum()),
        "gold_ties_test": int((test_c == test_r).sum()),
        "expected_flip_rate": expected_flip_rate(margins, tau),
        "noisy_vs_gold_agreement": float(np.mean(keep[strict] == (margins[strict] > 0))) if strict.any() else None,
        "noisy_vs_human_agreement": float(np.mean(keep)),
        "gold_vs_human_agreement_train": float(np.mean(np.sign(margins) + 1) / 2),
        "gold_vs_human_agreement_test": float(np.mean(np.sign(test_c - test_r) + 1) / 2),
    }
    write_json(folder / "summary.json", summary)
    print(
        f"labels: τ = {tau:.4g} ({summary['tau_rule']}); noisy labels agree with the gold order on "
        f"{summary['noisy_vs_gold_agreement']:.3f} and with the human labels on {summary['noisy_vs_human_agreement']:.3f} "
        f"of the train pairs; the gold RM agrees with the human labels on {summary['gold_vs_human_agreement_test']:.3f} "
        f"of the test pairs",
        flush=True,
    )
    return summary


def proxy_dirs(config, out: Path) -> dict[str, Path]:
    """label ("METHOD-seedK") -> directory of every trained proxy."""
    return {
        f"{method}-seed{seed}": out / "proxies" / f"{method}-seed{seed}"
        for method in config.methods
        for seed in config.seeds
    }


def train_proxy(config, out: Path, method: str, seed: int, directory: Path) -> dict:
    from pcrm.constraints import PriorOptions
    from pcrm.pipelines import reward as train_rm

    labels = out / "labels"
    rm_config = train_rm.Config(
        method=method,
        model=config.proxy_model,
        data=str(labels / "train.jsonl"),
        split="train",
        eval_data=str(labels / "test.jsonl"),
        eval_split="test",
        output=str(directory),
        seed=seed,
        max_length=config.max_length,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_batch_size=config.score_batch_size,
        save_steps=10**9,
        overwrite=directory.exists(),
        progress=config.progress,
        betas=config.betas,
        prior=PriorOptions(encoder=config.encoder),
    )
    result = train_rm.train_reward_model(rm_config)
    print(train_rm.format_result(result), flush=True)
    return result


def stage_proxies(config, out: Path) -> list[str]:
    """Train every (method, seed) proxy that is not trained yet; returns the labels trained now."""
    trained = []
    for label, directory in proxy_dirs(config, out).items():
        if (directory / "pcrm_config.json").is_file():
            continue
        method, seed = label.rsplit("-seed", 1)
        print(f"== proxies: training {label}", flush=True)
        train_proxy(config, out, method, int(seed), directory)
        trained.append(label)
    return trained


def sample_pool(config, out: Path) -> tuple[list[str], list[list[str]], list[list[int]]]:
    """`config.prompts` held-out prompts × `config.pool_size` samples; sample j of every prompt comes from one pass
    seeded with `seed + j`. Finished passes are kept in pool/passes.partial.json, so an interrupted pass resumes."""
    import torch

    from pcrm.alignment.rollout import load_prompts, sample
    from pcrm.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.policy)
    prompts = load_prompts(config.data, "test", tokenizer, config.max_prompt_tokens, config.prompts, config.seed)
    partial = out / "pool" / "passes.partial.json"
    passes, lengths = [], []
    if partial.exists():
        saved = json.loads(partial.read_text())
        passes, lengths = (saved["passes"], saved["tokens"]) if saved.get("prompts") == prompts else ([], [])
    model = load_causal_lm(config.policy).to(_device(config)) if len(passes) < config.pool_size else None
    for j in range(len(passes), config.pool_size):
        torch.manual_seed(config.seed + j)
        _, ids, texts = sample(
            model, tokenizer, prompts, config.max_new_tokens, config.temperature, config.sample_batch_size
        )
        passes.append(texts)
        lengths.append([len(row) for row in ids])
        write_json(partial, {"prompts": prompts, "passes": passes, "tokens": lengths})
        print(f"pool: sampled pass {j + 1}/{config.pool_size} ({len(prompts)} prompts)", flush=True)
    return prompts, [list(row) for row in zip(*passes)], [list(row) for row in zip(*lengths)]


def stage_pool(config, out: Path) -> dict:
    """The pool with its gold scores: read from `--pool`, or sampled from the policy and scored by the gold RM."""
    folder = out / "pool"
    if config.pool:
        prompts, responses, gold = read_pool(config.pool)
        tokens = None
        meta = {"source": str(config.pool)}
    else:
        print(f"== pool: {config.prompts} prompts × {config.pool_size} samples from {config.policy}", flush=True)
        prompts, responses, tokens = sample_pool(config, out)
        model, tokenizer = load_gold_model(config.gold, _device(config))
        flat = score_responses(
            model,
            tokenizer,
            [p for p, row in zip(prompts, responses) for _ in row],
            [r for row in responses for r in row],
            config.max_length,
            config.score_batch_size,
            config.progress,
        )
        gold = flat.reshape(len(prompts), -1)
        meta = {
            "source": "sampled",
            "policy": config.policy,
            "gold": config.gold,
            "seed": config.seed,
            "max_new_tokens": config.max_new_tokens,
            "max_prompt_tokens": config.max_prompt_tokens,
            "temperature": config.temperature,
            "data": config.data,
            "split": "test",
        }
    meta.update(
        {
            "prompts": len(prompts),
            "pool_size": gold.shape[1],
            "gold_mean": float(gold.mean()),
            "gold_std": float(gold.std()),
        }
    )
    write_json(folder / "meta.json", meta)
    write_pool(folder / "pool.jsonl", prompts, responses, gold, tokens)  # written last: the stage's "done" marker
    (folder / "passes.partial.json").unlink(missing_ok=True)
    return meta


def score_proxy(config, out: Path, directory: Path) -> dict:
    """A proxy's scores of the pool [prompts, samples] and of the held-out pairs (human orientation)."""
    from pcrm.data import load_preferences
    from pcrm.scoring import RewardScorer

    prompts, responses, _ = read_pool(out / "pool" / "pool.jsonl")
    test = load_preferences(str(out / "labels" / "test-human.jsonl"))
    test = {k: list(test[k]) for k in ("prompt", "chosen", "rejected")}
    scorer = RewardScorer.load(directory, config.max_length, _device(config), config.score_batch_size)
    texts_p = [p for p, row in zip(prompts, responses) for _ in row] + test["prompt"] * 2
    texts_r = [r for row in responses for r in row] + test["chosen"] + test["rejected"]
    scores = scorer.responses(texts_p, texts_r, config.progress)
    k, m = len(prompts) * len(responses[0]), len(test["prompt"])
    return {
        "pool": scores[:k].reshape(len(prompts), -1),
        "test_chosen": scores[k : k + m],
        "test_rejected": scores[k + m :],
    }


def load_scores(config, out: Path) -> dict[str, dict]:
    """label -> scores of every proxy, plus the BT ensemble (mean of the BT seeds' scores) when there are ≥ 2 BT seeds."""
    scores = {}
    for label in proxy_dirs(config, out):
        with np.load(out / "scores" / f"{label}.npz") as arrays:
            scores[label] = {k: arrays[k] for k in arrays.files}
    bt = [label for label in scores if label.rsplit("-seed", 1)[0] == "bt"]
    if len(bt) >= 2:
        scores[ENSEMBLE] = {key: np.mean([scores[label][key] for label in bt], axis=0) for key in scores[bt[0]]}
    return scores


def stage_scores(config, out: Path) -> list[str]:
    """Every proxy scores the pool and the held-out pairs once (scores/LABEL.npz); returns the labels scored now."""
    done = []
    for label, directory in proxy_dirs(config, out).items():
        path = out / "scores" / f"{label}.npz"
        if path.is_file():
            continue
        print(f"== best-of-N: {label} scores the pool", flush=True)
        write_npz(path, score_proxy(config, out, directory))
        done.append(label)
    return done


def method_of(label: str) -> str:
    return label if label == ENSEMBLE else label.rsplit("-seed", 1)[0]


def stage_bestofn(config, out: Path) -> dict:
    """Best-of-N curves (N = 1..pool size) of every proxy: expected gold and proxy reward of the selections."""
    _, _, gold = read_pool(out / "pool" / "pool.jsonl")
    curves = {
        "pool": {"prompts": gold.shape[0], "pool_size": gold.shape[1], "gold_mean": float(gold.mean())},
        "proxies": {},
    }
    for label, s in load_scores(config, out).items():
        curve = best_of_n_curve(s["pool"], gold)
        curve["proxy_std"] = float(s["pool"].std())
        curves["proxies"][label] = {"method": method_of(label), **curve}
    write_json(out / "bestofn.json", curves)
    return curves


def _accuracy(margin) -> float:
    from pcrm.evaluation.metrics import accuracy

    return float(accuracy(np.asarray(margin, dtype=np.float64)))


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else math.nan


def _fmt(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fit_proxy(curve: dict, scores: dict, gold_pool: np.ndarray, gold_test_margin: np.ndarray) -> dict:
    """α, β, peak, gold at the largest N, proxy–gold Spearman ρ on the pool, held-out accuracy and reward scale of one proxy."""
    from pcrm.evaluation.metrics import spearman

    alpha, beta = fit_gao(curve["d"], curve["gold_gain"])
    fitted = gao_curve(curve["d"], alpha, beta)
    residual = np.asarray(curve["gold_gain"]) - fitted
    margin = scores["test_chosen"] - scores["test_rejected"]  # human orientation
    strict = gold_test_margin != 0
    return {
        "alpha": alpha,
        "beta": beta,
        "peak": gao_peak(alpha, beta),
        "fit_rmse": float(np.sqrt(np.mean(residual**2))),
        "max_kl": curve["kl"][-1],
        "gold_gain_max_n": curve["gold_gain"][-1],
        "gold_max_n": curve["gold"][-1],
        "proxy_gain_max_n_sigma": curve["proxy_gain"][-1] / max(curve["proxy_std"], 1e-12),
        "spearman_pool": finite_or_none(spearman(scores["pool"].ravel(), gold_pool.ravel())),
        "spearman_within_prompt": finite_or_none(_nanmean(spearman(scores["pool"], gold_pool))),
        "accuracy_gold": _accuracy((margin * np.sign(gold_test_margin))[strict]) if strict.any() else None,
        "accuracy_human": _accuracy(margin),
        "scale": float(scores["pool"].std()),
    }


AGGREGATED = (
    "alpha",
    "beta",
    "gold_gain_max_n",
    "proxy_gain_max_n_sigma",
    "spearman_pool",
    "spearman_within_prompt",
    "accuracy_gold",
    "accuracy_human",
    "scale",
    "beta1",
    "beta3",
)


def stage_fit(config, out: Path, curves: dict) -> dict:
    """Per proxy: `fit_proxy`; per method: mean and 95% t-interval over seeds, and the peak of the mean α, β."""
    _, _, gold_pool = read_pool(out / "pool" / "pool.jsonl")
    with np.load(out / "labels" / "gold.npz") as g:
        gold_test_margin = g["test_chosen"] - g["test_rejected"]
    scores = load_scores(config, out)
    per_proxy = {}
    for label, curve in curves["proxies"].items():
        row = {"method": curve["method"], **fit_proxy(curve, scores[label], gold_pool, gold_test_margin)}
        trained = out / "proxies" / label / "pcrm_config.json"
        if trained.is_file():
            record = json.loads(trained.read_text())
            row.update(
                {
                    "beta1": record.get("beta1"),
                    "beta3": record.get("beta3"),
                    "train_seconds": record.get("train_seconds"),
                }
            )
        per_proxy[label] = row
    per_method = {}
    for method in dict.fromkeys(row["method"] for row in per_proxy.values()):
        rows = [row for row in per_proxy.values() if row["method"] == method]
        agg = {"seeds": len(rows), **{key: t_interval([row.get(key) for row in rows]) for key in AGGREGATED}}
        alpha, beta = agg["alpha"]["mean"], agg["beta"]["mean"]
        agg["peak"] = gao_peak(alpha, beta)
        agg["peak_inside"] = bool(
            agg["peak"] and agg["peak"]["kl"] <= curves["proxies"][next(iter(per_proxy))]["kl"][-1]
        )
        agg["seeds_with_peak"] = sum(row["peak"] is not None for row in rows)
        per_method[method] = agg
    fit = {"per_proxy": per_proxy, "per_method": per_method}
    write_json(out / "fit.json", fit)
    return fit


# -- report ---------------------------------------------------------------------------------------


def _band(curves: dict, method: str, key: str, scale_by_std: bool = False):
    rows = [c for c in curves["proxies"].values() if c["method"] == method]
    values = np.array([np.asarray(c[key]) / (max(c["proxy_std"], 1e-12) if scale_by_std else 1.0) for c in rows])
    return np.asarray(rows[0]["kl"]), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_curves(curves: dict, fit: dict, path: Path) -> Path:
    """Gold gain (with the fitted d(α − βd) of the mean α, β, dotted) and proxy gain against KL, one colour per method."""
    from pcrm.plots import new_figure, save_figure

    fig, (gold_ax, proxy_ax) = new_figure(ncols=2, width=5.4, height=4.0)
    methods = list(dict.fromkeys(c["method"] for c in curves["proxies"].values()))
    for i, method in enumerate(methods):
        color, style = f"C{i % 10}", "--" if method == ENSEMBLE else "-"
        kl, mean, low, high = _band(curves, method, "gold_gain")
        gold_ax.plot(kl, mean, style, color=color, marker="o", markersize=2.5, label=method)
        gold_ax.fill_between(kl, low, high, color=color, alpha=0.15, linewidth=0)
        agg = fit["per_method"][method]
        if agg["alpha"]["mean"] is not None:
            d = np.linspace(0, math.sqrt(kl[-1]), 60)
            gold_ax.plot(d**2, gao_curve(d, agg["alpha"]["mean"], agg["beta"]["mean"]), ":", color=color, linewidth=1)
        kl, mean, low, high = _band(curves, method, "proxy_gain", scale_by_std=True)
        proxy_ax.plot(kl, mean, style, color=color, marker="o", markersize=2.5, label=method)
        proxy_ax.fill_between(kl, low, high, color=color, alpha=0.15, linewidth=0)
    gold_ax.axhline(0, color="black", linewidth=0.6)
    gold_ax.set(
        title="gold reward of best-of-N by each proxy",
        xlabel="KL(best-of-N ‖ policy) = log N − (N−1)/N (nats)",
        ylabel="gold(N) − gold(N=1)",
    )
    proxy_ax.set(
        title="proxy reward of the same selections",
        xlabel="KL (nats)",
        ylabel="proxy gain (σ of the proxy's pool scores)",
    )
    for ax in (gold_ax, proxy_ax):
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _ci(est: dict, digits: int = 3) -> str:
    if est is None or est.get("mean") is None:
        return "–"
    text = f"{est['mean']:.{digits}f}"
    if est.get("low") is not None:
        text += f" [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"
    return text


def method_rows(fit: dict) -> list[dict]:
    rows = []
    for method, agg in fit["per_method"].items():
        peak = agg["peak"]
        rows.append(
            {
                "method": method,
                "seeds": str(agg["seeds"]),
                "α [95% CI]": _ci(agg["alpha"]),
                "β [95% CI]": _ci(agg["beta"]),
                "peak gold gain (KL*)": (
                    f"{peak['gain']:.3f} ({peak['kl']:.2f}{'' if agg['peak_inside'] else ', extrapolated'})"
                    if peak
                    else "none (β ≤ 0)"
                ),
                "gold gain at max N": _ci(agg["gold_gain_max_n"]),
                "proxy gain at max N (σ)": _ci(agg["proxy_gain_max_n_sigma"], 2),
                "ρ proxy–gold (pool)": _ci(agg["spearman_pool"]),
                "ρ within prompt": _ci(agg["spearman_within_prompt"]),
                "acc. vs gold": _ci(agg["accuracy_gold"]),
                "acc. vs human": _ci(agg["accuracy_human"]),
                "reward scale (std)": _ci(agg["scale"]),
                "β1, β3": (
                    f"{agg['beta1']['mean']:.3g}, {agg['beta3']['mean']:.3g}"
                    if agg["beta1"]["mean"] is not None
                    else "–"
                ),
            }
        )
    return rows


def proxy_rows(fit: dict) -> list[dict]:
    return [
        {
            "proxy": label,
            "α": f"{r['alpha']:.4f}",
            "β": f"{r['beta']:.4f}",
            "fit RMSE": f"{r['fit_rmse']:.4f}",
            "gold gain at max N": f"{r['gold_gain_max_n']:.4f}",
            "ρ pool": _fmt(r["spearman_pool"], 3),
            "acc. vs gold": _fmt(r["accuracy_gold"], 3),
            "acc. vs human": f"{r['accuracy_human']:.3f}",
            "scale": f"{r['scale']:.4f}",
        }
        for label, r in fit["per_proxy"].items()
    ]


def _overlap(a: dict, b: dict) -> bool:
    if a["low"] is None or b["low"] is None:
        return True
    return not (a["low"] > b["high"] or b["low"] > a["high"])


def findings(fit: dict, curves: dict) -> str:
    """Plain statements read off the numbers (which method keeps the most gold, where curves turn, what the CIs allow)."""
    agg = fit["per_method"]
    trained = {m: a for m, a in agg.items() if m != ENSEMBLE and a["gold_gain_max_n"]["mean"] is not None}
    if not trained:
        return ""
    pool = curves["pool"]
    best = max(trained, key=lambda m: trained[m]["gold_gain_max_n"]["mean"])
    parts = [
        f"At the largest N ({pool['pool_size']}, KL {kl_best_of_n(pool['pool_size']):.2f} nats) the highest mean gold gain is "
        f"{best}'s ({_ci(trained[best]['gold_gain_max_n'])})."
    ]
    tied = [
        m for m in trained if m != best and _overlap(trained[m]["gold_gain_max_n"], trained[best]["gold_gain_max_n"])
    ]
    if tied:
        parts.append(
            f"Its 95% interval over seeds overlaps those of {', '.join(tied)}, so the data do not separate them."
        )
    elif len(trained) > 1:
        parts.append("Its 95% interval over seeds overlaps no other method's.")
    turned = [m for m, a in agg.items() if a["peak"] and a["peak_inside"]]
    if turned:
        parts.append(
            f"The fitted gold curve peaks inside the measured KL range (over-optimisation) for {', '.join(turned)}."
        )
    else:
        parts.append(
            "No fitted gold curve peaks inside the measured KL range: within this pool, selecting harder by any proxy "
            "has not yet started to lower the gold reward (β describes curvature only; a peak beyond the range is an extrapolation)."
        )
    falling = [m for m, a in trained.items() if a["gold_gain_max_n"]["mean"] < 0]
    if falling:
        parts.append(f"Selecting by {', '.join(falling)} ends below the policy's average gold reward.")
    if ENSEMBLE in agg and agg.get("bt", {}).get("gold_gain_max_n", {}).get("mean") is not None:
        e, b = agg[ENSEMBLE]["gold_gain_max_n"]["mean"], agg["bt"]["gold_gain_max_n"]["mean"]
        parts.append(
            f"The BT ensemble (mean of the BT seeds' scores) reaches {e:.3f} against {b:.3f} for a single BT proxy on average."
        )
    return " ".join(parts)


def write_report(config, out: Path, labels: dict, pool: dict, curves: dict, fit: dict) -> dict:
    from pcrm.report import Section, render_html, render_markdown, store_sections

    plot_curves(curves, fit, out / "overoptimization.png")
    n_seeds = len(config.seeds)
    setup = (
        f"Synthetic gold-reward study (Gao, Schulman & Hilton 2022; Coste et al. 2024). The gold reward model ({config.gold}) "
        f"relabelled {labels['train_pairs']} {config.data} train pairs with Bradley–Terry noise, P(a ≻ b) = σ((g_a − g_b)/τ), "
        f"τ = {labels['tau']:.4g} ({labels['tau_rule']}; gold margin std {labels['gold_margin_std']:.4g}); the noisy labels agree with the "
        f"noiseless gold order on {labels['noisy_vs_gold_agreement']:.3f} of the pairs (expected {1 - labels['expected_flip_rate']:.3f}) and "
        f"with the human labels on {labels['noisy_vs_human_agreement']:.3f}; the gold RM itself agrees with the human labels on "
        f"{labels['gold_vs_human_agreement_test']:.3f} of {labels['test_pairs']} held-out pairs. Proxies ({config.proxy_model}) were trained "
        f"on the noisy labels with {', '.join(config.methods)} over seeds {', '.join(map(str, config.seeds))} (βs: {config.betas}); "
        f"{ENSEMBLE} is the mean of the BT seeds' scores. Pool: {pool['prompts']} held-out prompts × {pool['pool_size']} samples "
        f"({pool['source']}), scored once by the gold RM. Best-of-N values are the exact expectation over all size-N subsets of the "
        f"pool (an unbiased estimator of best-of-N from the policy), averaged over prompts; KL = log N − (N−1)/N."
    )
    caveats = (
        f"Caveats: the pool bounds KL at {kl_best_of_n(pool['pool_size']):.2f} nats (N ≤ {pool['pool_size']}); Gao et al. measured "
        f"best-of-N to far larger N, and a gold curve that still rises here may turn at larger KL. The estimator is unbiased for best-of-N from the policy, but its prompts are only {pool['prompts']}, so "
        f"curves of different proxies share the same sampling noise (they are compared on the same pool, which helps comparisons). "
        f"Intervals are Student-t over {n_seeds} seeds (proxy training noise only; pool and label noise are fixed) and are wide with so "
        f"few seeds. α and β are least-squares fits of d(α − βd) to the mean-over-prompts curve at every N; β > 0 with a peak beyond "
        f"the largest KL is an extrapolation, not an observation. Accuracy vs gold uses the noiseless gold order of the held-out pairs "
        f"(ties dropped); proxies never saw human labels, so accuracy vs human measures how much of the human signal the gold RM "
        f"passes on. RL against the proxies is not part of this study."
    )
    sections = [
        Section("Setup", setup),
        Section("Findings", findings(fit, curves)),
        Section(
            "Gold and proxy reward against KL",
            "Left: gold reward gain of the best-of-N selection by each proxy (line: mean over seeds, band: min..max, dotted: "
            "the fitted d(α − βd) of the mean α, β). Right: the proxy's own reward gain of the same selections, in units of the "
            "std of its pool scores so that proxies of different scale compare.",
            images=["overoptimization.png"],
        ),
        Section(
            "Summary per method",
            "Mean [95% t-interval over seeds]. α: initial slope of gold gain in d = √KL; β: over-optimisation (curvature); "
            "peak = α²/4β at KL* = (α/2β)² from the mean α, β; ρ: Spearman of proxy and gold scores on the pool (pooled; "
            "within prompt = mean over prompts); reward scale: std of the proxy's pool scores.",
            rows=method_rows(fit),
        ),
        Section("Per proxy", rows=proxy_rows(fit)),
        Section("Caveats", caveats),
    ]
    title = "Reward over-optimisation against a gold reward model"
    store_sections(out, sections)  # `pcrm report --input OUTPUT` renders them again
    atomic_write_text(out / "report.html", render_html(title, sections, out))
    atomic_write_text(out / "report.md", render_markdown(title, sections))
    from dataclasses import asdict

    summary = {"config": asdict(config), "labels": labels, "pool": pool, "bestofn": curves, "fit": fit}
    write_json(out / "summary.json", summary)
    return summary


# -- the study ------------------------------------------------------------------------------------


def run_study(config) -> dict:
    """Run (or resume) every stage of the study under `config.output`; returns summary.json's content plus
    `stages`: which stages ran now and which were served from the output folder."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    check_study(config, out)
    ran = {}

    def done(name, cached):
        ran[name] = "cached" if cached else "ran"
        if cached:
            print(f"== {name}: cached in {out}", flush=True)

    labels_file = out / "labels" / "summary.json"
    cached = labels_file.is_file()
    labels = json.loads(labels_file.read_text()) if cached else stage_labels(config, out)
    done("labels", cached)
    done("proxies", not stage_proxies(config, out))
    pool_file = out / "pool" / "pool.jsonl"
    cached = pool_file.is_file() and (out / "pool" / "meta.json").is_file()
    pool = json.loads((out / "pool" / "meta.json").read_text()) if cached else stage_pool(config, out)
    done("pool", cached)
    scored = stage_scores(config, out)
    upstream = any(v == "ran" for v in ran.values()) or bool(scored)
    cached = not upstream and (out / "bestofn.json").is_file() and _same_proxies(config, out)
    curves = json.loads((out / "bestofn.json").read_text()) if cached else stage_bestofn(config, out)
    done("bestofn", cached)
    cached = cached and (out / "fit.json").is_file()
    fit = json.loads((out / "fit.json").read_text()) if cached else stage_fit(config, out, curves)
    done("fit", cached)
    cached = cached and all((out / name).is_file() for name in ("report.html", "report.md", "summary.json"))
    summary = (
        json.loads((out / "summary.json").read_text())
        if cached
        else write_report(config, out, labels, pool, curves, fit)
    )
    done("report", cached)
    print(format_summary(fit, out), flush=True)
    return {**summary, "stages": ran}


def _same_proxies(config, out: Path) -> bool:
    """Whether bestofn.json covers exactly this run's proxies (a run with other --methods/--seeds re-derives it)."""
    saved = json.loads((out / "bestofn.json").read_text())["proxies"]
    return {k for k in saved if k != ENSEMBLE} == set(proxy_dirs(config, out))


def format_summary(fit: dict, out: Path) -> str:
    lines = [f"{'method':<14} {'α':>8} {'β':>8} {'gold gain @maxN':>16} {'acc gold':>9} {'acc human':>9} {'scale':>8}"]
    for method, agg in fit["per_method"].items():
        lines.append(
            f"{method:<14} {agg['alpha']['mean']:>8.4f} {agg['beta']['mean']:>8.4f} {agg['gold_gain_max_n']['mean']:>16.4f} "
            f"{_fmt(agg['accuracy_gold']['mean'], 3):>9} {agg['accuracy_human']['mean']:>9.3f} {agg['scale']['mean']:>8.4f}"
        )
    return "\n".join(lines) + f"\nwrote {out / 'report.html'}, {out / 'report.md'} and {out / 'summary.json'}"
