"""`pcrm align`: best-of-N bookkeeping and PPO pieces by hand, then bon, ppo and rloo end to end on tiny models."""

import json
import math

import numpy as np
import pytest
import torch

from pcrm.alignment.bon import bon_rows, kl_best_of_n, select_best
from pcrm.alignment.ppo import explained_variance, gae, policy_loss, value_loss
from pcrm.alignment.rollout import RewardShaper, pack
from pcrm.cli import main
from tests.rm_fixtures import tiny_llama_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer_dir, tiny_rm_dir):
    """A tiny random Llama policy, the tiny BERT RM (proxy) and a second one (judge), and a prompts file."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tests.rm_fixtures import tiny_reward_model

    root = tmp_path_factory.mktemp("align")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer)
    LlamaForCausalLM(config).save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    tiny_reward_model(root / "judge", seed=1)
    rows = [
        {"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "chosen": " yes", "rejected": " no"} for i in range(6)
    ]
    (root / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"root": root, "rm": tiny_rm_dir}


def _args(tiny, *extra):
    root = tiny["root"]
    return [
        "align",
        "--policy",
        str(root / "policy"),
        "--reward-model",
        str(tiny["rm"]),
        "--judge",
        str(root / "judge"),
        "--data",
        str(root / "prompts.jsonl"),
        "--train-split",
        "train",
        "--eval-split",
        "train",
        "--prompts",
        "3",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "2",
        "--bootstrap",
        "50",
        *extra,
    ]


# -- best-of-N bookkeeping -------------------------------------------------------------------------


def test_kl_best_of_n():
    assert kl_best_of_n(1) == 0
    assert kl_best_of_n(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_n(4) == pytest.approx(math.log(4) - 0.75)


def test_selection_is_argmax_among_first_n():
    proxy = np.array([[0.0, 3.0, 1.0, 9.0], [5.0, 1.0, 7.0, 2.0]])
    assert select_best(proxy, 1).tolist() == [0, 0]
    assert select_best(proxy, 2).tolist() == [1, 0]
    assert select_best(proxy, 3).tolist() == [1, 2]
    assert select_best(proxy, 4).tolist() == [3, 2]
    judge = np.array([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    lengths = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    n1, n2, n4 = bon_rows(proxy, judge, lengths, [1, 2, 4], bootstrap=20, seed=0)
    assert (n1["proxy"], n1["judge"], n1["length"], n1["win_rate"]["rate"]) == (2.5, 0.5, 3.0, 0.5)
    assert (n2["proxy"], n2["judge"], n2["length"]) == (4.0, 0.0, 3.5)
    assert n2["win_rate"]["rate"] == 0.25  # prompt 0 loses (0 < 1), prompt 1 ties (same sample)
    assert (n4["proxy"], n4["judge"], n4["win_rate"]["rate"], n4["kl"]) == (8.0, 1.5, 1.0, kl_best_of_n(4))
    assert n4["proxy_gain"] == pytest.approx((8.0 - proxy.mean()) / proxy.std())


# -- PPO pieces ------------------------------------------------------------------------------------


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4, 9.0], [1.0, 1.0, 9.0, 9.0]])  # 9: padding, must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.5
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    d2 = 1.0 - 0.4  # row 0: δ_t = r_t + γ V_{t+1} − V_t, V = 0 after the last token
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    expected0 = [d0 + gamma * lam * a1, a1, a2, 0.0]
    e1 = 2.0 - 1.0
    expected1 = [0.5 + gamma * 1.0 - 1.0 + gamma * lam * e1, e1, 0.0, 0.0]
    torch.testing.assert_close(advantages, torch.tensor([expected0, expected1]))
    torch.testing.assert_close(returns, (advantages + values) * mask)


def test_clipped_losses_by_hand():
    mask = torch.ones(1, 3)
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    advantages = torch.tensor([[1.0, 1.0, -2.0]])
    loss, clipped = policy_loss(logp, old, advantages, mask, clip=0.2)
    # per token max(−Aρ, −A·clip(ρ)): max(−1.5, −1.2) = −1.2; max(−0.5, −0.8) = −0.5; max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert clipped.item() == pytest.approx(1 / 3)
    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # token 0: max((1−0)², (0.2−0)²) = 1; token 1: max((0−1)², (0−1)²) = 1
    assert value_loss(values, old_values, returns, torch.ones(1, 2), clip=0.2).item() == pytest.approx(0.5)
    assert explained_variance(returns, returns, torch.ones(1, 2)) == pytest.approx(1.0)


def test_reward_shaper_running_norm_and_clip():
    shaper = RewardShaper(normalize=True, clip=1.0)
    first = shaper(np.array([0.0, 2.0]))
    assert first.tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    shaper(np.array([10.0]))
    all_seen = np.array([0.0, 2.0, 10.0])
    assert (shaper.mean, shaper.m2 / shaper.count) == pytest.approx((all_seen.mean(), all_seen.var()))
    assert RewardShaper(clip=0.5)(np.array([-3.0, 0.2])).tolist() == [-0.5, 0.2]


def test_pack_pads_queries_left_and_responses_right():
    batch = pack([[5, 6], [7]], [[1], [2, 3, 4]], pad_id=0)
    assert batch["width"] == 2
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0, 0], [0, 7, 2, 3, 4]]
    assert batch["response_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


# -- end to end ------------------------------------------------------------------------------------


def test_bon_end_to_end_reuses_samples(tiny, tmp_path, capsys):
    out = tmp_path / "bon"
    report = tmp_path / "evaluate"
    assert (
        main(
            _args(
                tiny,
                "--method",
                "bon",
                "--n",
                "1",
                "--n",
                "2",
                "--n",
                "4",
                "--output",
                str(out),
                "--report",
                str(report),
            )
        )
        == 0
    )
    assert len(list((report / "sections").glob("*.json"))) == 2  # the best-of-N table and the reward-scale table
    result = json.loads((out / "bon.json").read_text())
    (rm,) = result["reward_models"].values()
    assert set(rm["scale"]) == {
        "mean",
        "std",
        "min",
        "max",
        "spearman_length",
        "spearman_judge",
        "length_capped",
        "spearman_length_uncapped",
    }
    assert [row["n"] for row in rm["rows"]] == [1, 2, 4]
    assert rm["rows"][0]["win_rate"]["rate"] == 0.5 and rm["rows"][1]["kl"] == pytest.approx(kl_best_of_n(2))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 4
    # best-of-N by hand from the written scores
    proxy = np.array([s["scores"][next(iter(result["reward_models"]))] for s in samples]).reshape(3, 4)
    judge = np.array([s["scores"]["judge"] for s in samples]).reshape(3, 4)
    assert rm["rows"][2]["judge"] == pytest.approx(judge[np.arange(3), proxy.argmax(1)].mean())
    capsys.readouterr()
    assert main(_args(tiny, "--method", "bon", "--n", "2", "--output", str(out), "--overwrite")) == 0
    assert "sampled pass" not in capsys.readouterr().out  # the cached samples were reused
    assert (out / "bon.png").stat().st_size > 0


def test_ppo_step_logs_and_resumes(tiny, tmp_path):
    out = tmp_path / "ppo"
    args = _args(
        tiny,
        "--method",
        "ppo",
        "--steps",
        "2",
        "--probe-every",
        "1",
        "--save-steps",
        "1",
        "--reward-norm",
        "--minibatch-size",
        "1",
        "--learning-rate",
        "1e-3",
        "--output",
        str(out),
    )
    assert main(args) == 0
    (run_dir,) = [d for d in out.iterdir() if (d / "log.jsonl").is_file()]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [0, 1, 2]
    for key in (
        "reward_mean",
        "reward_std",
        "reward_max",
        "kl",
        "length",
        "explained_variance",
        "policy_loss",
        "value_loss",
        "clip_fraction",
        "probe_proxy",
        "probe_judge",
        "probe_kl",
        "probe_win_rate",
    ):
        assert key in log[1], key
    assert log[0]["probe_kl"] == pytest.approx(0.0, abs=1e-5)
    assert (run_dir / "policy" / "config.json").exists() and (run_dir / "policy" / "pcrm_config.json").exists()
    assert (out / "reward_scale.png").exists() and (out / "reward_vs_kl.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward_models"][run_dir.name]["steps"] == 2
    # resume: one more step from the checkpoint of step 2
    assert main([*args, "--resume", "--steps", "3"]) == 0
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_trl_methods_end_to_end(tiny, tmp_path, method):
    out = tmp_path / method
    assert (
        main(
            _args(
                tiny,
                "--method",
                method,
                "--steps",
                "1",
                "--generations",
                "2",
                "--reward-clip",
                "1",
                "--output",
                str(out),
            )
        )
        == 0
    )
    (run_dir,) = [d for d in out.iterdir() if (d / "log.jsonl").is_file()]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [0, 1]
    assert {"reward_mean", "reward_max", "kl", "length", "probe_judge"} <= set(log[1])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "bon", "--n", "0"], "--n must be >= 1"),
        (["--method", "ppo", "--kl-coef", "-1"], "--kl-coef and --vf-coef must be >= 0"),
        (["--method", "grpo", "--generations", "1"], "--generations must be >= 2"),
        (["--method", "ppo", "--reward-clip", "0"], "--reward-clip must be > 0"),
        (["--method", "ppo", "--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    ],
)
def test_bad_options_are_one_line_errors(tiny, tmp_path, capsys, extra, message):
    capsys.readouterr()
    assert main(_args(tiny, *extra, "--output", str(tmp_path / "x"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcrm align: error: ") and message in err and len(err.splitlines()) == 1, err


def test_unknown_method_is_one_line_naming_the_option(tiny, capsys):
    capsys.readouterr()
    assert main(_args(tiny, "--method", "dpo")) == 2
    assert (
        capsys.readouterr().err
        == "pcrm align: error: argument --method: invalid choice: 'dpo' (choose from 'bon', 'ppo', 'rloo', 'grpo')\n"
    )


def test_missing_reward_model_and_resume_errors(tiny, tmp_path, capsys):
    capsys.readouterr()
    assert main(["align", "--reward-model", str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(_args(tiny, "--method", "ppo", "--resume", "--output", str(tmp_path / "empty"))) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
