"""The prompt of each pair: extracted from chosen/rejected when implicit (TRL's `trl.data_utils` rules, with the
Anthropic HH turn-boundary cut on top), and an empty one where there is none."""

import json
import os
from typing import Any

from datasets import Dataset

from pcrm.data.report import LoadReport

HH_ASSISTANT = "\n\nAssistant:"


def extract_prompt(chosen, rejected) -> tuple[Any, Any, Any]:
    """(prompt, chosen reply, rejected reply) from two full conversations sharing their start.

    TRL's `trl.data_utils.extract_prompt`: the longest shared prefix (of messages for conversational data, of
    characters for strings, a space before the first difference moved to the replies) becomes the prompt. Strings in
    Anthropic HH form ("\\n\\nHuman: ... \\n\\nAssistant: ...") are cut instead right after the last shared
    "\\n\\nAssistant:", at the turn boundary, so the prompt holds every shared turn and the replies only the replies.
    """
    if (
        not isinstance(chosen, (str, list))
        or not isinstance(rejected, (str, list))
        or type(chosen) is not type(rejected)
    ):
        return None, chosen, rejected  # validation names the bad field
    if isinstance(chosen, str) and HH_ASSISTANT in chosen:
        cut = chosen.rfind(HH_ASSISTANT, 0, len(os.path.commonprefix([chosen, rejected])))
        if cut >= 0:
            cut += len(HH_ASSISTANT)
            return chosen[:cut], chosen[cut:], rejected[cut:]
    if not chosen or not rejected or chosen[0] != rejected[0]:
        return chosen[:0], chosen, rejected  # nothing shared (where TRL's would fail, or take the last character)
    from trl.data_utils import extract_prompt as trl_extract_prompt

    example = trl_extract_prompt({"chosen": chosen, "rejected": rejected})
    return example["prompt"], example["chosen"], example["rejected"]


def _is_conversational(value: Any) -> bool:
    from trl.data_utils import is_conversational

    return bool(value) and is_conversational({"prompt": value})  # TRL's fails on an empty list


def extract_prompt_batch(batch):
    """TRL's `maybe_extract_prompt` per row: extract unless a row's prompt and chosen are both text or both messages."""
    prompts, chosen, rejected = [], [], []
    implicit = "prompt" not in batch
    given = [None] * len(batch["chosen"]) if implicit else batch["prompt"]
    for p, c, r in zip(given, batch["chosen"], batch["rejected"]):
        # A text prompt beside conversations: the conversations hold it (TRL's implicit form). A conversational
        # prompt beside text replies is the prompt itself (rendered to text with them), never dropped.
        if implicit or (not _is_conversational(p) and _is_conversational(c)):
            p, c, r = extract_prompt(c, r)
        prompts.append(p)
        chosen.append(c)
        rejected.append(r)
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


def extract_prompts(dataset: Dataset, num_proc: int | None, report: LoadReport) -> Dataset:
    """`extract_prompt_batch` over the dataset; the report says how the prompts were found."""
    dataset = dataset.map(extract_prompt_batch, batched=True, num_proc=num_proc, desc="Extracting prompts")
    report.prompt = report.prompt or describe_extraction(dataset)
    return dataset


def describe_extraction(dataset: Dataset) -> str:
    """How the implicit prompts were found: at the last shared HH turn, the shared start, or messages."""
    import pyarrow as pa
    import pyarrow.compute as pc

    prompts = dataset.with_format("arrow")["prompt"]
    if not (pa.types.is_string(prompts.type) or pa.types.is_large_string(prompts.type)):
        return "implicit prompt: the messages chosen and rejected share at the start"
    hh, empty = (pc.sum(pc.ends_with(prompts, HH_ASSISTANT)).as_py() or 0), (pc.sum(pc.equal(prompts, "")).as_py() or 0)
    turn = json.dumps(HH_ASSISTANT)
    if hh == len(prompts):
        text = f"implicit prompt, extracted at the last shared {turn}"
    elif hh:
        text = f"implicit prompt, extracted at the last shared {turn} ({hh} rows) or the longest shared start"
    else:
        text = "implicit prompt: the longest start chosen and rejected share"
    return text + (f" ({empty} with nothing shared: empty prompt)" if empty else "")


def fill_prompts(dataset: Dataset, num_proc: int | None) -> Dataset:
    """An empty prompt for rows without one (no `prompt` column, or a missing value)."""
    if "prompt" not in dataset.column_names:
        return dataset.map(_empty_prompts_batch, batched=True, desc="Adding empty prompts")
    if _has_nulls(dataset, "prompt"):
        return dataset.map(_fill_prompts_batch, batched=True, num_proc=num_proc, desc="Filling prompts")
    return dataset


def _has_nulls(dataset: Dataset, column: str) -> bool:
    if dataset._indices is None:
        return dataset.data.column(column).null_count > 0
    return bool(len(dataset.filter(_prompt_is_null_batch, batched=True, input_columns=[column], keep_in_memory=True)))


def _prompt_is_null_batch(prompts):
    return [p is None for p in prompts]


def _fill_prompts_batch(batch):
    return {"prompt": ["" if p is None else p for p in batch["prompt"]]}


def _empty_prompts_batch(batch):
    return {"prompt": [""] * len(next(iter(batch.values())))}
