"""RL against reward models (PPO: `pcrm.alignment.ppo`; RLOO/GRPO: TRL, `pcrm.alignment.rl_trl`): one run per
reward model from the same policy, seed and prompts, and the summaries, table rows and plots of those runs."""

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pcrm.io import write_json


def run_rl(config, labels: list[str], output: Path) -> dict:
    """The RL method once per reward model, from the same policy, seed and prompts; returns the per-RM summaries."""
    from pcrm.alignment.rollout import Probe, load_prompts, read_log
    from pcrm.scoring import RewardScorer
    from pcrm.models import default_device, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.policy)
    source = dict(source=config.data, tokenizer=tokenizer, max_tokens=config.max_prompt_length, seed=config.seed)
    source |= dict(config_name=config.data_config, columns=config.columns)
    prompts = load_prompts(split=config.train_split, use=f"{config.method.upper()} training", **source)
    probe_prompts = load_prompts(split=config.eval_split, count=config.prompts, use="the held-out probe", **source)
    device = default_device(config.device)
    reference = load_causal_lm(config.policy).to(device).eval().requires_grad_(False)
    judge = RewardScorer.load(config.judge, config.max_length, device, config.batch_size) if config.judge else None
    summaries = {}
    for label, name in zip(labels, config.reward_model):
        print(f"== {config.method} with reward model {label} ({name})", flush=True)
        run_dir = output / label
        run_dir.mkdir(parents=True, exist_ok=True)
        proxy = RewardScorer.load(name, config.max_length, device, config.batch_size)
        probe = Probe(probe_prompts, tokenizer, reference, proxy, judge, config, run_dir / "probe_start.json")
        started = time.perf_counter()
        if config.method == "ppo":
            from pcrm.alignment.ppo import train_ppo

            train_ppo(config, proxy, prompts, tokenizer, reference, probe, run_dir)
        else:
            from pcrm.alignment.rl_trl import train_trl

            train_trl(config, proxy, prompts, tokenizer, probe, run_dir)
        log = read_log(run_dir / "log.jsonl")
        summaries[label] = {"path": name, "seconds": time.perf_counter() - started, **summarize_log(log)}
        write_json(
            run_dir / "policy" / "pcrm_config.json",
            {
                "kind": "policy",
                "method": config.method,
                "reward_model": name,
                "train_seconds": summaries[label]["seconds"],
                "config": asdict(config),
                "summary": summaries[label],
            },
        )
    return {
        "method": config.method,
        "config": asdict(config),
        "train_prompts": len(prompts),
        "probe_prompts": len(probe_prompts),
        "reward_models": summaries,
    }


def summarize_log(log: list[dict]) -> dict:
    """Start and end of a run: probe proxy reward and its gain, probe KL, judge reward and win rate; training-batch
    reward scale."""
    probes = [row for row in log if "probe_kl" in row]
    steps = [row for row in log if "reward_mean" in row]
    first, last = probes[0], probes[-1]
    summary = {
        "steps": last["step"],
        "probe_proxy_start": first["probe_proxy"],
        "probe_proxy_end": last["probe_proxy"],
        "probe_proxy_gain": last["probe_proxy_gain"],
        "probe_kl": last["probe_kl"],
        "probe_length": last["probe_length"],
    }
    if "probe_judge" in last:
        summary |= {
            "probe_judge_start": first["probe_judge"],
            "probe_judge_end": last["probe_judge"],
            "win_rate": last["probe_win_rate"],
        }
    if steps:
        summary |= {
            "reward_mean_first": steps[0]["reward_mean"],
            "reward_mean_last": steps[-1]["reward_mean"],
            "reward_max_last": steps[-1]["reward_max"],
            "kl_last": steps[-1].get("kl"),
        }
    return summary


def rl_table_rows(results: dict) -> list[dict]:
    rows = []
    for label, s in results["reward_models"].items():
        rate = s.get("win_rate")
        rows.append(
            {
                "reward model": label,
                "steps": str(s["steps"]),
                "probe proxy start → end": f"{s['probe_proxy_start']:.3f} → {s['probe_proxy_end']:.3f}",
                "proxy gain (σ)": f"{s['probe_proxy_gain']:+.2f}",
                "probe KL": f"{s['probe_kl']:.3f}",
                "judge start → end": f"{s['probe_judge_start']:.3f} → {s['probe_judge_end']:.3f}" if rate else "",
                "win vs start [95% CI]": f"{rate['rate']:.2f} [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]"
                if rate
                else "",
                "batch reward first → last": f"{s['reward_mean_first']:.3f} → {s['reward_mean_last']:.3f}"
                if "reward_mean_first" in s
                else "",
                "length": f"{s['probe_length']:.1f}",
                "minutes": f"{s['seconds'] / 60:.1f}",
            }
        )
    return rows


def plot_rl(results: dict, output: Path) -> list[Path]:
    """reward_vs_kl.png (probe proxy gain and judge reward against probe KL), reward_scale.png (raw training
    reward mean ± std and max over steps), length.png (response length over steps)."""
    from pcrm.alignment.rollout import read_log
    from pcrm.plots import integer_ticks, new_figure, save_figure

    logs = {label: read_log(output / label / "log.jsonl") for label in results["reward_models"]}
    has_judge = any("probe_judge" in row for log in logs.values() for row in log)
    fig_kl, axes_kl = new_figure(ncols=2 if has_judge else 1)
    fig_scale, axes_scale = new_figure(ncols=2)
    fig_length, (ax_length,) = new_figure()
    for i, (label, log) in enumerate(logs.items()):
        color = f"C{i % 10}"
        probes = [row for row in log if "probe_kl" in row]
        kl = [row["probe_kl"] for row in probes]
        axes_kl[0].plot(kl, [row["probe_proxy_gain"] for row in probes], "o-", color=color, label=label)
        if has_judge:
            axes_kl[1].plot(kl, [row["probe_judge"] for row in probes], "o-", color=color, label=label)
        steps = [row for row in log if "reward_mean" in row]
        step = np.array([row["step"] for row in steps])
        mean, std = (np.array([row[key] for row in steps]) for key in ("reward_mean", "reward_std"))
        axes_scale[0].plot(step, mean, color=color, label=label)
        axes_scale[0].fill_between(step, mean - std, mean + std, color=color, alpha=0.2)
        axes_scale[1].plot(step, [row["reward_max"] for row in steps], color=color, label=label)
        ax_length.plot(step, [row["length"] for row in steps], color=color, label=label)
    axes_kl[0].set(title="proxy reward vs KL (probe)", xlabel="KL(π ‖ π_ref), nats", ylabel="proxy gain (σ at start)")
    if has_judge:
        axes_kl[1].set(title="judge reward vs KL (probe)", xlabel="KL(π ‖ π_ref), nats", ylabel="judge reward")
    axes_scale[0].set(title="raw proxy reward (batch mean ± std)", xlabel="step", ylabel="reward")
    axes_scale[1].set(title="raw proxy reward (batch max)", xlabel="step", ylabel="reward")
    ax_length.set(title="response length", xlabel="step", ylabel="tokens")
    integer_ticks(*axes_scale, ax_length)
    paths = []
    figures = (
        (fig_kl, axes_kl, "reward_vs_kl.png"),
        (fig_scale, axes_scale, "reward_scale.png"),
        (fig_length, [ax_length], "length.png"),
    )
    for fig, axes, name in figures:
        for ax in axes:
            ax.legend(fontsize=8)
        paths.append(save_figure(fig, output / name))
    return paths
