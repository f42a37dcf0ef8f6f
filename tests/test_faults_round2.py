"""Hostile input, round two (issue 18): no pickle from a user's folder, no link followed, only pcrm's own folders
replaced or resumed, every input checked before the work, no held-out metrics silently on training data, and every
user error one line (exit 2, no traceback, nothing written, previous outputs byte for byte)."""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pcrm.cli import main
from pcrm.outputs import FINAL, MARKER, OutputFolder
from tests.test_faults import REPO, _copy_good, assert_whole_or_marked, good_output, models, one_line_error, tree_hashes  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_rm_dir):
    """Files a careless or hostile user may hand pcrm: YAML files of the wrong types, a link loop, an empty data file,
    an RM with 32 positions, an RM whose tokenizer cannot pad, a folder that is not pcrm's, other commands' outputs."""
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer

    root = tmp_path_factory.mktemp("hostile")
    yaml = {
        "lr-true": "learning_rate: true\n",
        "len-list": "max_length: [1, 2]\n",
        "len-float": "max_length: 12.7\n",
        "model-null": "model: null\n",
        "model-string": "model: /x\n",
    }
    for name, text in yaml.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "latin1.yaml").write_bytes("title: café\n".encode("latin-1"))
    (root / "loop.jsonl").symlink_to(root / "loop.jsonl")
    (root / "empty.jsonl").write_text("")
    tokenizer = ByT5Tokenizer()
    short = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(short).save_pretrained(root / "short")
    tokenizer.save_pretrained(root / "short")
    shutil.copytree(tiny_rm_dir, root / "nopad")
    config_file = root / "nopad" / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config.update(pad_token=None, eos_token=None, unk_token=None)
    config_file.write_text(json.dumps(tokenizer_config))
    (root / "mydocs").mkdir()
    (root / "mydocs" / "thesis.txt").write_text("years of work")
    for command in ("train-dpo", "evaluate"):  # finished outputs of other commands, through the real mechanism
        with OutputFolder(root / command, command) as folder:
            (folder.work / "model.safetensors").write_bytes(b"not yours to replace")
            folder.commit({"kind": command})
    return root


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, good_output):
    reference, pairs, _ = good_output
    output = tmp_path_factory.mktemp("eval") / "eval"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PCRM_CACHE", str(output.parent / "cache"))
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(reference),
                    "--data",
                    str(pairs),
                    "--split",
                    "train",
                    "--bootstrap",
                    "0",
                    "--priors",
                    "length",
                    "--output",
                    str(output),
                    "--no-progress",
                ]
            )
            == 0
        )
    return output


# -- 1. one line, exit 2, nothing written: options, YAML types, models, devices, destinations ---------------------

