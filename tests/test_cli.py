"""The command line: --help on every command, one-line errors, and the README's commands."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pcrm.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--" in capsys.readouterr().out


def test_unknown_option_is_rejected(capsys):
    assert main(["constraints", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err == "pcrm constraints: error: unrecognized arguments: --bogus\n"


def test_constraints_command_writes_summary_and_histogram(pairs_file, tmp_path, capsys):
    output = tmp_path / "c"
    assert (
        main(
            ["constraints", "--data", str(pairs_file), "--method", "length", "--unit", "words", "--output", str(output)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "8 pairs" in out and "pairs/s" in out and "similarity" in out
    assert (output / "summary.json").exists()
    assert (output / "histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_constraints_bad_beta_is_one_line(pairs_file, tmp_path, capsys):
    assert main(["constraints", "--data", str(pairs_file), "--beta2", "0", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--beta2" in err


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [
        line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")
    ]


@pytest.mark.parametrize(
    "argv", [["train-rm", "--bogus", "1"], ["train-rm", "--method", "ppo"], ["evaluate", "--bootstrap", "many"]]
)
def test_parse_command_rejects_stale_options_and_bad_values(argv):
    from pcrm.cli import parse_command
    from pcrm.errors import PcrmError

    with pytest.raises(PcrmError):
        parse_command(argv)


def test_readme_opens_with_the_two_commands():
    commands = readme_commands()
    assert commands[1] == "scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert (REPO / ".ci" / "run").read_text().strip().endswith(commands[1])


@pytest.mark.parametrize("command", [c for c in readme_commands()[2:] if ".venv/bin/pcrm" in c])
def test_readme_commands_parse(command, monkeypatch):
    """Every pcrm command the README shows builds its command's Config (a stale option or bad value: PcrmError)."""
    from pcrm.cli import COMMANDS, parse_command

    monkeypatch.chdir(REPO)  # README paths (e.g. examples/*.yaml) are relative to the repository

    args = shlex.split(command.split(".venv/bin/pcrm", 1)[1], comments=True)
    if "&&" in args or "|" in args:
        args = args[: min(args.index(t) for t in ("&&", "|") if t in args)]
    name, module, config = parse_command(args)
    assert module.__name__ == COMMANDS[name][0] and isinstance(config, module.Config)


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("PCRM_SLOW")), reason="end to end on real models: CI or PCRM_SLOW=1"
)
def test_readme_main_command_runs(tmp_path):
    command = readme_commands()[0].split("&&", 1)[1].strip()
    args = shlex.split(command)
    args[0] = str(REPO / args[0])
    proc = subprocess.run(
        [*args, "--no-progress", "--output", str(tmp_path / "main")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = (proc.stdout + proc.stderr).splitlines()
    print("\n".join(console))  # shown with -s
    assert len(console) <= 40, "\n".join(console)  # issue 20: a run a person can read
    assert any(line.startswith("data: ") for line in console), "no data summary"
    assert any(line.startswith("method ") and "accuracy" in line for line in console), "no final table"
    assert any(line.startswith("finished in ") for line in console), "no closing summary"
