"""Data from anywhere `datasets` reads (local dataset repositories, globs, slices, save_to_disk) in
every TRL preference format, loaded offline from small repositories built here."""

import json
import logging
import re

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from pcrm.data import extract_prompt, fingerprint, load_preferences
from pcrm.errors import PcrmError
from tests.conftest import write_jsonl

H, A = "\n\nHuman:", "\n\nAssistant:"
# Raw Anthropic HH rows: only full conversations, no prompt column.
HH_ROWS = [
    {"chosen": f"{H} What is 2+2?{A} 4.", "rejected": f"{H} What is 2+2?{A} 5."},
    {
        "chosen": f"{H} Hi{A} Hello!{H} Tell me a joke.{A} Why did the chicken cross the road?",
        "rejected": f"{H} Hi{A} Hello!{H} Tell me a joke.{A} No.",
    },
    # the replies share their first words: the prompt still ends at the turn boundary
    {"chosen": f"{H} Is it safe?{A} I think so, yes.", "rejected": f"{H} Is it safe?{A} I think not."},
]
HH_EXPECTED = [
    (f"{H} What is 2+2?{A}", " 4.", " 5."),
    (f"{H} Hi{A} Hello!{H} Tell me a joke.{A}", " Why did the chicken cross the road?", " No."),
    (f"{H} Is it safe?{A}", " I think so, yes.", " I think not."),
]


def msg(role, content):
    return {"role": role, "content": content}


def triples(dataset):
    return list(zip(dataset["prompt"], dataset["chosen"], dataset["rejected"]))


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_raw_anthropic_hh_repository(tmp_path, fmt):
    repo = tmp_path / "hh-rlhf"
    if fmt == "parquet":
        write_parquet(repo / "data" / "train-00000-of-00001.parquet", HH_ROWS)
        write_parquet(repo / "data" / "test-00000-of-00001.parquet", HH_ROWS[:1])
    else:
        (repo / "data").mkdir(parents=True)
        write_jsonl(repo / "data" / "train-00000-of-00001.jsonl", HH_ROWS)
        write_jsonl(repo / "data" / "test-00000-of-00001.jsonl", HH_ROWS[:1])
    train = load_preferences(str(repo), split="train")
    assert triples(train) == HH_EXPECTED
    assert triples(load_preferences(str(repo), split="test")) == HH_EXPECTED[:1]
    assert triples(load_preferences(str(repo), split="train[:2]")) == HH_EXPECTED[:2]
    assert triples(load_preferences(str(repo), split="train[-1:]")) == HH_EXPECTED[2:]
    with pytest.raises(PcrmError, match="unknown split 'dev'") as err:
        load_preferences(str(repo), split="dev")
    assert "\n" not in str(err.value)


def test_hh_prompt_differs_from_trl_only_at_the_turn_boundary():
    from trl.data_utils import extract_prompt as trl_extract

    chosen, rejected = HH_ROWS[2]["chosen"], HH_ROWS[2]["rejected"]
    assert trl_extract({"chosen": chosen, "rejected": rejected})["prompt"].endswith("I think")  # mid-reply
    assert extract_prompt(chosen, rejected)[0].endswith(A)


