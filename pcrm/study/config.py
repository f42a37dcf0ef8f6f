"""`StudyConfig`: the options of the gold-reward over-optimisation study (`pcrm overoptimization`; the stage
functions of `pcrm.study` take it)."""

from dataclasses import dataclass, field, fields

from pcrm.errors import PcrmError

FULL_METHODS = ["bt", "length", "cosine", "lower-margin", "center"]
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
    """Reward over-optimisation against a gold reward model (Gao, Schulman & Hilton 2022): the gold RM relabels the
    bundled pairs with Bradley–Terry noise, MiniLM proxies are trained on them with each loss over several seeds, and
    best-of-N selection by every proxy from a pool of policy samples is scored by the gold RM (N = 1..pool size, exact
    order-statistics estimator); Gao's d(α − βd), d = √KL, is fitted per proxy. Stages: labels, proxies, pool,
    best-of-N, fit, report; each is cached under --output and skipped when done, so an interrupted study resumes.
    RL (PPO) against the proxies is not part of this command: best-of-N only."""

    output: str = field(default="runs/overoptimization", metadata={"help": "study folder (stages are cached here)"})
    quick: bool = field(
        default=False,
        metadata={
            "help": "tiny random gold RM, proxy backbone and policy built under OUTPUT/tiny-models, "
            "24 train / 8 test pairs, seeds 0 1, methods bt cosine, pool 4×4, max length 64, 8 new tokens, "
            "learning rate 2e-3, unless given (seconds; a smoke test)"
        },
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
    prompts: int = field(default=32, metadata={"help": "held-out prompts of the pool"})
    pool_size: int = field(
        default=32, metadata={"help": "samples per prompt (best-of-N for N = 1..this); the shipped pool has 32"}
    )
    pool: str | None = field(
        default=None,
        metadata={
            "help": "read the pool (JSONL: prompt, sample, response, gold) instead of sampling; default: "
            "pcrm/data/gold-pool/pool.jsonl when it is shipped and --gold is gold-smollm2 (not with --quick)"
        },
    )
    max_new_tokens: int = field(default=48, metadata={"help": "max tokens of a sampled response"})
    max_prompt_tokens: int = field(
        default=128,
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
        from pcrm.trainers.reward import RM_METHODS

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
        from pcrm.preflight import check_at_least, check_numbers, check_positive

        check_numbers(self)
        check_at_least(
            self, 1, "batch_size", "sample_batch_size", "score_batch_size", "max_new_tokens", "max_prompt_tokens"
        )
        check_at_least(self, 2, "max_length")
        check_positive(self, "learning_rate", "epochs", "temperature")
        if min(self.seeds) < 0:
            raise PcrmError(f"--seeds must be >= 0, got {min(self.seeds)}")
        for name in ("max_pairs", "test_pairs"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise PcrmError(f"--{name.replace('_', '-')} must be >= 2, got {value}")
        if self.pool is None and not self.quick and self.gold == GOLD_NAME and DEFAULT_POOL.is_file():
            self.pool = str(DEFAULT_POOL)
