"""Why a data file does not read, said with its file and line: bad UTF-8, a JSON line that does not parse,
CSV cells pandas would read as missing, and the one line of a library error worth showing."""

import codecs
import json
import logging
import os
from pathlib import Path

from datasets import Dataset

from pcrm.errors import PcrmError

logger = logging.getLogger("pcrm")
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
# pandas' default missing-value strings (pandas._libs.parsers.STR_NA_VALUES): cells that read_csv would turn into NaN.
PANDAS_NA_STRINGS = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)


def check_utf8(files) -> None:
    """Text data files must be UTF-8 (the JSON reader would otherwise replace bad bytes silently)."""
    for file in files:
        if not os.path.isfile(file) or str(file).lower().endswith(COMPRESSIONS):
            continue  # remote or compressed: datasets decodes
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    raise PcrmError(
                        f"{file}: not UTF-8 text (invalid byte 0x{block[err.start]:02x} at byte {offset + err.start})"
                    ) from None
                offset += len(block)


def locate_json_error(path: Path) -> None:
    """Name the line of a JSON/JSONL file that does not parse (only on the error path, streamed)."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data": JSON lines in a .json file
                raise PcrmError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        else:
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise PcrmError(f"{path}: expected a JSON list of objects")
            return
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PcrmError(f"{path}: line {line_number}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise PcrmError(f"{path}: line {line_number}: expected a JSON object")


def warn_csv_na(dataset: Dataset, path: Path) -> None:
    """Warn about text cells such as 'NA' or 'None' that were kept as text where pandas would read them as missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    na = pa.array([s for s in PANDAS_NA_STRINGS if s])
    counts = {}
    for name in dataset.column_names:
        column = dataset.data.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            count = pc.sum(pc.is_in(column, value_set=na.cast(column.type))).as_py() or 0
            if count:
                counts[name] = count
    if counts:
        detail = ", ".join(f"{n} in {c!r}" for c, n in counts.items())
        logger.warning(
            "%s: %d cell(s) such as 'NA' or 'None' kept as text (pandas would read them as missing): %s",
            path,
            sum(counts.values()),
            detail,
        )


def first_line(err: BaseException) -> str:
    """The error's type and first line (and its cause's), for a one-line message."""
    while not str(err).strip() and err.__cause__ is not None:  # e.g. DatasetGenerationError -> its cause
        err = err.__cause__
    text = str(err).strip().splitlines()
    cause = err.__cause__
    detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    if cause is not None and str(cause).strip():
        detail += f"; {type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    return detail