@pytest.mark.parametrize(
    "chosen,rejected",
    [
        ("The sky is blue.", "The sky is green."),
        ("abc", "xyz"),
        ("same", "same"),
        (
            [msg("user", "What colour is the sky?"), msg("assistant", "Blue.")],
            [msg("user", "What colour is the sky?"), msg("assistant", "Green.")],
        ),
        (
            [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Joke?"), msg("assistant", "Knock knock")],
            [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Joke?"), msg("assistant", "No")],
        ),
    ],
)
def test_extract_prompt_mirrors_trl_outside_hh_strings(chosen, rejected):
    from trl.data_utils import extract_prompt as trl_extract

    expected = trl_extract({"chosen": chosen, "rejected": rejected})
    assert extract_prompt(chosen, rejected) == (expected["prompt"], expected["chosen"], expected["rejected"])


def test_ultrafeedback_binarized_messages_with_scores(tmp_path, caplog):
    def row(prompt, good, bad, s_w, s_l):
        return {
            "prompt": prompt,
            "prompt_id": prompt[:4],
            "chosen": [msg("user", prompt), msg("assistant", good)],
            "rejected": [msg("user", prompt), msg("assistant", bad)],
            "messages": [msg("user", prompt), msg("assistant", good)],
            "score_chosen": s_w,
            "score_rejected": s_l,
        }

    rows = [
        row("Name a fruit.", "An apple.", "A chair.", 8.0, 3.0),
        row("Add 1 and 1.", "3", "2", 2.0, 9.0),  # chosen scored lower: swapped
        row("Say hi.", "Hi!", "Hello!", 5.0, 5.0),
    ]  # tie: skipped
    repo = tmp_path / "ultrafeedback"
    write_parquet(repo / "data" / "train_prefs-00000-of-00001.parquet", rows)
    with caplog.at_level(logging.WARNING, logger="pcrm"):
        pairs = load_preferences(str(repo), split="train_prefs")
    assert triples(pairs) == [
        ([msg("user", "Name a fruit.")], [msg("assistant", "An apple.")], [msg("assistant", "A chair.")]),
        ([msg("user", "Add 1 and 1.")], [msg("assistant", "2")], [msg("assistant", "3")]),
    ]
    assert pairs["score_chosen"] == [8.0, 9.0] and pairs["score_rejected"] == [3.0, 2.0]
    assert "swapped 1 pair(s)" in caplog.text and "skipped 1 pair(s) with equal scores" in caplog.text


def test_implicit_prompt_conversational(tmp_path):
    shared = [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Recommend a book.")]
    rows = [
        {"chosen": shared + [msg("assistant", "Try 'Dune'.")], "rejected": shared + [msg("assistant", "No.")]},
        {
            "chosen": [msg("user", "2+2?"), msg("assistant", "4")],
            "rejected": [msg("user", "2+2?"), msg("assistant", "5")],
        },
    ]
    pairs = load_preferences(write_jsonl(tmp_path / "implicit.jsonl", rows))
    assert triples(pairs) == [
        (shared, [msg("assistant", "Try 'Dune'.")], [msg("assistant", "No.")]),
        ([msg("user", "2+2?")], [msg("assistant", "4")], [msg("assistant", "5")]),
    ]


def test_ranked_file_and_unexpanded(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [1.0, 3.0, 2.0]},
        {"prompt": "q", "responses": ["x", "y"], "scores": [0.0, 0.0]},
    ]
    write_parquet(tmp_path / "ranked" / "train.parquet", rows)
    pairs = load_preferences(str(tmp_path / "ranked"))
    assert sorted(zip(pairs["chosen"], pairs["rejected"])) == [("b", "a"), ("b", "c"), ("c", "a")]
    assert set(pairs["group"]) == {0}
    raw = load_preferences(str(tmp_path / "ranked"), expand_ranked=False)
    assert raw.column_names[:3] == ["prompt", "responses", "scores"] and len(raw) == 2


def test_slices_globs_and_save_to_disk(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert load_preferences(path, split="train[:3]")["prompt"] == ["p0", "p1", "p2"]
    assert load_preferences(path, split="test[50%:]")["prompt"] == ["p3", "p4", "p5"]  # one file is one split
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "part-0.jsonl", rows[:3])
    write_jsonl(shards / "part-1.jsonl", rows[3:])
    assert load_preferences(str(shards / "part-*.jsonl"))["prompt"] == [r["prompt"] for r in rows]
    with pytest.raises(PcrmError, match="no file matches"):
        load_preferences(str(shards / "nothing-*.jsonl"))
    saved = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:2])}).save_to_disk(str(saved))
    assert load_preferences(saved, split="train[2:4]")["prompt"] == ["p2", "p3"]
    assert load_preferences(saved, split="test")["prompt"] == ["p0", "p1"]


def test_bundled_slice():
    assert len(load_preferences("hh-rlhf-harmless", split="test[:20]")) <= 20


def test_config_name_of_a_local_repository(tmp_path):
    repo = tmp_path / "multi"
    (repo / "harmless").mkdir(parents=True)
    (repo / "helpful").mkdir()
    write_jsonl(repo / "harmless" / "train.jsonl", [{"prompt": "p", "chosen": "harmless", "rejected": "x"}])
    write_jsonl(repo / "helpful" / "train.jsonl", [{"prompt": "p", "chosen": "helpful", "rejected": "x"}])
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: harmless\n  data_files:\n  - split: train\n    path: harmless/train.jsonl\n"
        "- config_name: helpful\n  data_files:\n  - split: train\n    path: helpful/train.jsonl\n---\n"
    )
    assert load_preferences(str(repo), config_name="helpful")["chosen"] == ["helpful"]
    assert load_preferences(str(repo), config_name="harmless")["chosen"] == ["harmless"]


@pytest.mark.parametrize(
    "columns", ["chosen=good,rejected=bad,prompt=question", {"chosen": "good", "rejected": "bad", "prompt": "question"}]
)
def test_column_mapping(tmp_path, columns):
    rows = [{"question": "q", "good": "yes", "bad": "no", "prompt": "ignored"}]
    pairs = load_preferences(write_jsonl(tmp_path / "mapped.jsonl", rows), columns=columns)
    assert triples(pairs) == [("q", "yes", "no")]


@pytest.mark.parametrize(
    "columns,message",
    [
        ("chosen=nope,rejected=bad", "column 'nope' (for 'chosen') not found"),
        ("winner=good", "unknown name(s) 'winner'"),
        ("chosen", "expected NAME=COLUMN"),
    ],
)
def test_bad_column_mapping(tmp_path, columns, message):
    path = write_jsonl(tmp_path / "mapped.jsonl", [{"question": "q", "good": "yes", "bad": "no"}])
    with pytest.raises(PcrmError, match=re.escape(message)) as err:
        load_preferences(path, columns=columns)
    assert "\n" not in str(err.value)


