"""Report sections: what a section is, and how commands store theirs in an output for `pcrm report` to render."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.io import atomic_write_bytes, slug, write_json

SECTIONS_DIR = "sections"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Section:
    """One report section: a paragraph, a table (one dict per row, keys are the columns) and PNG images."""

    title: str
    text: str = ""
    rows: list[dict] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def add_section(directory: str | Path, title: str, rows=(), images=(), text: str = "") -> Path:
    """Add a section to the report of an evaluation directory; `pcrm report` renders it after
    the built-in sections. Stored as `directory/sections/<title>.json` (same title: replaced), its PNG images
    copied beside it (a report embeds only files from inside its own folder)."""
    folder = Path(directory) / SECTIONS_DIR
    names = []
    for i, image in enumerate(images):
        names.append(f"{SECTIONS_DIR}/{slug(title)}-{i}.png")
        atomic_write_bytes(Path(directory) / names[-1], _png_bytes(Path(image), title))
    path = folder / f"{slug(title)}.json"
    write_json(path, asdict(Section(title, text, [dict(row) for row in rows], names)))
    return path


def store_sections(directory: str | Path, sections: list[Section]) -> None:
    """Store a command's own report sections in its output (`sections/NN-<title>.json`, in this order), so that
    `pcrm report --input DIRECTORY` renders them; their images are files inside `directory`, named relative to it."""
    for i, section in enumerate(sections):
        for name in section.images:
            _section_image(Path(directory), name, section.title)  # inside the folder, a PNG
        write_json(Path(directory) / SECTIONS_DIR / f"{i:02d}-{slug(section.title)}.json", asdict(section))


def extra_sections(directory: Path) -> list[Section]:
    """Sections stored by `add_section`, in file-name order."""
    sections = []
    for path in sorted((directory / SECTIONS_DIR).glob("*.json")):
        try:
            sections.append(Section(**read_json(path, "written by add_section")))
        except TypeError:
            raise PcrmError(f"{path}: not a report section (expected keys: title, text, rows, images)") from None
    return sections


def localised(section: Section, folder: Path, output: Path) -> Section:
    """`section` with its images (inside `folder`) copied beside the report (as <title>-<i>.png), named relative to
    it."""
    data = [_section_image(folder, image, section.title) for image in section.images]
    if output.resolve() == folder.resolve() and not any(name.startswith(f"{SECTIONS_DIR}/") for name in section.images):
        return section  # a command's own figures, already beside the report
    names = [f"{slug(section.title)}-{i}.png" for i in range(len(data))]
    for name, image in zip(names, data):
        if not (output / name).is_file() or (output / name).read_bytes() != image:
            atomic_write_bytes(output / name, image)
    return Section(section.title, section.text, section.rows, names)


def read_json(path: Path, hint: str):
    """The content of a JSON file the report reads; one line (with `hint`) when it is missing or not JSON."""
    if not path.is_file():
        raise PcrmError(f"{path}: no such file ({hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PcrmError(f"{path}: invalid JSON ({err.msg})") from None


def _section_image(folder: Path, name, title: str) -> bytes:
    """An image of a stored section, read only from inside the evaluation folder (links resolved first)."""
    if not isinstance(name, str) or not (folder / name).resolve().is_relative_to(folder.resolve()):
        raise PcrmError(
            f"{folder / SECTIONS_DIR}: image {name!r} of report section {title!r} is outside {folder} "
            "(a report embeds only files from inside its own folder)"
        )
    return _png_bytes(folder / name, title)


def _png_bytes(path: Path, title: str) -> bytes:
    if not path.is_file():
        raise PcrmError(f"{path}: image of report section {title!r} not found")
    data = path.read_bytes()
    if not data.startswith(PNG):
        raise PcrmError(f"{path}: image of report section {title!r} is not a PNG file")
    return data