CASES = [
    # (issue-18 case, command, extra options, expected message); {rm} {pairs} {root} {h} are filled in
    (
        "random δ* < 0",
        "train-rm",
        ["--method", "random", "--random-low", "-1", "--random-high", "-0.5"],
        "--random-low must be > 0",
    ),
    (
        "YAML learning_rate: true",
        "train-rm",
        ["--config", "{h}/lr-true.yaml"],
        "learning_rate must be a number, got True",
    ),
    ("YAML max_length: [1, 2]", "train-rm", ["--config", "{h}/len-list.yaml"], "max_length must be a whole number"),
    (
        "YAML max_length: 12.7",
        "train-rm",
        ["--config", "{h}/len-float.yaml"],
        "max_length must be a whole number, got 12.7",
    ),
    ("YAML model: null", "train-rm", ["--config", "{h}/model-null.yaml"], "model must be a string, got null"),
    ("YAML string for a list", "evaluate", ["--config", "{h}/model-string.yaml"], "model must be a list"),
    ("Latin-1 YAML names the file", "report", ["--config", "{h}/latin1.yaml"], "latin1.yaml: not UTF-8"),
    ("symlink loop", "train-rm", ["--data", "{h}/loop.jsonl"], "symbolic link loop"),
    ("empty --eval-data, before training", "train-rm", ["--eval-data", "{h}/empty.jsonl"], "the dataset is empty"),
    ("--eval-split on one file", "train-rm", ["--eval-split", "validation"], "has no splits"),
    ("tokenizer without pad/eos/sep", "train-rm", ["--model", "{h}/nopad"], "no pad, eos or sep token"),
    ("evaluate --max-length 1", "evaluate", ["--model", "{rm}", "--max-length", "1"], "--max-length must be >= 2"),
    ("evaluate --device cuda without a GPU", "evaluate", ["--model", "{rm}", "--device", "cuda"], "no such device"),
    ("evaluate --device nonsense", "evaluate", ["--model", "{rm}", "--device", "gpu0"], "not a device"),
    (
        "evaluate: positions < --max-length",
        "evaluate",
        ["--model", "{h}/short", "--max-length", "64"],
        "above the limit",
    ),
    ("evaluate: second model truncated", "evaluate", ["--model", "{rm}", "--model", "{root}/truncated"], "truncated"),
    ("evaluate: tokenizer cannot pad", "evaluate", ["--model", "{h}/nopad"], "no pad, eos or sep token"),
    (
        "--suggest-from: positions < --max-length",
        "constraints",
        ["--method", "length", "--unit", "chars", "--suggest-from", "{h}/short", "--max-length", "64"],
        "above the limit",
    ),
    (
        "train-dpo --batch-size 0",
        "train-dpo",
        ["--policy", "{root}/policy", "--batch-size", "0"],
        "--batch-size must be >= 1",
    ),
    ("train-dpo --policy <a reward model>", "train-dpo", ["--policy", "{rm}"], "not a causal language model"),
    (
        "evaluate-policy --judge <a causal LM>",
        "evaluate-policy",
        ["--policy", "{root}/policy", "--judge", "{root}/policy"],
        "not a reward model",
    ),
    (
        "evaluate-policy --output <a file>",
        "evaluate-policy",
        ["--policy", "{root}/policy", "--output", "{root}/a-file"],
        "is not a directory",
    ),
    (
        "align --policy <a reward model>",
        "align",
        ["--reward-model", "{rm}", "--policy", "{rm}"],
        "not a causal language model",
    ),
    (
        "align --report <not an evaluation>",
        "align",
        ["--reward-model", "{rm}", "--report", "{h}/mydocs"],
        "not a pcrm evaluate folder",
    ),
    (
        "overoptimization --score-batch-size 0",
        "overoptimization",
        ["--score-batch-size", "0"],
        "--score-batch-size must be >= 1",
    ),
    ("overoptimization --temperature -1", "overoptimization", ["--temperature", "-1"], "--temperature must be > 0"),
    ("reproduce --learning-rate 0", "reproduce", ["--learning-rate", "0"], "--learning-rate must be > 0"),
    # output folders: another command's or no command's output is neither replaced nor resumed
    (
        "--overwrite of a user's folder",
        "train-rm",
        ["--overwrite", "--output", "{h}/mydocs"],
        "written by no pcrm command",
    ),
    (
        "--resume of a train-dpo output",
        "train-rm",
        ["--resume", "--output", "{h}/train-dpo"],
        "written by pcrm train-dpo",
    ),
    (
        "evaluate into a train-dpo output",
        "evaluate",
        ["--model", "{rm}", "--overwrite", "--output", "{h}/train-dpo"],
        "written by pcrm train-dpo",
    ),
    (
        "constraints into a user's folder",
        "constraints",
        ["--overwrite", "--output", "{h}/mydocs"],
        "written by no pcrm command",
    ),
    ("report --output into a user's folder", "report", ["--output", "{h}/mydocs"], "written by no pcrm command"),
    (
        "evaluate-policy into a user's folder",
        "evaluate-policy",
        ["--policy", "{root}/policy", "--overwrite", "--output", "{h}/mydocs"],
        "written by no pcrm command",
    ),
    (
        "align into an evaluate output",
        "align",
        ["--reward-model", "{rm}", "--overwrite", "--output", "{h}/evaluate"],
        "written by pcrm evaluate",
    ),
    (
        "overoptimization into a user's folder",
        "overoptimization",
        ["--output", "{h}/mydocs"],
        "written by no pcrm command",
    ),
    ("reproduce into an evaluate output", "reproduce", ["--output", "{h}/evaluate"], "written by pcrm evaluate"),
]


