"""`pcrm report`: every section from a real evaluation, embedded PNGs, the extension point, bad input."""

import base64
import html
import json
import re

import pytest

from pcrm.cli import main
from pcrm.errors import PcrmError
from pcrm.report import Section, add_section, read_train_log, render_html, render_markdown
from tests.rm_fixtures import PAIRS, RANKED, tiny_reward_model, write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "Answer: best model per metric",
    "Metrics",
    "Margin distribution",
    "Margin vs similarity",
    "Score vs length",
    "Reliability",
    "Training curves",
    "DPO win rates",
]


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """Two tiny models (one with a training log and a pcrm_config.json) evaluated on pairs and ranked data."""
    root = tmp_path_factory.mktemp("report")
    bt = tiny_reward_model(root / "bt", seed=0)
    pcrm = tiny_reward_model(root / "pcrm", seed=1)
    (pcrm / "pcrm_config.json").write_text(
        json.dumps({"method": "cosine", "beta1": 0.5, "beta2": 0.001, "beta3": -0.2})
    )
    log = [
        {"step": s, "loss": 0.7 - 0.05 * s, "accuracy": 0.5 + 0.04 * s, "margin_mean": 0.1 * s, "margin_std": 0.05 * s}
        for s in range(1, 6)
    ]
    (pcrm / "train_log.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in log) + '{"step": 6, "lo'
    )  # last line mid-write
    pairs, ranked = write_jsonl(root / "pairs.jsonl", PAIRS), write_jsonl(root / "ranked.jsonl", RANKED)
    output = root / "eval"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PCRM_CACHE", str(root / "cache"))
        argv = ["evaluate", "--model", str(bt), "--model", str(pcrm), "--data", str(pairs), "--data", str(ranked)]
        assert main([*argv, "--output", str(output), "--bootstrap", "50"]) == 0  # both priors: length and cosine
    return output


def test_report_has_every_section_and_valid_images(evaluation, tmp_path, capsys):
    from pcrm.plots import new_figure, save_figure

    fig, (ax,) = new_figure()
    ax.plot([0, 1], [0.5, 0.6])
    curve = save_figure(fig, tmp_path / "dpo-curve.png")
    add_section(
        evaluation,
        "DPO win rates",
        rows=[{"policy": "dpo", "win rate": 0.61}, {"policy": "pcrm | dpo", "win rate": 0.66}],
        images=[curve],
        text="Judge win rates.",
    )

    out = tmp_path / "report"
    assert main(["report", "--input", str(evaluation), "--output", str(out)]) == 0
    page = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == SECTIONS
    assert re.findall(r"^## (.*)$", markdown, flags=re.M) == SECTIONS

    sources = re.findall(r'<img src="([^"]*)"', page)
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    # margins, similarity, length, reliability per dataset (2), training, the added section
    assert len(sources) == len(linked) == 4 * 2 + 2
    for source, name in zip(sources, linked):
        assert source.startswith("data:image/png;base64,")
        embedded = base64.b64decode(source.split(",", 1)[1])
        assert embedded.startswith(PNG) and embedded == (out / name).read_bytes()
    assert "similarity-pairs.png" in linked and "training.png" in linked and "DPO_win_rates-0.png" in linked

    for label in (
        "bt · pairs",
        "pcrm · ranked",
        "accuracy",
        "Spearman ρ per prompt",
        "margin > δ* (cosine)",
        "pcrm_config.json",
        "ECE",
    ):
        assert (
            html.escape(label) in page and html.escape(label, quote=False) in markdown
        )  # Markdown escaped as the HTML
    assert "pcrm \\| dpo" in markdown and "pcrm | dpo" in page
    assert "wrote" in capsys.readouterr().out


def test_report_defaults_to_the_input_directory(evaluation):
    result = main(["report", "--input", str(evaluation / "metrics.json")])
    assert result == 0 and (evaluation / "report.html").is_file() and (evaluation / "margins-ranked.png").is_file()


def test_read_train_log_skips_partial_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n[1, 2]\n\n{"step": 2, "lo')
    assert read_train_log(log) == [{"step": 1, "loss": 0.5}]


def test_render_escapes_and_aligns_columns(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    sections = [Section("A & B", "x < y", rows=[{"k": "v|w", "n": 0.123456}, {"k": "z"}], images=["a.png"])]
    page = render_html("T", sections, tmp_path)
    assert "<h2>A &amp; B</h2>" in page and "<p>x &lt; y</p>" in page and "<td>0.1235</td>" in page
    assert "<tr><td>z</td><td></td></tr>" in page
    assert (
        render_markdown("T", sections)
        == "# T\n\n## A &amp; B\n\nx &lt; y\n\n| k | n |\n|---|---|\n| v\\|w | 0.1235 |\n| z |  |\n\n![a.png](a.png)\n"
    )


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_metrics(tmp_path, capsys):
    line = _error_line(capsys, ["report", "--input", str(tmp_path)])
    assert str(tmp_path / "metrics.json") in line and "pcrm evaluate" in line


def test_missing_arrays_and_bad_section(evaluation, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "metrics.json").write_text((evaluation / "metrics.json").read_text())
    line = _error_line(capsys, ["report", "--input", str(copy)])
    assert "scores/bt--pairs.npz" in line and "not found" in line

    with pytest.raises(
        PcrmError, match="missing.png.*Broken"
    ):  # an image is checked (and copied) when its section is added
        add_section(copy, "Broken", images=[tmp_path / "missing.png"])
    (copy / "sections").mkdir()
    section = {"title": "Broken", "text": "", "rows": [], "images": ["sections/missing.png"]}
    (copy / "sections" / "Broken.json").write_text(json.dumps(section))
    (copy / "scores").symlink_to(evaluation / "scores")
    line = _error_line(capsys, ["report", "--input", str(copy), "--output", str(tmp_path / "out")])
    assert str(copy / "sections" / "missing.png") in line and "Broken" in line
