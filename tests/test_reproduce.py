"""`pcrm reproduce` end to end on a tiny random model: several methods and seeds, summary and report."""

import json

from pcrm.cli import main


def test_reproduce_trains_evaluates_and_reports(tiny_rm_dir, pairs_file, tmp_path, capsys):
    output = tmp_path / "repro"
    args = [
        "reproduce",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--output",
        str(output),
        "--methods",
        "bt",
        "--methods",
        "length",
        "--seeds",
        "0",
        "--seeds",
        "1",
        "--max-length",
        "64",
        "--no-progress",
    ]
    assert main(args) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert [row["method"] for row in summary["methods"]] == ["bt", "length"]
    assert all(row["seeds"] == 2 for row in summary["methods"])
    html = (output / "evaluation" / "report.html").read_text()
    assert "Reproduction: mean ± std over seeds" in html
    assert "bt" in capsys.readouterr().out
    # A second run reuses every trained model.
    mtime = (output / "models" / "bt-seed0" / "model.safetensors").stat().st_mtime
    assert main(args) == 0
    assert (output / "models" / "bt-seed0" / "model.safetensors").stat().st_mtime == mtime


def test_reproduce_rejects_unknown_method(capsys):
    assert main(["reproduce", "--methods", "dpo"]) == 2
    assert "--methods must be among" in capsys.readouterr().err
