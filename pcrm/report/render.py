"""The report's two renderings: a self-contained HTML page and its Markdown twin, text escaped the same way."""

import base64
import html
from pathlib import Path

from pcrm.io import slug
from pcrm.report.sections import Section

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; display: block; max-width: 100%;
  overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; white-space: nowrap; }
th { white-space: normal; min-width: 4em; } td:last-child { white-space: normal; min-width: 16em; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: .8em; color: #777; }
"""


def render_html(title: str, sections: list[Section], output: Path) -> str:
    """A self-contained page: inline CSS, images (files in `output`) as base64 data URIs."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f'<section id="{slug(section.title)}"><h2>{html.escape(section.title)}</h2>')
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.rows:
            parts += _html_table(section.rows)
        for name in section.images:
            data = base64.b64encode((output / name).read_bytes()).decode("ascii")
            caption = html.escape(name)
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(rows: list[dict]) -> list[str]:
    header = _columns(rows)
    head = "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"
    body = ["<tr>" + "".join(f"<td>{html.escape(_cell(row.get(h)))}</td>" for h in header) + "</tr>" for row in rows]
    return [head, *body, "</tbody></table>"]


def render_markdown(title: str, sections: list[Section]) -> str:
    """The same report in Markdown, its text escaped as the HTML's is (no raw HTML, no links from data); images
    link to the PNG files beside it."""
    lines = [f"# {_md_line(title)}", ""]
    for section in sections:
        lines += [f"## {_md_line(section.title)}", ""]
        if section.text:
            lines += [_md(section.text), ""]
        if section.rows:
            header = _columns(section.rows)
            lines += [*_md_table(header, [[_cell(row.get(h)) for h in header] for row in section.rows]), ""]
        lines += [f"![{_md_line(name)}]({name})" for name in section.images] + ([""] if section.images else [])
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of string cells: one dict per row, keys are the columns."""
    header = list(rows[0])
    return "\n".join(_md_table(header, [[row[h] for h in header] for row in rows]))


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in cells]


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md(text: str) -> str:
    """Text for Markdown, escaped as for HTML (no raw HTML), and no link or image syntax from the data."""
    return html.escape(str(text), quote=False).replace("[", "\\[").replace("]", "\\]").replace("`", "\\`")


def _md_line(text: str) -> str:
    return " ".join(_md(text).splitlines())


def _md_cell(text: str) -> str:
    return _md_line(text).replace("|", "\\|")
