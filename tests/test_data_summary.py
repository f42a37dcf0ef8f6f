"""Issue 20: the data summary a command prints first (format, how the prompt was found, rows read/dropped, use), and
`pcrm report --input` on the outputs of align and evaluate-policy (tiny random models)."""

import json

import pytest
import torch

from pcrm.cli import main
from pcrm.console import data_summary
from pcrm.data import LoadReport, load_preferences
from tests.rm_fixtures import slow, tiny_llama_config, tiny_reward_model, write_jsonl

HH = [
    {
        "chosen": f"\n\nHuman: hi {i}\n\nAssistant: hello\n\nHuman: and then?\n\nAssistant: yes, {i} times",
        "rejected": f"\n\nHuman: hi {i}\n\nAssistant: hello\n\nHuman: and then?\n\nAssistant: no",
    }
    for i in range(4)
]
CONVERSATIONS = [
    {
        "prompt": [{"role": "user", "content": f"question {i}?"}],
        "chosen": [{"role": "assistant", "content": "a good answer"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    for i in range(4)
]


def _summary(capsys, tmp_path, data, *extra) -> list[str]:
    capsys.readouterr()
    argv = [
        "constraints",
        "--data",
        str(data),
        "--method",
        "length",
        "--unit",
        "words",
        "--output",
        str(tmp_path / "c"),
        *extra,
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("data: "))
    end = next((i for i in range(start + 1, len(out)) if not out[i].startswith("  ")), len(out))
    return out[start:end], captured.out + captured.err


def test_summary_of_an_implicit_prompt_hh_file(tmp_path, capsys):
    lines, _ = _summary(capsys, tmp_path, write_jsonl(tmp_path / "hh.jsonl", HH))
    assert (
        lines[0] == f"data: {tmp_path / 'hh.jsonl'}: pairs, standard (text), implicit prompt, "
        'extracted at the last shared "\\n\\nAssistant:"'
    )
    assert lines[1:] == ["  4 rows read; 4 pairs", "  used: 4 pairs: similarity and δ* (length) of each"]
    assert (
        load_preferences(str(tmp_path / "hh.jsonl"))[0]["chosen"] == " yes, 0 times"
    )  # what the summary says was done


def test_summary_of_a_conversational_file(tmp_path, capsys):
    lines, _ = _summary(capsys, tmp_path, write_jsonl(tmp_path / "conv.jsonl", CONVERSATIONS))
    assert lines[0].endswith(
        ": pairs, conversational (messages, rendered with the chat template), explicit prompt (column 'prompt')"
    )
    assert len(lines) <= 6


def test_summary_counts_dropped_rows_once_and_no_warning_repeats_them(tmp_path, capsys):
    lines, everything = _summary(capsys, tmp_path, "hh-rlhf-harmless", "--split", "test")
    assert lines[:2] == [
        "data: hh-rlhf-harmless [test]: pairs, standard (text), explicit prompt (column 'prompt')",
        "  500 rows read, 2 dropped (2 with an empty response); 498 pairs",
    ]
    assert everything.count("with an empty response") == 1  # the summary says it; no warning besides


def test_summaries_of_other_layouts():
    report = LoadReport()
    rows = [{"prompt": "q", "responses": ["a", "bb", "ccc"], "scores": [1, 2, 2]}]
    load_preferences(__import__("datasets").Dataset.from_list(rows), report=report)
    assert report.layout == "ranked (prompt, responses, scores), expanded to ordered pairs"
    assert report.flagged == {"tied response pairs not expanded": 1} and report.pairs == 2
    scored = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": s, "score_rejected": 1.0}
        for s in (0.0, 1.0, 2.0)
    ]
    report = LoadReport()
    load_preferences(__import__("datasets").Dataset.from_list(scored), report=report)
    assert report.dropped == {"with equal scores": 1} and report.flagged == {"swapped (chosen scored lower)": 1}
    assert data_summary(report, "2 pairs for training", truncated=1, max_length=8) == [
        "data: dataset: pairs with scores, standard (text), explicit prompt (column 'prompt')",
        "  3 rows read, 1 dropped (1 with equal scores); 2 pairs",
        "  kept: 1 swapped (chosen scored lower)",
        "  used: 2 pairs for training; 1 truncated at 8 tokens (the prompt's start cut)",
    ]
    assert data_summary(report, "the probe", seen=True) == ["data: dataset (as above)", "  used: the probe"]


# -- pcrm report on the outputs of align and evaluate-policy ----------------------------------------


@pytest.fixture(scope="module")
def policies(tmp_path_factory, tiny_tokenizer_dir):
    """Two tiny random Llama policies sharing a byte tokenizer, a tiny judge RM, and a prompts file in HH form."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    root = tmp_path_factory.mktemp("policies")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = tiny_llama_config(tokenizer)
        LlamaForCausalLM(config).save_pretrained(root / f"policy{seed}")
        tokenizer.save_pretrained(root / f"policy{seed}")
    tiny_reward_model(root / "judge", seed=1)
    write_jsonl(root / "prompts.jsonl", HH)
    return root


def _rendered(folder, titles):
    page = (folder / "report.html").read_text()
    for title in titles:
        assert f"<h2>{title}</h2>" in page.replace("&#x27;", "'"), title
    return page


def test_report_of_an_align_folder(policies, tiny_rm_dir, tmp_path, capsys):
    out = tmp_path / "bon"
    argv = [
        "align",
        "--method",
        "bon",
        "--policy",
        str(policies / "policy0"),
        "--reward-model",
        str(tiny_rm_dir),
        "--judge",
        str(policies / "judge"),
        "--data",
        str(policies / "prompts.jsonl"),
        "--eval-split",
        "train",
        "--prompts",
        "2",
        "--n",
        "1",
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
        "--bootstrap",
        "20",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    assert "  used: 2 distinct prompts for best-of-N (held-out)" in capsys.readouterr().out
    assert main(["report", "--input", str(out)]) == 0
    page = _rendered(out, ["Alignment: best-of-N (policy0)", "Alignment: reward scale on policy samples"])
    assert "<title>Alignment</title>" in page and page.count("<img ") == 1
    assert main(["report", "--input", str(out), "--output", str(tmp_path / "elsewhere")]) == 0
    assert _rendered(tmp_path / "elsewhere", ["Alignment: best-of-N (policy0)"]).count("<img ") == 1


def test_report_of_an_evaluate_policy_folder_and_its_report_option(policies, tmp_path, capsys):
    out = tmp_path / "policy-eval"
    argv = [
        "evaluate-policy",
        "--policy",
        str(policies / "policy1"),
        "--reference",
        str(policies / "policy0"),
        "--judge",
        str(policies / "judge"),
        "--data",
        str(policies / "prompts.jsonl"),
        "--split",
        "train",
        "--pairs",
        "2",
        "--prompts",
        "2",
        "--max-length",
        "64",
        "--max-new-tokens",
        "4",
        "--bootstrap",
        "20",
        "--output",
        str(out),
        "--report",
        str(tmp_path / "evaluate"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "  used: held-out: 2 pairs for the implicit rewards, 2 prompts for responses" in printed
    assert main(["report", "--input", str(out)]) == 0
    title = "Policy evaluation (1 policies against " + str(policies / "policy0") + ")"
    page = _rendered(out, [title])
    assert "<th>implicit-reward accuracy</th>" in page and "<th>judge win rate vs start [95% CI]</th>" in page
    section = json.loads(next((tmp_path / "evaluate" / "sections").glob("*.json")).read_text())
    assert section["title"] == title and section["rows"][1]["policy"] == "policy1"


@slow("a tiny reproduce, about 60 s")
def test_a_multi_step_command_says_each_dropped_count_once(tiny_rm_dir, tmp_path, capsys):
    """reproduce loads the bundled test split per training and again to evaluate: one summary, no repeated warning."""
    argv = [
        "reproduce",
        "--model",
        str(tiny_rm_dir),
        "--methods",
        "bt",
        "--seeds",
        "0",
        "--seeds",
        "1",
        "--max-pairs",
        "8",
        "--max-length",
        "32",
        "--output",
        str(tmp_path / "repro"),
        "--no-progress",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert everything.count("2 with an empty response") == 1 and "pair(s) with an empty response" not in everything
    assert (
        "data: hh-rlhf-harmless [test] (as above)\n  used: 498 pairs (996 responses) scored by 2 reward model(s)"
        in captured.out
    )
