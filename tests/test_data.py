"""The loader: bundled data, file formats, ranked data, and one-line errors on bad input."""

import json

import pytest

from pcrm.data import load_preferences, verify_bundled_checksums
from pcrm.errors import PcrmError
from tests.conftest import write_jsonl


def test_bundled_splits():
    verify_bundled_checksums()
    train = load_preferences("hh-rlhf-harmless", split="train")
    test = load_preferences("hh-rlhf-harmless", split="test")
    assert len(train) == 1499 and len(test) == 498  # 1 + 2 pairs with an empty preferred reply dropped
    assert {"prompt", "chosen", "rejected"} <= set(train.column_names)
    assert train[0]["prompt"].endswith("Assistant:")


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "hf-dir"])
def test_file_formats(tmp_path, fmt):
    import pandas as pd
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "yes", "rejected": "no"}]
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    dataset = load_preferences(path)
    assert dataset["chosen"] == ["good", "yes"]


def test_conversational_pairs(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    assert load_preferences(write_jsonl(tmp_path / "c.jsonl", [row]))[0]["chosen"][0]["content"] == "hello"


def test_ranked_rows_expand_to_ordered_pairs_without_ties(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [3, 1, 3]},
        {"prompt": "q", "responses": ["only"], "scores": [1.0]},
    ]
    pairs = load_preferences(write_jsonl(tmp_path / "r.jsonl", rows))
    assert sorted(zip(pairs["chosen"], pairs["rejected"])) == [("a", "b"), ("c", "b")]
    assert pairs["chosen_score"] == [3.0, 3.0] and pairs["group"] == [0, 0]
    raw = load_preferences(tmp_path / "r.jsonl", expand_ranked=False)
    assert len(raw) == 2


BAD_ROWS = [
    ([{"prompt": "p", "chosen": "a"}], "missing columns"),
    ([{"prompt": "p", "chosen": "a", "rejected": " "}], "row 0: field 'rejected' is empty"),
    (
        [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": 3, "rejected": "b"}],
        "row 1: field 'chosen' must be a string",
    ),
    ([{"prompt": "p", "chosen": "a", "rejected": None}], "row 0: field 'rejected' is missing"),
    (
        [{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, float("nan")]}],
        r"row 0: field 'scores'\[1\] is not a finite",
    ),
    ([{"prompt": "p", "responses": ["a", "b"], "scores": [1.0]}], "2 responses but 1 scores"),
    ([{"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "b"}], "message 0 needs a string 'content'"),
]


@pytest.mark.parametrize("rows,message", BAD_ROWS)
def test_bad_rows_name_file_row_and_field(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r).replace("NaN", "NaN") + "\n" for r in rows))
    with pytest.raises(PcrmError, match=message) as err:
        load_preferences(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.jsonl", None, "no such file"),
        ("data.txt", "x", "unknown format"),
        ("broken.jsonl", '{"prompt": "p"\n', "line 1: invalid JSON"),
        ("empty.jsonl", "", "empty"),
        ("list.json", '{"a": 1}', "missing columns"),
        ("bad.csv", "prompt,chosen,rejected\np,,b\n", "row 0: field 'chosen' is missing"),
    ],
)
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(PcrmError, match=message):
        load_preferences(path)


def test_unknown_split():
    with pytest.raises(PcrmError, match="unknown split 'dev'"):
        load_preferences("hh-rlhf-harmless", split="dev")


def test_conversational_prompt_with_text_replies_keeps_the_prompt(tmp_path):
    """Issue 18: a message-list prompt beside string replies was replaced by "" (TRL-style extraction)."""
    import json

    from pcrm.data import load_preferences

    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": " yes", "rejected": " no"}
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    data = load_preferences(str(path))
    assert data["prompt"] == [row["prompt"] for row in rows] and data["chosen"] == [" yes"] * 3