@pytest.mark.parametrize("case,command,extra,message", CASES, ids=[c for c, *_ in CASES])
def test_bad_input_round2(
    models, hostile, evaluation, tiny_rm_dir, pairs_file, tmp_path, capsys, case, command, extra, message
):
    fill = {"rm": str(tiny_rm_dir), "pairs": str(pairs_file), "root": str(models), "h": str(hostile)}
    extra = [e.format(**fill) for e in extra]
    base = {
        "train-rm": [
            "--model",
            str(tiny_rm_dir),
            "--data",
            str(pairs_file),
            "--max-length",
            "64",
            "--max-steps",
            "2",
            "--no-progress",
        ],
        "constraints": ["--data", str(pairs_file), "--model", str(tiny_rm_dir)],
        "evaluate": ["--data", str(pairs_file), "--split", "train", "--bootstrap", "0"],
        "report": ["--input", str(evaluation)],
        "train-dpo": ["--data", str(pairs_file), "--max-length", "64", "--method", "dpo"],
        "evaluate-policy": ["--reference", str(models / "policy"), "--data", str(pairs_file)],
        "align": [
            "--policy",
            str(models / "policy"),
            "--data",
            str(pairs_file),
            "--max-new-tokens",
            "4",
            "--max-prompt-length",
            "32",
            "--max-length",
            "64",
        ],
        "overoptimization": ["--quick", "--no-progress"],
        "reproduce": ["--quick", "--model", str(tiny_rm_dir), "--data", str(pairs_file), "--no-progress"],
    }[command]
    argv = [command, *base, *(["--output", str(tmp_path / "out")] if "--output" not in extra else []), *extra]
    before, hashes = sorted(os.listdir(tmp_path)), tree_hashes(hostile)
    one_line_error(capsys, argv, message)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a lock file or an empty folder
    assert tree_hashes(hostile) == hashes  # nobody's files changed


# -- 2. security ---------------------------------------------------------------------------------------------------


def test_no_pickle_anywhere_a_users_folder_reaches():
    found = subprocess.run(
        ["grep", "-rn", "--include=*.py", r"weights_only=False\|pickle", "pcrm/"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    assert [
        line
        for line in found.splitlines()
        if "allow_pickle=False" not in line and "without pickle" not in line and "never code (pickle)" not in line
    ] == []


def test_a_crafted_ppo_checkpoint_runs_no_code(tmp_path):
    import torch

    from pcrm.alignment.ppo import load_state
    from pcrm.errors import PcrmError

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"step": 1, "value_head": {}, "optimizer": {}, "shaper": Payload()}, tmp_path / "state.pt")
    with pytest.raises(PcrmError, match="not a checkpoint written by pcrm"):
        load_state(tmp_path / "state.pt")
    assert not (tmp_path / "pwned").exists()
    state = {
        "step": 2,
        "value_head": {"weight": torch.zeros(1, 4)},
        "optimizer": {"state": {}, "param_groups": []},
        "shaper": {"count": 3.0, "mean": 0.5, "m2": 1.0},
    }
    torch.save(state, tmp_path / "good.pt")
    assert (
        load_state(tmp_path / "good.pt")["shaper"] == state["shaper"]
    )  # what save_checkpoint writes loads without pickle


def test_a_lock_file_link_is_refused_and_its_target_untouched(tiny_rm_dir, pairs_file, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".rm.pcrm-lock").symlink_to(victim)
    argv = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs_file),
        "--output",
        str(tmp_path / "rm"),
        "--no-progress",
    ]
    one_line_error(capsys, argv, "is a symbolic link")
    assert victim.read_text() == "precious" and not (tmp_path / "rm").exists()


