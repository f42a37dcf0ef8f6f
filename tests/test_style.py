"""Style as .ci/run checks it (configured in pyproject.toml): `ruff check` finds no unused or undefined names, syntax
errors or lines over 120 characters, and `ruff format --check` would change nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_dev_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run a tool of the test extra (the one next to this Python, else on PATH) in the repository; skip without it."""
    tool = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if tool is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return subprocess.run([tool, *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("command", [["check", "--output-format", "concise"], ["format", "--check"]])
def test_ruff_is_clean(command):
    proc = run_dev_tool("ruff", *command)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
