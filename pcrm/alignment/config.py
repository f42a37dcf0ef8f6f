"""`AlignConfig`: the options of `pcrm align` (best-of-N, PPO, RLOO, GRPO against a reward model); the functions of
`pcrm.alignment` take it."""

from dataclasses import dataclass, field

from pcrm.data.options import COLUMNS_HELP, DATA_CONFIG_HELP
from pcrm.errors import require

METHODS = ("bon", "ppo", "rloo", "grpo")


@dataclass
class AlignConfig:
    """Best-of-N, PPO, RLOO or GRPO against one or several trained reward models, judged by an independent one."""

    method: str = field(default="bon", metadata={"help": f"{', '.join(METHODS)}", "choices": METHODS})
    reward_model: list[str] = field(
        default_factory=list, metadata={"help": "proxy reward-model directory (repeat to compare several)"}
    )
    judge: str | None = field(
        default=None, metadata={"help": "independent reward-model directory that judges responses (none: no judge)"}
    )
    policy: str = field(
        default="smollm2", metadata={"help": "starting policy: bundled name, model directory or Hub id"}
    )
    data: str = field(
        default="hh-rlhf-harmless", metadata={"help": "bundled dataset name or file/directory of the prompts"}
    )
    train_split: str = field(default="train", metadata={"help": "split of the RL training prompts"})
    eval_split: str = field(
        default="test", metadata={"help": "held-out split: best-of-N prompts and the RL probe prompts"}
    )
    data_config: str | None = field(default=None, metadata={"help": DATA_CONFIG_HELP})
    columns: str | None = field(default=None, metadata={"help": COLUMNS_HELP})
    prompts: int = field(default=32, metadata={"help": "held-out prompts (best-of-N; the fixed probe set of RL)"})
    n: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "best-of-N: N (repeat; default 1 2 4 8 16)"}
    )
    temperature: float = field(default=1.0, metadata={"help": "best-of-N sampling temperature (RL samples at 1)"})
    max_new_tokens: int = field(default=48, metadata={"help": "max tokens of a response"})
    max_prompt_length: int = field(
        default=128, metadata={"help": "prompts are cut from the left to this many policy tokens"}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "max tokens a reward model reads, the prompt's start cut "
            "(default: the --max-length it was trained with)"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "prompts per RL step; batch size of generation and scoring"})
    steps: int = field(default=20, metadata={"help": "RL optimizer steps"})
    learning_rate: float = field(default=1e-5, metadata={"help": "RL learning rate (constant)"})
    value_learning_rate: float = field(
        default=1e-4, metadata={"help": "PPO learning rate of the value head (zero-initialised)"}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "KL penalty coefficient β (PPO: per token in the reward; RLOO/GRPO: TRL's beta)"},
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO/RLOO/GRPO ratio clip ε"})
    value_clip: float = field(default=0.2, metadata={"help": "PPO value clip (in reward units)"})
    vf_coef: float = field(default=0.1, metadata={"help": "PPO value-loss weight"})
    gamma: float = field(default=1.0, metadata={"help": "PPO discount γ"})
    lam: float = field(default=0.95, metadata={"help": "PPO GAE λ"})
    ppo_epochs: int = field(default=2, metadata={"help": "PPO passes over each rollout batch"})
    minibatch_size: int = field(default=4, metadata={"help": "PPO minibatch size (responses)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient-norm clip"})
    generations: int = field(default=4, metadata={"help": "RLOO/GRPO completions per prompt"})
    reward_norm: bool = field(
        default=False,
        metadata={"help": "standardise rewards by the running mean/std of raw scores (baseline scale control)"},
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "clip rewards (after --reward-norm) to [-C, C] (baseline scale control)"}
    )
    probe_every: int = field(
        default=5,
        metadata={"help": "RL: judge the policy on the probe prompts every K steps (and at the start and end)"},
    )
    save_steps: int = field(default=0, metadata={"help": "RL: checkpoint every N steps, for --resume (0: none)"})
    resume: bool = field(
        default=False,
        metadata={
            "help": "PPO/RLOO/GRPO: resume every reward model's run from its last checkpoint "
            "(best-of-N reuses its cached samples instead)"
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing output directory of pcrm align (any method)"}
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the win-rate CIs"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt order, sampling and bootstrap"})
    report: str | None = field(
        default=None, metadata={"help": "pcrm evaluate directory whose report gets the table and plots"}
    )
    output: str = field(default="runs/align", metadata={"help": "output directory"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (generation, scoring, training)"})

    def __post_init__(self):
        from pcrm.preflight import check_numbers

        check_numbers(self)  # every float option finite
        checks = (
            (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (
                bool(self.reward_model),
                "--reward-model is required (a reward-model directory; repeat to compare several)",
            ),
            (len(set(self.reward_model)) == len(self.reward_model), "--reward-model: the same model is given twice"),
            (bool(self.n) and min(self.n) >= 1, f"--n must be >= 1, got {self.n}"),
            (
                min(
                    self.prompts,
                    self.max_new_tokens,
                    self.max_prompt_length,
                    self.max_length or 1,
                    self.batch_size,
                    self.steps,
                    self.ppo_epochs,
                    self.minibatch_size,
                    self.probe_every,
                    self.bootstrap,
                )
                >= 1,
                "--prompts, --max-new-tokens, --max-prompt-length, --max-length, --batch-size, --steps, --ppo-epochs, "
                "--minibatch-size, --probe-every and --bootstrap must be >= 1",
            ),
            (
                min(
                    self.temperature,
                    self.learning_rate,
                    self.value_learning_rate,
                    self.clip_range,
                    self.value_clip,
                    self.max_grad_norm,
                )
                > 0,
                "--temperature, --learning-rate, --value-learning-rate, --clip-range, --value-clip and "
                "--max-grad-norm must be > 0",
            ),
            (self.kl_coef >= 0 and self.vf_coef >= 0, "--kl-coef and --vf-coef must be >= 0"),
            (0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "--gamma and --lam must be in [0, 1]"),
            (self.generations >= 2, f"--generations must be >= 2 (RLOO/GRPO need a group), got {self.generations}"),
            (self.reward_clip is None or self.reward_clip > 0, f"--reward-clip must be > 0, got {self.reward_clip}"),
            (self.save_steps >= 0, f"--save-steps must be >= 0, got {self.save_steps}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        )
        require(checks)
        self.n = sorted(set(self.n))