def test_a_marker_link_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    output = tmp_path / "out"
    output.mkdir()
    (output / MARKER).symlink_to(victim)  # an empty folder but for a planted link: refused as not pcrm's
    with pytest.raises(Exception, match="not an output of pcrm"):
        OutputFolder(output, "evaluate", overwrite=True).plan()
    (output / MARKER).unlink()
    with OutputFolder(output, "evaluate") as folder:
        (folder.work / MARKER).unlink()
        (folder.work / MARKER).symlink_to(victim)
        folder.commit({})
    assert victim.read_text() == "precious"


def _section(folder: Path, images: list[str]) -> None:
    (folder / "sections").mkdir(exist_ok=True)
    (folder / "sections" / "evil.json").write_text(
        json.dumps({"title": "Evil", "text": "", "rows": [], "images": images})
    )


@pytest.mark.parametrize(
    "image", ["/etc/hostname", "../outside.png", "sections/link.png"], ids=["absolute", "dotdot", "link"]
)
def test_report_sections_embed_only_files_inside_the_folder(evaluation, tmp_path, capsys, image):
    copy = tmp_path / "eval"
    shutil.copytree(evaluation, copy)
    (tmp_path / "outside.png").write_bytes(PNG + b"secret")
    _section(copy, [image])
    (copy / "sections" / "link.png").symlink_to(tmp_path / "outside.png")
    hashes = tree_hashes(copy)
    one_line_error(capsys, ["report", "--input", str(copy)], "outside")
    assert tree_hashes(copy) == hashes and not (copy / "report.md").exists()


def test_add_section_copies_images_into_the_report_folder(evaluation, tmp_path):
    from pcrm.report import add_section, write_report

    copy = tmp_path / "eval"
    shutil.copytree(evaluation, copy)
    (tmp_path / "curve.png").write_bytes(PNG + b"curve")
    add_section(copy, "Added", images=[tmp_path / "curve.png"])
    stored = json.loads((copy / "sections" / "Added.json").read_text())
    assert (
        stored["images"] == ["sections/Added-0.png"]
        and (copy / "sections" / "Added-0.png").read_bytes() == PNG + b"curve"
    )
    (tmp_path / "curve.png").unlink()
    assert "Added-0.png" in " ".join(write_report(copy)["images"])  # renders from its own copy


def test_markdown_is_escaped_like_the_html(evaluation, tmp_path):
    copy = tmp_path / "eval"
    shutil.copytree(evaluation, copy)
    title = "<script>alert(1)</script> [click](javascript:alert(1)) ![x](http://tracker/p.png)"
    assert main(["report", "--input", str(copy), "--title", title]) == 0
    markdown, page = (copy / "report.md").read_text(), (copy / "report.html").read_text()
    assert "<script>" not in markdown and "<script>" not in page and "&lt;script&gt;" in markdown
    assert "[click](" not in markdown and "![x](" not in markdown


# -- 3. output folders: only the same command's, resume continues, a failed resume costs nothing -------------------


def _rm_argv(tiny_rm_dir, pairs, output, *extra):
    return [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs),
        "--eval-data",
        str(pairs),
        "--eval-split",
        "train",
        "--output",
        str(output),
        "--method",
        "bt",
        "--max-length",
        "64",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--save-steps",
        "2",
        "--no-progress",
        "--unit",
        "chars",
        *extra,
    ]


def test_resume_refuses_other_settings_naming_them(good_output, tiny_rm_dir, tmp_path, capsys):
    _, pairs, hashes = good_output
    output = _copy_good(good_output, tmp_path)
    line = one_line_error(
        capsys, _rm_argv(tiny_rm_dir, pairs, output, "--resume", "--method", "length"), "cannot change on resume"
    )
    assert "--method 'bt' (now 'length')" in line
    assert tree_hashes(output) == hashes