def test_csv_keeps_na_strings_as_text(tmp_path, caplog):
    path = tmp_path / "na.csv"
    path.write_text("prompt,chosen,rejected\nWhat is missing?,NA,None\nSay a number.,4.0,null\n")
    with caplog.at_level(logging.WARNING, logger="pcrm"):
        pairs = load_preferences(path)
    assert triples(pairs) == [("What is missing?", "NA", "None"), ("Say a number.", "4.0", "null")]
    assert (
        "3 cell(s) such as 'NA'" in caplog.text and "1 in 'chosen'" in caplog.text and "2 in 'rejected'" in caplog.text
    )


def test_warns_about_identical_and_invisible_pairs(tmp_path, caplog):
    rows = [
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": "ok", "rejected": "\u200b\u200d"},
        {"prompt": "p", "chosen": "\ufeff", "rejected": "fine"},
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
    ]
    with caplog.at_level(logging.WARNING, logger="pcrm"):
        pairs = load_preferences(write_jsonl(tmp_path / "odd.jsonl", rows))
    assert len(pairs) == 4
    assert "1 pair(s) whose two responses are identical" in caplog.text
    assert "2 pair(s) with a response that is empty apart from invisible characters" in caplog.text


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"text": "a", "label": 1}], r"missing columns .*found \['label', 'text'\]"),
        (
            [{"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 1.0, "score_rejected": None}],
            "row 0: field 'score_rejected' is not a finite number",
        ),
        (
            [{"chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": ""}, {"chosen": "", "rejected": "b"}],
            r"row 1: field 'rejected' is empty \(1 more row\(s\) with errors\)",
        ),
    ],
)
def test_error_lines_in_a_repository(tmp_path, rows, message):
    write_parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet", rows)
    with pytest.raises(PcrmError, match=message) as err:
        load_preferences(str(tmp_path / "repo"))
    assert str(tmp_path / "repo") in str(err.value) and "\n" not in str(err.value)


def test_missing_local_path_and_unreachable_hub_id(tmp_path):
    with pytest.raises(PcrmError, match="no such file or directory"):
        load_preferences(str(tmp_path / "nope" / "data.parquet"))
    with pytest.raises(PcrmError, match="pcrm-test/does-not-exist: cannot load") as err:
        load_preferences("pcrm-test/does-not-exist", config_name="default")  # offline in tests
    assert "\n" not in str(err.value)


def test_fingerprint_is_a_content_hash_across_load_paths(tmp_path):
    import hashlib

    rows = [
        {"prompt": "p", "chosen": "good ü", "rejected": "bad"},
        {"prompt": "q", "chosen": "yes", "rejected": 'no "x"'},
    ]
    from_jsonl = load_preferences(write_jsonl(tmp_path / "a.jsonl", rows))
    from_parquet = load_preferences(str(write_parquet(tmp_path / "b.parquet", rows)))
    from_csv = tmp_path / "c.csv"
    pd.DataFrame(rows).to_csv(from_csv, index=False)
    digest = hashlib.sha256()  # the per-value definition: column name, then each value's JSON and a NUL
    for column in ("prompt", "chosen", "rejected"):
        digest.update(column.encode())
        for row in rows:
            digest.update(json.dumps(row[column], ensure_ascii=False, sort_keys=True).encode() + b"\0")
    expected = digest.hexdigest()[:16]
    assert fingerprint(from_jsonl) == fingerprint(from_parquet) == fingerprint(load_preferences(from_csv)) == expected
    assert fingerprint(from_jsonl.select([1])) != expected


def test_cli_data_config_and_columns(tmp_path, capsys):
    from pcrm.cli import main

    repo = tmp_path / "repo"
    (repo / "v2").mkdir(parents=True)
    write_jsonl(
        repo / "v2" / "train.jsonl",
        [{"question": f"q{i}", "good": f"a fine answer {i}", "bad": "no"} for i in range(4)],
    )
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: v2\n  data_files:\n  - split: train\n    path: v2/train.jsonl\n---\n"
    )
    argv = [
        "constraints",
        "--data",
        str(repo),
        "--data-config",
        "v2",
        "--split",
        "train[:3]",
        "--method",
        "length",
        "--unit",
        "words",
        "--output",
        str(tmp_path / "out"),
    ]
    assert main([*argv, "--columns", "chosen=good,rejected=bad,prompt=question"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pairs"] == 3 and summary["similarity"]["mean"] == 0.25  # 1 word ("no") vs 4 ("a fine answer i")
    capsys.readouterr()
    assert main([*argv, "--columns", "chosen=best", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "column 'best' (for 'chosen') not found" in err


def test_compressed_file_and_worker_processes(tmp_path):
    import gzip

    rows = [{"chosen": f"{H} Q{i}?{A} Yes {i}.", "rejected": f"{H} Q{i}?{A} No."} for i in range(5)]
    rows.append({"chosen": f"{H} Q?{A} fine", "rejected": ""})
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[:5]))
    pairs = load_preferences(path, num_proc=2)
    assert triples(pairs)[4] == (f"{H} Q4?{A}", " Yes 4.", " No.")
    with pytest.raises(PcrmError, match="row 5: field 'rejected' is empty"):
        load_preferences(write_jsonl(tmp_path / "bad.jsonl", rows), num_proc=2)
