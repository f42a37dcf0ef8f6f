#!/usr/bin/env python3
"""Screenshot a pcrm HTML report in headless chromium, the full page height at 1280 px, and check every section.

    .venv/bin/python scripts/screenshot_report.py runs/evaluate/report.html [--output shot.png] [--width 1280]

Checks: in the file, every <img> is a data: URI holding a PNG that decodes; in the browser (a copy of the page with
a tiny script, loaded with --dump-dom at the given width), every <section> of the file is laid out with its heading,
every image loaded (naturalWidth > 0) and no table, image or text runs past the right edge (a wide table must scroll
inside its box); then the screenshot is taken at the page's full height and each section's box in it must not be
blank. Installs Debian's chromium with apt-get when it is missing. Exit status 1 on any problem.
"""

import argparse
import base64
import html
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PNG_URI = "data:image/png;base64,"
# Once the page (and so every image) has loaded, marks <body> with its layout: page height, and per section its box,
# heading, tables (right edge, scroll and client widths, overflow style) and images (loaded, right edge).
PROBE = """<script>window.addEventListener("load", () => {
  const box = e => {
    const r = e.getBoundingClientRect();
    return {top: r.top + window.scrollY, height: r.height, right: r.right};
  };
  const sections = [...document.querySelectorAll("section")].map(s => {
    const h = s.querySelector("h2");
    return {...box(s), title: h ? h.textContent : "", heading: h ? h.getBoundingClientRect().height : 0,
      tables: [...s.querySelectorAll("table")].map(t => ({...box(t), scroll: t.scrollWidth, client: t.clientWidth,
                                                          overflow: getComputedStyle(t).overflowX})),
      images: [...s.querySelectorAll("img")].map(i => ({...box(i), alt: i.alt,
                                                        loaded: i.complete && i.naturalWidth > 0})),
      texts: [...s.querySelectorAll("p, h2, figcaption")].map(box)};
  });
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  document.body.setAttribute("data-probe", JSON.stringify({width: document.documentElement.clientWidth,
    height: document.documentElement.scrollHeight, images: document.images.length, broken, sections}));
});</script>"""


def ensure_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    print("installing chromium with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True)


def chromium(*args: str) -> str:
    """Run headless chromium with a throw-away profile; return its stdout."""
    with tempfile.TemporaryDirectory(prefix="pcrm-chromium-") as profile:
        result = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )
    if result.returncode != 0:
        raise SystemExit(f"chromium failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def static_check(page: str) -> list[str]:
    """Problems with the page's <img> sources: each must be a data: URI of a PNG that decodes."""
    problems = []
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    for i, source in enumerate(sources):
        if not source.startswith(PNG_URI):
            problems.append(f"image {i}: not an embedded PNG ({source[:40]!r})")
            continue
        try:
            with Image.open(io.BytesIO(base64.b64decode(source[len(PNG_URI) :], validate=True))) as image:
                image.load()
                if image.format != "PNG" or min(image.size) == 0:
                    problems.append(f"image {i}: {image.format} of size {image.size}")
        except Exception as err:  # binascii and PIL raise several types
            problems.append(f"image {i}: does not decode ({type(err).__name__}: {err})")
    return problems


def layout(page: str, width: int) -> dict | None:
    """The probe's layout of the page at `width` px, read back with --dump-dom (None: the script did not run)."""
    with tempfile.TemporaryDirectory(prefix="pcrm-probe-") as folder:
        probe = Path(folder) / "probe.html"
        probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = chromium(
            "--virtual-time-budget=10000",
            f"--window-size={width},900",
            "--hide-scrollbars",
            "--dump-dom",
            probe.as_uri(),
        )
    match = re.search(r'data-probe="([^"]*)"', dom)
    return None if match is None else json.loads(html.unescape(match.group(1)))


def browser_check(page: str, result: dict | None) -> list[str]:
    """Every section of the file laid out with its heading; images loaded; nothing past the right edge."""
    if result is None:
        return ["the probe script did not run"]
    problems = [f"browser: image {alt!r} did not load" for alt in result["broken"]]
    titles = [html.unescape(t) for t in re.findall(r"<section[^>]*>\s*<h2>(.*?)</h2>", page, flags=re.DOTALL)]
    laid_out = [s["title"] for s in result["sections"]]
    if laid_out != titles:
        problems.append(f"browser: sections {laid_out} differ from the file's {titles}")
    edge = result["width"] + 1
    for section in result["sections"]:
        name = section["title"] or "(untitled)"
        if section["heading"] <= 0 or section["height"] <= section["heading"]:
            problems.append(f"section {name!r}: heading or content not rendered (height {section['height']:.0f} px)")
        for i, table in enumerate(section["tables"]):
            if table["right"] > edge:
                problems.append(f"section {name!r}: table {i} cut off (right edge at {table['right']:.0f} px)")
            elif table["scroll"] > table["client"] + 1 and table["overflow"] not in ("auto", "scroll"):
                problems.append(
                    f"section {name!r}: table {i} is {table['scroll']} px wide "
                    f"in a {table['client']} px box, no scrolling"
                )
            elif table["scroll"] > table["client"] + 1:
                print(
                    f"note: section {name!r}: table {i} scrolls ({table['scroll']} px in {table['client']} px)",
                    file=sys.stderr,
                )
        for image in section["images"]:
            if image["right"] > edge:
                problems.append(
                    f"section {name!r}: image {image['alt']!r} runs past the right edge ({image['right']:.0f} px)"
                )
        if any(text["right"] > edge for text in section["texts"]):
            problems.append(f"section {name!r}: text runs past the right edge")
    return problems


def screenshot_check(path: Path, result: dict) -> list[str]:
    """The screenshot covers the whole page, and no section's box in it is blank."""
    with Image.open(path) as shot:
        shot = shot.convert("L")
        problems = (
            []
            if shot.height >= result["height"]
            else [f"{path}: {shot.height} px high, the page {result['height']} px"]
        )
        for section in result["sections"]:
            top, bottom = int(section["top"]), min(int(section["top"] + section["height"]), shot.height)
            low, high = shot.crop((0, top, shot.width, bottom)).getextrema() if bottom > top else (0, 0)
            if low == high:
                problems.append(f"section {section['title']!r}: blank in the screenshot (rows {top}..{bottom})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="report.html written by pcrm report")
    parser.add_argument("--output", type=Path, help="screenshot PNG (default: beside the HTML, <name>.screenshot.png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels (the height is the page's)")
    args = parser.parse_args()
    if not args.html.is_file():
        parser.error(f"{args.html}: no such file")
    output = (args.output or args.html.with_suffix(".screenshot.png")).resolve()
    ensure_chromium()
    page = args.html.read_text(encoding="utf-8")
    result = layout(page, args.width)
    problems = static_check(page) + browser_check(page, result)
    height = result["height"] if result else 4000
    chromium(
        f"--screenshot={output}",
        f"--window-size={args.width},{height}",
        "--hide-scrollbars",
        args.html.resolve().as_uri(),
    )
    if not output.is_file() or output.stat().st_size == 0:
        problems.append(f"{output}: no screenshot written")
    elif result:
        problems += screenshot_check(output, result)
    count = len(re.findall(r"<img\s", page))
    sections = len(result["sections"]) if result else 0
    for problem in problems:
        print(problem, file=sys.stderr)
    verdict = "all checked" if not problems else f"{len(problems)} problem(s)"
    print(f"{args.html}: {sections} sections, {count} images, {args.width}×{height} px: {verdict}; screenshot {output}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
