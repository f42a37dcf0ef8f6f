"""`--no-progress` on every command (issue 20): the real command, on tiny models, prints no progress bar at all,
neither pcrm's nor its libraries', with `--verbose` too (which lets the libraries' bars through). tqdm writes to
stderr, so the console is captured at the file descriptors."""

import pytest

from pcrm.cli import COMMANDS, main
from tests.rm_fixtures import slow, slow_marks, write_jsonl
from tests.test_align import _args as align_args
from tests.test_align import tiny  # noqa: F401  (the fixture: tiny policy, proxy and judge, prompts)
from tests.test_dpo import FAST as DPO_FAST

# What a tqdm-style bar leaves on a console: its redraws, rates, bar and percentage, and the labels of the bars
# of transformers ("Loading weights"), datasets ("Map:"), sentence-transformers ("Batches") and TRL.
BAR_MARKS = ("\r", "it/s", "s/it", "|█", "%|", "Loading weights", "Map:", "Batches", "Computing reference log probs")
# --verbose lets the libraries' bars through, so it is the stricter console; the plain one runs in CI (slow flag)
PLAIN = pytest.param(["--no-progress"], id="plain", marks=slow_marks("the same commands again without --verbose"))
CONSOLES = pytest.mark.parametrize("flags", [PLAIN, ["--no-progress", "--verbose"]], ids=["plain", "verbose"])
ALIGN_CASES = [f"align-{method}" for method in ("bon", "ppo", "rloo", "grpo")]
FAST_CASES = [c for c in COMMANDS if c not in ("align", "overoptimization")] + ALIGN_CASES


def _command_lines(case: str, tiny, tiny_rm_dir, pairs_file, out) -> list[list[str]]:
    """The command lines of one case (all but overoptimization), run in order; every one is checked (`report` needs
    an evaluation first)."""
    policy, judge = str(tiny["root"] / "policy"), str(tiny["root"] / "judge")
    model, data = str(tiny_rm_dir), str(pairs_file)
    evaluate = ["evaluate", "--model", model, "--data", data, "--output", str(out / "ev"), "--bootstrap", "20"]
    if case in ALIGN_CASES:
        method = case.removeprefix("align-")
        extra = ["--n", "1", "--n", "2"] if method == "bon" else ["--steps", "1", "--generations", "2"]
        return [align_args(tiny, "--method", method, *extra, "--output", str(out / method))]
    return {
        "constraints": [["constraints", "--data", data, "--method", "cosine", "--output", str(out / "c")]],
        "train-rm": [
            ["train-rm", "--model", model, "--data", data, "--output", str(out / "rm")]
            + ["--method", "length", "--max-steps", "2", "--max-length", "32"]
        ],
        "evaluate": [evaluate],
        "report": [evaluate, ["report", "--input", str(out / "ev")]],
        "train-dpo": [
            ["train-dpo", "--policy", policy, "--data", data, "--method", "length", "--max-steps", "1"]
            + [*DPO_FAST, "--output", str(out / "dpo")]
        ],
        "evaluate-policy": [
            ["evaluate-policy", "--policy", policy, "--reference", policy, "--judge", judge, "--data", data]
            + ["--split", "train", "--pairs", "4", "--prompts", "2", "--max-length", "64", "--max-new-tokens", "4"]
            + ["--bootstrap", "20", "--output", str(out / "pe")]
        ],
        "reproduce": [
            ["reproduce", "--quick", "--methods", "bt", "--model", model, "--data", data, "--max-length", "32"]
            + ["--output", str(out / "repro")]
        ],
    }[case]


def _assert_no_bar(command_lines, flags, capfd) -> None:
    """Each command succeeds and its console (stdout and stderr) holds no mark of a progress bar."""
    capfd.readouterr()
    for argv in command_lines:
        argv = [*argv, *flags] if argv[0] != "report" else argv  # report has no bar, hence no --progress option
        code = main(argv)
        out, err = capfd.readouterr()
        assert code == 0, (argv, err[-2000:])
        shown = [mark for mark in BAR_MARKS if mark in out + err]
        assert not shown, (argv[0], shown, (out + err)[-2000:])


def test_the_cases_are_every_command():
    cases = {"align" if c in ALIGN_CASES else c for c in FAST_CASES}
    assert cases | {"overoptimization"} == set(COMMANDS)


@CONSOLES
@pytest.mark.parametrize("case", FAST_CASES)
def test_no_progress_prints_no_progress_bar(case, flags, tiny, tiny_rm_dir, pairs_file, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PCRM_CACHE", str(tmp_path / "cache"))  # nothing cached: every bar's work is done
    _assert_no_bar(_command_lines(case, tiny, tiny_rm_dir, pairs_file, tmp_path), flags, capfd)


@slow("the over-optimisation study trains and samples from several tiny models (about 30 s)")
@CONSOLES
def test_no_progress_in_the_overoptimization_study(flags, tmp_path, capfd):
    _assert_no_bar([["overoptimization", "--quick", "--output", str(tmp_path / "study")]], flags, capfd)


@slow("validates 50,000 rows (about 9 s)")
def test_no_progress_holds_for_large_data(tmp_path, capfd):
    """From 50,000 rows the loader shows datasets' validation bars, unless --no-progress."""
    rows = [{"prompt": f"q{i}", "chosen": "a" * (i % 7 + 1), "rejected": "b" * (i % 5 + 1)} for i in range(50_000)]
    data = write_jsonl(tmp_path / "large.jsonl", rows)
    argv = ["constraints", "--data", str(data), "--method", "length", "--unit", "chars"]
    argv += ["--output", str(tmp_path / "c")]
    _assert_no_bar([argv], ["--no-progress"], capfd)
