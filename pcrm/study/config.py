"""`StudyConfig`: the options of the gold-reward over-optimisation study (`pcrm overoptimization`; the stage
functions of `pcrm.study` take it)."""

from dataclasses import dataclass, field, fields

from pcrm.errors import PcrmError

FULL_METHODS = ["bt", "length", "cosine", "fixed", "lower-margin", "center"]
ARMS = ("off-policy", "on-policy")
QUICK_METHODS = ["bt", "cosine"]
QUICK_SIZES = {
    "prompts": 4,
    "pool_size": 4,
    "max_length": 64,
    "max_new_tokens": 8,
    "max_prompt_tokens": 64,
    "learning_rate": 2e-3,
}


@dataclass
class StudyConfig:
    """Reward over-optimisation against a gold reward model (Gao, Schulman & Hilton 2022). Off-policy arm: the gold RM
    relabels the bundled pairs with Bradley–Terry noise and MiniLM proxies are trained on them with each loss over
    several seeds. On-policy arm: proxies are trained on gold-labelled pairs of the pool's own samples, cross-fitted by
    prompt folds. Every proxy's selection from a pool of policy samples is scored by the gold RM: best-of-N (exact
    order-statistics estimator) and the KL-regularised policy π_β ∝ π₀·exp(r/β) on the pool, with paired differences
    against BT, random-selector bands and Gao's d(α − βd). Stages: labels, proxies, pool, scores, best-of-N, fit,
    analysis, on-policy, report; each is cached under --output and skipped when done, so an interrupted study
    resumes. RL (PPO) against the proxies is not part of this command."""

    output: str = field(default="runs/overoptimization", metadata={"help": "study folder (stages are cached here)"})
    quick: bool = field(
        default=False,
        metadata={
            "help": "tiny random gold RM, proxy backbone and policy built under OUTPUT/tiny-models, "
            "24 train / 8 test pairs, seeds 0 1, methods bt cosine, pool 4×4, max length 64, 8 new tokens, "
            "learning rate 2e-3, unless given (seconds; a smoke test)"
        },
    )
    arms: list[str] = field(
        default_factory=list,
        metadata={
            "help": "off-policy (proxies trained on the gold-relabelled bundled pairs) and/or on-policy (proxies "
            "trained on gold-labelled pairs of the pool's own samples, cross-fitted by prompt folds), repeatable "
            "(default: both)"
        },
    )
    folds: int = field(default=2, metadata={"help": "on-policy arm: prompt folds of the cross-fitting"})
    pairs_per_prompt: int | None = field(
        default=None,
        metadata={"help": "on-policy arm: labelled pairs of each prompt's samples (default: pool size / 2, disjoint)"},
    )
    uwo_lambda: float = field(
        default=1.0,
        metadata={"help": "λ of the uncertainty-weighted BT ensemble, mean − λ·variance over the BT seeds"},
    )
    gold: str = field(
        default="gold-smollm2",
        metadata={"help": "gold reward model: gold-smollm2 (shipped) or a reward-model directory"},
    )
    proxy_model: str = field(default="minilm", metadata={"help": "backbone of the proxy reward models"})
    policy: str = field(default="smollm2", metadata={"help": "policy that samples the pool"})
    data: str = field(
        default="hh-rlhf-harmless", metadata={"help": "comparison data with train and test splits (text prompts)"}
    )
    methods: list[str] = field(
        default_factory=list, metadata={"help": f"proxy losses, repeatable (default: {' '.join(FULL_METHODS)})"}
    )
    seeds: list[int] = field(
        default_factory=list, metadata={"help": "proxy seeds, repeatable (default: 0 1 2; --quick: 0 1)"}
    )
    label_noise: float | None = field(
        default=None,
        metadata={
            "help": "τ of the Bradley–Terry relabelling P(a ≻ b) = σ((g_a − g_b)/τ), in gold-reward units; "
            "0: the noiseless gold order (default: 0.5 × the std of the gold margins, ≈ 22%% flipped labels for "
            "Gaussian margins, cf. Coste et al.'s 25%%)"
        },
    )
    label_seed: int = field(
        default=0, metadata={"help": "seed of the label noise and of the --max-pairs/--test-pairs subsets"}
    )
    max_pairs: int | None = field(
        default=None, metadata={"help": "label and train on a seeded subset of this many train pairs (default: all)"}
    )
    test_pairs: int | None = field(
        default=None, metadata={"help": "held-out pairs for the accuracies (default: all test pairs)"}
    )
    max_length: int = field(default=128, metadata={"help": "tokens a reward model (gold and proxies) reads"})
    learning_rate: float = field(default=1e-4, metadata={"help": "proxy learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "proxy training epochs"})
    batch_size: int = field(default=8, metadata={"help": "proxy training batch size (pairs)"})
    betas: str = field(
        default="fixed",
        metadata={
            "help": "β1, β3 of the PCRM proxies: fixed (defaults) or auto (train-rm --betas auto)",
            "choices": ["fixed", "auto"],
        },
    )
    encoder: str = field(default="minilm", metadata={"help": "sentence encoder of the cosine prior"})
    prompts: int = field(default=256, metadata={"help": "held-out prompts of the pool"})
    pool_size: int = field(
        default=16, metadata={"help": "samples per prompt (best-of-N for N = 1..this); the shipped pool has 16"}
    )
    pool: str | None = field(
        default=None,
        metadata={
            "help": "read the pool (JSONL: prompt, sample, response, gold) instead of sampling, or 'sample': sample "
            "it anew; default: pcrm/data/gold-pool/pool.jsonl when it is shipped and --gold is gold-smollm2 (not "
            "with --quick)"
        },
    )
    max_new_tokens: int = field(default=128, metadata={"help": "max tokens of a sampled response"})
    max_prompt_tokens: int = field(
        default=256,
        metadata={"help": "pool prompts keep their last turns within this many policy tokens (chat template included)"},
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the pool"})
    seed: int = field(
        default=0, metadata={"help": "seed of the pool's prompt order and samples (generation batch b: seed + b)"}
    )
    sample_batch_size: int = field(
        default=32,
        metadata={
            "help": "samples per generation batch, in prompt-length order (a prompt's samples share its prefill)"
        },
    )
    score_batch_size: int = field(default=32, metadata={"help": "texts per scoring batch"})
    device: str = field(
        default="auto",
        metadata={"help": "device for gold scoring, sampling and proxy scoring (auto: CUDA/MPS if present)"},
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self):
        from pcrm.study.gold import GOLD_NAME
        from pcrm.study.pool import DEFAULT_POOL
        from pcrm.preflight import check_at_least, check_numbers, check_positive
        from pcrm.trainers.reward import RM_METHODS

        check_numbers(self)  # types first: a YAML "4" or one string for a list is one line, not a TypeError
        if self.quick:
            self.methods = self.methods or list(QUICK_METHODS)
            self.seeds = self.seeds or [0, 1]
            self.max_pairs = self.max_pairs or 24
            self.test_pairs = self.test_pairs or 8
            defaults = {f.name: f.default for f in fields(self)}
            for name, value in QUICK_SIZES.items():  # unless given on the command line
                if getattr(self, name) == defaults[name]:
                    setattr(self, name, value)
        self.methods = list(dict.fromkeys(self.methods or FULL_METHODS))
        self.arms = list(dict.fromkeys(self.arms or ARMS))
        for arm in self.arms:
            if arm not in ARMS:
                raise PcrmError(f"--arms must be among {', '.join(ARMS)}, got {arm!r}")
        self.seeds = list(dict.fromkeys(self.seeds or [0, 1, 2]))
        for method in self.methods:
            if method not in RM_METHODS:
                raise PcrmError(f"--methods must be among {', '.join(RM_METHODS)}, got {method!r}")
        if self.betas not in ("fixed", "auto"):
            raise PcrmError(f"--betas must be fixed or auto, got {self.betas!r}")
        if self.label_noise is not None and not self.label_noise >= 0:
            raise PcrmError(f"--label-noise must be >= 0, got {self.label_noise}")
        if self.pool_size < 2 or self.prompts < 1:
            raise PcrmError("--pool-size must be >= 2 and --prompts >= 1")
        check_at_least(
            self, 1, "batch_size", "sample_batch_size", "score_batch_size", "max_new_tokens", "max_prompt_tokens"
        )
        check_at_least(self, 2, "max_length", "folds")
        if self.pairs_per_prompt is not None and self.pairs_per_prompt < 1:
            raise PcrmError(f"--pairs-per-prompt must be >= 1, got {self.pairs_per_prompt}")
        if not self.uwo_lambda >= 0:
            raise PcrmError(f"--uwo-lambda must be >= 0, got {self.uwo_lambda}")
        check_positive(self, "learning_rate", "epochs", "temperature")
        if min(self.seeds) < 0:
            raise PcrmError(f"--seeds must be >= 0, got {min(self.seeds)}")
        for name in ("max_pairs", "test_pairs"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise PcrmError(f"--{name.replace('_', '-')} must be >= 2, got {value}")
        if self.pool == "sample":  # sample (or resume) the pool under --output, even where one is shipped
            self.pool = None
        elif self.pool is None and not self.quick and self.gold == GOLD_NAME and DEFAULT_POOL.is_file():
            self.pool = str(DEFAULT_POOL)
        if self.pool is None:  # a sampled pool; a --pool file's own shape is checked when the study starts
            check_sampled_pool(self)


def check_sampled_pool(config) -> None:
    """--pairs-per-prompt and --folds of the on-policy arm against the pool that --pool-size and --prompts sample."""
    most = config.pool_size * (config.pool_size - 1) // 2
    if config.pairs_per_prompt is not None and not config.pairs_per_prompt <= most:
        raise PcrmError(
            f"--pairs-per-prompt must be in 1..{most} for --pool-size {config.pool_size}, got {config.pairs_per_prompt}"
        )
    if "on-policy" in config.arms and config.prompts < config.folds:
        raise PcrmError(f"--prompts ({config.prompts}) must be at least --folds ({config.folds})")
