"""What rows hold, read back: a response as plain text, and a content hash of columns."""

import hashlib
import json

from datasets import Dataset


def as_text(value: str | list[dict[str, str]]) -> str:
    """A response as plain text: strings unchanged, messages joined by their contents."""
    if isinstance(value, str):
        return value
    return "\n".join(message["content"] for message in value)


def fingerprint(
    dataset: Dataset, columns: tuple[str, ...] = ("prompt", "chosen", "rejected"), batch_size: int = 10_000
) -> str:
    """Content hash of the given columns (stable across processes, machines and load paths).

    Streams Arrow batches of the values (never the whole column at once); each value is hashed
    as its canonical JSON, so the same content hashes the same whether read from JSONL, Parquet,
    CSV or a Hub repository.
    """
    digest = hashlib.sha256()
    for column in columns:
        if column not in dataset.column_names:
            continue
        digest.update(column.encode())
        for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
            values = batch[column]
            if all(type(v) is str for v in values):
                chunk = "\0".join(json.dumps(v, ensure_ascii=False) for v in values)
            else:
                chunk = "\0".join(json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values)
            if values:
                digest.update(chunk.encode())
                digest.update(b"\0")
    return digest.hexdigest()[:16]
