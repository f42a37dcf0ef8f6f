"""The import contract, `lint-imports` as .ci/run runs it ([tool.importlinter] in pyproject.toml): the layout reads as
the pipeline, cli -> commands -> pipelines/study -> trainers/evaluation/... -> data/models/... -> io/errors/console, and
a module imports only its own layer or lower ones, even lazily inside a function; every top-level module has a layer."""

from tests.test_style import run_dev_tool


def test_modules_import_only_their_layer_or_lower():
    proc = run_dev_tool("lint-imports", "--no-cache", "--no-logo")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