def test_resume_continues_to_the_new_max_steps(good_output, tiny_rm_dir, tmp_path, capsys):
    _, pairs, hashes = good_output
    output = _copy_good(good_output, tmp_path)
    assert main(_rm_argv(tiny_rm_dir, pairs, output, "--resume", "--max-steps", "8")) == 0
    record = json.loads((output / FINAL).read_text())
    assert record["steps"] == 8 and record["config"]["max_steps"] == 8 and not (output / MARKER).exists()
    assert record["output"]["command"] == "train-rm"
    assert not (tmp_path / ".rm.pcrm-new").exists()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device", "model.safetensors"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    ],
    ids=["oserror", "torch-runtime-error"],
)
def test_a_failed_resume_leaves_the_finished_output_byte_identical(
    good_output, tiny_rm_dir, tmp_path, capsys, monkeypatch, error
):
    from pcrm.trainers.reward import PCRMRewardTrainer

    _, pairs, hashes = good_output
    output = _copy_good(good_output, tmp_path)
    monkeypatch.setattr(
        PCRMRewardTrainer, "_save_optimizer_and_scheduler", lambda self, *a, **k: (_ for _ in ()).throw(error)
    )
    one_line_error(capsys, _rm_argv(tiny_rm_dir, pairs, output, "--resume", "--max-steps", "8"), "no space left")
    assert tree_hashes(output) == hashes
    assert not (tmp_path / ".rm.pcrm-new").exists() and not (tmp_path / ".rm.pcrm-lock").exists()


def test_full_disk_from_torch_and_safetensors_is_one_line():
    from pcrm.cli import user_error

    safetensors = RuntimeError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    chained = RuntimeError("save failed")
    chained.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    for err in (safetensors, torch_error, chained):
        assert "no space left" in user_error(err)
    assert user_error(RuntimeError("a bug")) is None


def test_evaluate_holds_its_folder_like_training(good_output, evaluation, tmp_path, capsys, monkeypatch):
    reference, pairs, _ = good_output
    output = tmp_path / "eval"
    shutil.copytree(evaluation, output)
    (output / "scores" / "stale.npz").write_bytes(b"stale")
    hashes = tree_hashes(output)
    argv = [
        "evaluate",
        "--model",
        str(reference),
        "--data",
        str(pairs),
        "--split",
        "train",
        "--bootstrap",
        "0",
        "--priors",
        "length",
        "--output",
        str(output),
        "--no-progress",
    ]
    one_line_error(capsys, argv, "pass --overwrite")  # no silent replacement of metrics.json
    assert tree_hashes(output) == hashes

    import pcrm.evaluation.reward_models as reward_models

    def interrupted(*args, **kwargs):  # SIGTERM mid-scoring becomes KeyboardInterrupt under the folder
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(reward_models, "compute_metrics", interrupted)
        assert main([*argv, "--overwrite"]) == 130
        assert tree_hashes(output) == hashes and not (tmp_path / ".eval.pcrm-new").exists()
        assert main([*argv[:-3], "--output", str(tmp_path / "fresh"), "--no-progress"]) == 130
        assert_whole_or_marked(tmp_path / "fresh")
    assert main([*argv, "--overwrite"]) == 0
    assert (
        not (output / "scores" / "stale.npz").exists()
        and json.loads((output / FINAL).read_text())["output"]["command"] == "evaluate"
    )


def test_concurrent_evaluations_are_refused(good_output, tmp_path, capsys):
    from tests.test_faults import held_by_another_process

    reference, pairs, _ = good_output
    output = tmp_path / "busy"
    with held_by_another_process(output, "evaluate") as holder:
        argv = [
            "evaluate",
            "--model",
            str(reference),
            "--data",
            str(pairs),
            "--split",
            "train",
            "--bootstrap",
            "0",
            "--output",
            str(output),
            "--overwrite",
        ]
        assert f"pid {holder.pid}" in one_line_error(capsys, argv, "in use by another pcrm run")


def test_align_report_destination_is_checked_before_the_run(
    evaluation, tiny_rm_dir, models, pairs_file, tmp_path, capsys, monkeypatch
):
    report = tmp_path / "eval"
    shutil.copytree(evaluation, report)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, *a, **k: False if Path(p) == report else real_access(p, mode, *a, **k)
    )
    argv = [
        "align",
        "--reward-model",
        str(tiny_rm_dir),
        "--policy",
        str(models / "policy"),
        "--data",
        str(pairs_file),
        "--max-new-tokens",
        "4",
        "--max-prompt-length",
        "32",
        "--max-length",
        "64",
        "--report",
        str(report),
        "--output",
        str(tmp_path / "align"),
    ]
    one_line_error(capsys, argv, "is not a writable directory")
    assert not (tmp_path / "align").exists()


