"""A run a person can read (issue 20): numbers that do not mislead (KL ≥ 0, warm-up, ties), quiet consoles, help."""

import pytest
import torch

from pcrm.alignment.rollout import exact_kl, forward, pack


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def test_probe_kl_is_exact_and_never_negative():
    policy, reference = _tiny_llama(0), _tiny_llama(1)
    generator = torch.Generator().manual_seed(0)
    queries = [torch.randint(1, 50, (n,), generator=generator).tolist() for n in (3, 5, 4, 2)]
    responses = [torch.randint(1, 50, (n,), generator=generator).tolist() for n in (4, 1, 6, 3)]
    batch = pack(queries, responses, pad_id=0)
    with torch.no_grad():
        kl = exact_kl(policy, reference, batch)
        sampled = ((forward(policy, batch)[0] - forward(reference, batch)[0]) * batch["response_mask"]).sum(1)
        same = exact_kl(policy, policy, batch)
    assert kl.shape == (4,) and (kl > 0).all()
    assert torch.allclose(same, torch.zeros(4), atol=1e-5)
    assert (sampled < 0).any()  # what the probe used to report: Σ log π/π_ref over the sampled tokens goes negative
    # By hand for row 1 (one response token): KL of the two next-token distributions after the query.
    row = {k: v if k == "width" else v[1:2] for k, v in batch.items()}
    mask = row["attention_mask"]
    with torch.no_grad():
        p, q = (
            torch.log_softmax(
                m(
                    input_ids=row["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
                ).logits[0, row["width"] - 1],
                -1,
            )
            for m in (policy, reference)
        )
    assert abs(kl[1].item() - torch.sum(p.exp() * (p - q)).item()) < 1e-5


def test_warmup_never_leaves_the_first_step_at_learning_rate_zero():
    from transformers import get_scheduler

    from pcrm.trainers.schedule import first_step_warmup

    for kind, steps, warmup in (("linear", 2, 1), ("cosine", 20, 4), ("constant_with_warmup", 5, 2)):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
        assert optimizer.param_groups[0]["lr"] == 0.0  # transformers' warm-up: step 0 learns nothing
        first_step_warmup(scheduler, warmup)
        rates = []
        for _ in range(steps):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert min(rates) > 0, (kind, rates)
        assert (
            rates[: warmup + 1] == sorted(rates[: warmup + 1]) and rates[warmup] == 1.0
        )  # still a warm-up to the peak
        assert rates[0] == 1 / (warmup + 1)


def test_a_short_run_learns_from_its_first_step_and_says_it_is_short(tiny_rm_dir, pairs_file, tmp_path, caplog):
    import json

    from pcrm.cli import main

    output = tmp_path / "rm"
    args = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--output",
        str(output),
        "--max-steps",
        "2",
        "--warmup-ratio",
        "0.5",
        "--max-length",
        "32",
        "--no-progress",
    ]
    with caplog.at_level("WARNING", logger="pcrm"):
        assert main(args) == 0
    rates = [
        row["learning_rate"]
        for row in map(json.loads, (output / "train_log.jsonl").read_text().splitlines())
        if "learning_rate" in row
    ]
    assert rates and min(rates) > 0
    assert "only 2 optimizer step(s): too few to learn much" in caplog.text


def test_length_correlation_says_when_lengths_are_capped():
    import numpy as np

    from pcrm.alignment.bon import scale_rows, scale_stats

    lengths = np.array([[32, 32, 5, 9], [32, 32, 12, 3]], dtype=float)  # half the samples cut at --max-new-tokens 32
    scores = np.array([[1.0, 2.0, 0.5, 0.7], [3.0, 0.0, 0.9, 0.1]])
    stats = scale_stats(scores, None, lengths, cap=32)
    assert stats["length_capped"] == 0.5
    assert stats["spearman_length_uncapped"] == pytest.approx(1.0)  # below the cap, score rises with length
    (row,) = scale_rows({"reward_models": {"rm": {"scale": stats}}})
    assert row["responses at the token cap"] == "50%" and row["ρ vs length, below the cap"] == "1.000"
    assert "ρ vs length (ties: average ranks)" in row
    (row,) = scale_rows({"reward_models": {"rm": {"scale": scale_stats(scores, None, lengths, cap=64)}}})
    assert "responses at the token cap" not in row  # nothing capped: no such column


