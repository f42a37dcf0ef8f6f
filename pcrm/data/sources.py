"""Where preference data comes from, and opening it: the bundled data, files (optionally compressed), globs,
remote files, `save_to_disk` directories, local dataset repositories and Hub ids."""

import glob as globlib
import hashlib
import os
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, ReadInstruction, Value, load_dataset, load_from_disk

from pcrm.data.forensics import COMPRESSIONS, check_utf8, first_line, locate_json_error, warn_csv_na
from pcrm.data.formats import SCORE_FIELDS, parse_columns
from pcrm.errors import PcrmError

BUNDLED_DIR = Path(__file__).resolve().parent
BUNDLED = {"hh-rlhf-harmless": BUNDLED_DIR / "hh-rlhf-harmless"}
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")  # remote data files: hf://datasets/owner/name/file.jsonl.gz, https://...


def load_source(source, name: str, split: str, config_name: str | None, columns) -> tuple[Dataset, str]:
    """The raw split as a Dataset and the label that errors name (the file, or the source and split)."""
    if isinstance(source, Dataset):
        return source, name
    base, slice_ = parse_split(split, name)
    if name in BUNDLED:
        return _load_bundled(name, base, split, columns)
    label = name if not slice_ else f"{name} [{split}]"
    if REMOTE.match(name):
        return load_files(file_format(Path(name)), {"train": name}, f"train{slice_}", Path(name), columns, name), label
    path = Path(name).expanduser()
    if path.is_file():
        fmt = file_format(path)
        if path.stat().st_size == 0:
            raise PcrmError(f"{path}: the dataset is empty")
        return load_files(fmt, {"train": [str(path)]}, f"train{slice_}", path, columns), label
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return load_saved(path, base, split), label if (path / "state.json").exists() else f"{name} [{split}]"
        csv = folder_is_csv(path)
        return load_builder(str(path), config_name, split, name, csv=csv, columns=columns), f"{name} [{split}]"
    if globlib.has_magic(name):
        files = sorted(f for f in globlib.glob(os.path.expanduser(name), recursive=True) if os.path.isfile(f))
        if not files:
            raise PcrmError(f"{name}: no file matches this pattern")
        formats = {file_format(Path(f)) for f in files}
        if len(formats) > 1:
            raise PcrmError(f"{name}: the matching files mix formats ({', '.join(sorted(formats))})")
        return load_files(formats.pop(), {"train": files}, f"train{slice_}", Path(files[0]), columns), label
    if looks_like_path(name):
        raise PcrmError(f"{name}: no such file or directory, and not a bundled dataset ({', '.join(BUNDLED)})")
    return load_builder(name, config_name, split, name, csv=False, columns=columns), f"{name} [{split}]"


def _load_bundled(name: str, base: str, split: str, columns) -> tuple[Dataset, str]:
    folder = BUNDLED[name]
    splits = sorted(p.stem for p in folder.glob("*.jsonl"))
    if base not in splits:
        raise PcrmError(f"{name}: unknown split {base!r} (available: {', '.join(splits)})")
    files = {s: str(folder / f"{s}.jsonl") for s in splits}
    return load_files("json", files, split, folder / f"{base}.jsonl", columns), str(folder / f"{base}.jsonl")


def parse_split(split: str, name: str) -> tuple[str, str]:
    """`"train[:2000]"` -> `("train", "[:2000]")`."""
    match = re.fullmatch(r"\s*([\w.-]+)\s*(\[[^\]]*\])?\s*", str(split))
    if not match:
        raise PcrmError(
            f"{name}: cannot read split {split!r} (expected a name, optionally sliced: train, train[:2000], test[10%:])"
        )
    return match.group(1), match.group(2) or ""


def looks_like_path(name: str) -> bool:
    """A missing local path rather than a Hub id (`owner/name` or `name`)."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or any(name.lower().endswith(s) for s in (*FILE_FORMATS, *COMPRESSIONS, ".txt", ".tsv"))
    )


def file_format(path: Path) -> str:
    """The `datasets` builder of a data file, from its suffix (a compression suffix aside)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    fmt = FILE_FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise PcrmError(f"{path}: unknown format {path.suffix!r} (expected one of {', '.join(FILE_FORMATS)})")
    return fmt


def folder_is_csv(path: Path) -> bool:
    found = {_format_or_none(p) for p in list(path.glob("*.*")) + list(path.glob("data/**/*.*"))}
    found.discard(None)
    return found == {"csv"}


def _format_or_none(path: Path) -> str | None:
    try:
        return file_format(path)
    except PcrmError:
        return None


