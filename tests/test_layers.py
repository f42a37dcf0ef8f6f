"""The import contract: the layout reads as the pipeline, and a module imports only its own layer or lower ones
(commands -> pipelines/studies -> trainers/evaluation/scoring -> data/constraints/losses/models -> io/errors).
`pcrm/__init__.py` (the lazy public API) is outside the layers."""

import ast
from pathlib import Path

PCRM = Path(__file__).resolve().parents[1] / "pcrm"
LAYERS = [
    {"errors", "io", "console"},
    {"data", "models", "preflight", "tokenization", "losses", "constraints", "plots", "outputs"},
    {"packing", "trainers", "scoring", "rewards", "calibration", "evaluation"},
    {"pipelines", "alignment", "gold", "overoptimization", "study", "report", "report_answer"},
    {"commands"},
    {"cli"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("pcrm."):
                yield node.lineno, name.split(".")[1]


def test_every_module_has_a_layer():
    parts = {p.relative_to(PCRM).parts[0].removesuffix(".py") for p in PCRM.rglob("*.py")} - {"__init__", "__main__"}
    assert parts <= set(LAYER), f"modules without a layer: {sorted(parts - set(LAYER))}"


def test_modules_import_only_their_layer_or_lower():
    violations = []
    for path in PCRM.rglob("*.py"):
        part = path.relative_to(PCRM).parts[0].removesuffix(".py")
        if part in ("__init__", "__main__"):
            continue
        for line, target in _imports(path):
            if LAYER[target] > LAYER[part]:
                violations.append(f"{path.relative_to(PCRM.parent)}:{line}: {part} imports {target}")
    assert not violations, "\n".join(violations)