@pytest.mark.parametrize("command", __import__("pcrm.cli", fromlist=["COMMANDS"]).COMMANDS)
def test_every_boolean_option_says_its_default_and_what_it_does(command):
    """`--X` sets X, `--no-X` (of an option on by default) clears it and its help says so; the default is said once."""
    import argparse

    from pcrm.cli import command_parser

    parser = command_parser(command)
    formatter = parser._get_formatter()
    switches = [
        a
        for a in parser._actions
        if a.option_strings and isinstance(a.default, bool) and not isinstance(a, argparse._StoreFalseAction)
    ]
    assert switches or command == "report"
    for action in switches:
        name = action.option_strings[-1]  # --dashed-name
        shown = " ".join(formatter._expand_help(action).split())
        assert shown.count("default") == 1, shown
        if "(default: " in shown:
            assert shown.endswith(f"(default: {action.default})"), shown
        assert getattr(parser.parse_args([]), action.dest) is action.default
        assert getattr(parser.parse_args([name]), action.dest) is True
        off = [a for a in parser._actions if isinstance(a, argparse._StoreFalseAction) and a.dest == action.dest]
        assert bool(off) == action.default  # an option on by default has its --no- form, one off by default has not
        for negative in off:
            assert negative.option_strings == [f"--no_{action.dest}", f"--no-{name[2:]}"]
            assert getattr(parser.parse_args([f"--no-{name[2:]}"]), action.dest) is False
            help_text = formatter._expand_help(negative)
            assert help_text.startswith(f"turn {name} off (") and help_text.endswith("on by default)")
            assert "default: False" not in help_text and action.help in help_text


def test_no_progress_prints_no_progress_bar(tiny_rm_dir, pairs_file, tmp_path, capfd):
    """Captured at the file descriptors (tqdm writes to stderr): no bar of pcrm's or its libraries'."""
    from pcrm.cli import main

    capfd.readouterr()
    commands = [
        ["constraints", "--data", str(pairs_file), "--method", "length", "--output", str(tmp_path / "c")],
        [
            "train-rm",
            "--model",
            str(tiny_rm_dir),
            "--data",
            str(pairs_file),
            "--output",
            str(tmp_path / "rm"),
            "--max-steps",
            "12",
            "--max-length",
            "32",
        ],
        [
            "evaluate",
            "--model",
            str(tmp_path / "rm"),
            "--data",
            str(pairs_file),
            "--output",
            str(tmp_path / "ev"),
            "--bootstrap",
            "20",
        ],
    ]
    for argv in commands:
        assert main([*argv, "--no-progress"]) == 0, argv
        out, err = capfd.readouterr()
        for bar in ("it/s", "s/it", "%|", "\r"):
            assert bar not in out + err, (argv[0], bar, err[-500:])
    assert main(["report", "--input", str(tmp_path / "ev")]) == 0  # no --progress option: nothing to show
    out, err = capfd.readouterr()
    assert "%|" not in out + err and "\r" not in out + err


def test_the_console_shows_each_warning_once_and_counts_the_rest():
    import io
    import logging
    import warnings

    from pcrm.console import quiet_libraries, report_repeats

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    shown = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
            import pcrm.console

            pcrm.console._show = warnings.showwarning  # where the shown warnings go (the console in a real run)
            quiet_libraries()
            for _ in range(3):
                logging.getLogger("pcrm").warning("dropped 2 pair(s) with an empty response")
                warnings.warn("gradient_checkpointing is deprecated", FutureWarning)
            logging.getLogger("transformers.tokenization_utils_base").warning(
                "Token indices sequence length is longer than the specified maximum sequence length (929 > 512)"
            )
            lines = report_repeats(file=io.StringIO())
    finally:
        logging.getLogger().removeHandler(handler)
        pcrm.console._show = warnings.showwarning
        pcrm.console.release_console()
    assert stream.getvalue().count("dropped 2 pair(s)") == 1 and shown == ["gradient_checkpointing is deprecated"]
    assert sorted(lines) == [
        "pcrm: 3× in all (FutureWarning): gradient_checkpointing is deprecated",
        "pcrm: 3× in all (warning): dropped 2 pair(s) with an empty response",
    ]
    assert "Token indices" not in stream.getvalue()
    assert report_repeats(file=io.StringIO()) == []
    assert not pcrm.console._FILTERED  # released: the caller's logging as it was


def test_constraints_writes_one_row_per_pair(pairs_file, tmp_path):
    import csv
    import json

    from pcrm.cli import main

    argv = [
        "constraints",
        "--data",
        str(pairs_file),
        "--method",
        "length",
        "--output",
        str(tmp_path / "c"),
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "c" / "pairs.csv").open()))
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert [int(r["id"]) for r in rows] == list(range(summary["pairs"])) and summary["pairs"] > 0
    assert list(rows[0]) == [
        "id",
        "similarity",
        "delta",
        "chosen_chars",
        "rejected_chars",
        "chosen_words",
        "rejected_words",
    ]
    assert all(0 < float(r["similarity"]) <= 1 and float(r["delta"]) > 0 and int(r["chosen_words"]) > 0 for r in rows)
