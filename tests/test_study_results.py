"""The study's figures as the README quotes them are the shipped results' own, and the shipped results follow from
the shipped pool and per-sample proxy scores (README: "every figure is recomputable from the output folder")."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pcrm.study.analysis_report import fixed_beta_rows, headline_rows, pair_rows
from pcrm.study.estimator import best_of_n_gain
from pcrm.study.policy import tilted_gain
from pcrm.study.pool import read_pool

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "study-256"
ARMS = {"On-policy arm": RESULTS / "onpolicy", "Off-policy arm": RESULTS}
POOL = REPO / "pcrm" / "data" / "gold-pool" / "pool.jsonl"


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\[", "[").replace("\\]", "]") for c in line.strip().strip("|").split("|")]


def readme_study_tables() -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, header, rows) of every table in the README's study section, under the nearest heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Does PCRM help?", 1)[1].split("\n## ", 1)[0]
    tables, heading, lines = [], "", section.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|(-+\|)+$", lines[i + 1]):
            body = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                body.append(_cells(row))
            tables.append((heading, _cells(line), body))
    return tables


def _analysis(folder: Path) -> dict:
    return json.loads((folder / "analysis.json").read_text(encoding="utf-8"))


def test_readme_study_tables_are_the_shipped_results():
    tables = readme_study_tables()
    assert {next(a for a in ARMS if h.startswith(a)) for h, _, _ in tables} == set(ARMS)  # both arms quoted
    for heading, header, body in tables:
        analysis = _analysis(ARMS[next(a for a in ARMS if heading.startswith(a))])
        rows = headline_rows(analysis) + fixed_beta_rows(analysis) + pair_rows(analysis)
        for cells in body:
            match = {h: c for h, c in zip(header, cells)}
            candidates = [
                r for r in rows if all(r.get(h, c) == c for h, c in match.items() if h in ("method", "rewards"))
            ]
            for h, c in match.items():
                quoted = [r[h] for r in candidates if h in r]
                assert quoted and c in quoted, f"README {heading!r}, {cells[0]}, {h!r}: {c!r} not in {quoted}"


def _shipped_scores(folder: Path) -> dict[str, list[dict]]:
    scores: dict[str, list[dict]] = {}
    for path in sorted((folder / "scores").glob("*-seed*.npz")):
        scores.setdefault(path.stem.rsplit("-seed", 1)[0], []).append(dict(np.load(path)))
    return scores


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_shipped_analysis_follows_from_the_shipped_scores(arm):
    """Per method: best-of-N and π_β (raw, and standardised by hand per reward model: each fold's proxy on its own
    prompts) recomputed from the pool and the per-sample scores equal the shipped analysis.json."""
    _, _, gold = read_pool(POOL)
    analysis = _analysis(ARMS[arm])
    ns, betas = analysis["ns"], analysis["betas"]
    for method, seeds in _shipped_scores(ARMS[arm]).items():
        curves = analysis["methods"][method]["curves"]
        pool = np.stack([s["pool"] for s in seeds])
        folds = seeds[0].get("fold", np.zeros(gold.shape[0], dtype=int))
        z = np.empty_like(pool)
        for k, seed in enumerate(pool):
            for f in np.unique(folds):
                rows = folds == f
                z[k, rows] = (seed[rows] - seed[rows].mean()) / seed[rows].std()
        bon = np.mean([best_of_n_gain(r, gold, ns).mean(axis=0) for r in pool], axis=0)
        raw = np.mean([tilted_gain(r, gold, betas).mean(axis=0) for r in pool], axis=0)
        std = np.mean([tilted_gain(r, gold, betas).mean(axis=0) for r in z], axis=0)
        np.testing.assert_allclose(curves["best-of-N"]["gain"], bon, atol=1e-9, err_msg=method)
        np.testing.assert_allclose(curves["tilted raw"]["gain"], raw, atol=1e-9, err_msg=method)
        np.testing.assert_allclose(curves["tilted standardised"]["gain"], std, atol=1e-9, err_msg=method)