def test_corrupt_study_json_is_one_line(tmp_path, capsys):
    with OutputFolder(tmp_path / "study", "overoptimization", rerun="continue", resumable=lambda work: True) as folder:
        (folder.work / "study.json").write_text("{not json")
        folder.close(failed=True)  # an interrupted study: kept, marked
    hashes = tree_hashes(tmp_path / "study")
    one_line_error(
        capsys,
        ["overoptimization", "--quick", "--no-progress", "--output", str(tmp_path / "study")],
        "study.json: unreadable",
    )
    assert tree_hashes(tmp_path / "study") == hashes


def test_reproduce_retrains_a_model_whose_settings_changed(tiny_rm_dir, pairs_file, tmp_path, capsys):
    from pcrm.commands import reproduce

    def config(lr):
        return reproduce.Config(
            output=str(tmp_path / "repro"),
            methods=["bt"],
            seeds=[0],
            model=str(tiny_rm_dir),
            data=str(pairs_file),
            max_length=64,
            learning_rate=lr,
            progress=False,
        )

    (directory,) = reproduce.train_all(config(1e-3))
    first = tree_hashes(directory)
    capsys.readouterr()
    reproduce.train_all(config(1e-3))
    assert "training" not in capsys.readouterr().out and tree_hashes(directory) == first  # same settings: reused
    reproduce.train_all(config(2e-3))
    assert "settings changed: trained again" in capsys.readouterr().out
    assert json.loads((directory / FINAL).read_text())["config"]["learning_rate"] == 2e-3


# -- 4. held-out pairs are never silently the training pairs ----------------------------------------------------------


def test_a_single_data_file_holds_out_a_seeded_fraction(tiny_rm_dir, tmp_path, capsys):
    from tests.conftest import PAIRS, write_jsonl

    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS * 5]
    )  # 40 rows
    argv = [
        "train-rm",
        "--model",
        str(tiny_rm_dir),
        "--data",
        str(pairs),
        "--method",
        "bt",
        "--max-length",
        "64",
        "--max-steps",
        "2",
        "--no-progress",
        "--eval-fraction",
        "0.25",
    ]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "held-out: 10 of the 40 rows" in out and "held-out (10 pairs)" in out
    record = json.loads((tmp_path / "a" / FINAL).read_text())
    assert (
        record["train_pairs"] == 30
        and record["heldout_source"]["fraction"] == 0.25
        and record["heldout"]["pairs"] == 10
    )
    assert main([*argv, "--output", str(tmp_path / "b"), "--eval-fraction", "0"]) == 0
    assert "no held-out metrics" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / FINAL).read_text())["heldout"] is None
    assert (
        main([*argv, "--output", str(tmp_path / "c"), "--eval-split", "train[:5]"]) == 0
    )  # a slice applies to one file
    assert json.loads((tmp_path / "c" / FINAL).read_text())["heldout"]["pairs"] == 5


@pytest.mark.parametrize("damage", ["corrupt-scores", "scores-missing-a-key", "metrics-missing-a-key"])
def test_report_on_damaged_evaluation_is_one_line(evaluation, tmp_path, capsys, damage):
    copy = tmp_path / "eval"
    shutil.copytree(evaluation, copy)
    (scores,) = (copy / "scores").glob("*.npz")
    if damage == "corrupt-scores":
        scores.write_bytes(scores.read_bytes()[:100])
    elif damage == "scores-missing-a-key":
        np.savez(scores, score=np.zeros(3))
    else:
        metrics = json.loads((copy / "metrics.json").read_text())
        del metrics["results"][0]["metrics"]["calibration"]
        (copy / "metrics.json").write_text(json.dumps(metrics))
    hashes = tree_hashes(copy)
    one_line_error(
        capsys,
        ["report", "--input", str(copy)],
        {
            "corrupt-scores": "unreadable score file",
            "scores-missing-a-key": "not a score file",
            "metrics-missing-a-key": "metrics.calibration",
        }[damage],
    )
    assert tree_hashes(copy) == hashes