def csv_kwargs(first_file: Path, columns) -> dict:
    """Read every column as text (keeping 'NA', 'None', ... as text: only empty cells are missing), scores as floats."""
    import pandas as pd

    if not first_file.exists():  # a remote file: no header to peek at, so no per-column types
        return {"keep_default_na": False, "na_values": [""]}
    try:
        header = list(pd.read_csv(first_file, nrows=0).columns)
    except Exception as err:
        raise PcrmError(f"{first_file}: cannot read as csv ({first_line(err)})") from None
    score_columns = set(SCORE_FIELDS) | {parse_columns(columns, str(first_file)).get(f) for f in SCORE_FIELDS}
    features = Features({c: Value("float64") if c in score_columns else Value("string") for c in header})
    return {"features": features, "keep_default_na": False, "na_values": [""]}


def load_files(fmt: str, data_files: dict, split: str, first: Path, columns, label: str | None = None) -> Dataset:
    """`datasets.load_dataset(fmt, data_files=...)`, its errors naming the file (and the JSON line) at fault."""
    if fmt in ("json", "csv"):
        check_utf8(f for files in data_files.values() for f in ([files] if isinstance(files, (str, Path)) else files))
    kwargs = csv_kwargs(first, columns) if fmt == "csv" else {}
    try:
        dataset = load_dataset(fmt, data_files=data_files, split=split, **kwargs)
    except PcrmError:
        raise
    except Exception as err:
        if fmt == "json" and first.suffix.lower() in (".json", ".jsonl") and first.is_file():
            locate_json_error(first)
        raise PcrmError(f"{label or first}: cannot read as {fmt} ({first_line(err)})") from None
    if fmt == "json" and dataset.column_names == ["data"] and len(dataset) == 1:  # {"data": [rows]}
        dataset = load_dataset(fmt, data_files=data_files, split=split, field="data")
    if fmt == "csv":
        warn_csv_na(dataset, first)
    return dataset


def load_builder(path: str, config_name: str | None, split: str, name: str, csv: bool, columns) -> Dataset:
    """`datasets.load_dataset` on a dataset repository: a local folder or a Hub id."""
    kwargs = {}
    if csv:
        first = sorted(p for p in Path(path).rglob("*.csv"))[0]
        kwargs = csv_kwargs(first, columns)
    try:
        dataset = load_dataset(path, config_name, split=split, **kwargs)
    except Exception as err:
        message = first_line(err)
        unknown = re.search(r"Unknown split \"?'?([^\"'.]+)\"?'?\. Should be one of \[(.*)\]", message)
        if unknown:
            available = ", ".join(s.strip(" '\"") for s in unknown.group(2).split(","))
            raise PcrmError(f"{name}: unknown split {unknown.group(1)!r} (available: {available})") from None
        what = "local dataset folder" if Path(path).is_dir() else "bundled name, local file/folder, or Hub dataset"
        raise PcrmError(f"{name}: cannot load as a {what} ({message})") from None
    if isinstance(dataset, DatasetDict):  # split=None never reaches here; defensive
        raise PcrmError(f"{name}: name one split (available: {', '.join(dataset)})")
    if csv:
        warn_csv_na(dataset, Path(path))
    return dataset


def load_saved(path: Path, base: str, split: str) -> Dataset:
    """A split of a `save_to_disk` directory (a Dataset or a DatasetDict), sliced as `split` says."""
    try:
        data = load_from_disk(str(path))
    except Exception as err:
        raise PcrmError(f"{path}: not a Hugging Face dataset directory ({first_line(err)})") from None
    if isinstance(data, DatasetDict):
        if base not in data:
            raise PcrmError(f"{path}: unknown split {base!r} (available: {', '.join(data)})")
        data = data[base]
    else:
        split = re.sub(r"^\s*[\w.-]+", base, split)
    try:
        instruction = ReadInstruction.from_spec(split).to_absolute({base: len(data)})[0]
    except Exception as err:
        raise PcrmError(f"{path}: cannot apply split {split!r} ({first_line(err)})") from None
    if (instruction.from_, instruction.to) != (0, len(data)):
        data = data.select(range(instruction.from_, instruction.to))
    return data


def verify_bundled_checksums(name: str = "hh-rlhf-harmless") -> None:
    """Check the vendored files against their SHA256SUMS."""
    folder = BUNDLED[name]
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        expected, filename = line.split()
        actual = hashlib.sha256((folder / filename).read_bytes()).hexdigest()
        if actual != expected:
            raise PcrmError(f"{folder / filename}: checksum mismatch (bundled data is corrupted)")
