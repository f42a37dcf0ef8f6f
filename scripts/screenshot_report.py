#!/usr/bin/env python3
"""Screenshot a pcrm HTML report in headless chromium and check that every image loaded.

    .venv/bin/python scripts/screenshot_report.py runs/evaluate/report.html [--output shot.png]

Two checks: in the file, every <img> is a data: URI holding a PNG that decodes; in the
browser, a copy of the page with a tiny script is loaded with --dump-dom and must list no
image with naturalWidth 0. Installs Debian's chromium with apt-get when it is missing.
Exit status 1 when an image is broken.
"""

import argparse
import base64
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
# Marks <body> with the images that did not load, once the page (and so every image) has loaded.
PROBE = """<script>window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  document.body.setAttribute("data-probe", JSON.stringify({images: document.images.length, broken}));
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
        result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)
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
    if not sources:
        problems.append("the page has no images")
    return problems


def browser_check(page: str) -> list[str]:
    """Images the browser could not load (naturalWidth 0), read back with --dump-dom."""
    with tempfile.TemporaryDirectory(prefix="pcrm-probe-") as folder:
        probe = Path(folder) / "probe.html"
        probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r'data-probe="([^"]*)"', dom)
    if match is None:
        return ["the probe script did not run"]
    result = json.loads(match.group(1).replace("&quot;", '"'))
    return [f"browser: image {alt!r} did not load" for alt in result["broken"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="report.html written by pcrm report")
    parser.add_argument("--output", type=Path, help="screenshot PNG (default: beside the HTML, <name>.screenshot.png)")
    parser.add_argument("--window-size", default="1280,4000", help="width,height in pixels")
    args = parser.parse_args()
    if not args.html.is_file():
        parser.error(f"{args.html}: no such file")
    output = (args.output or args.html.with_suffix(".screenshot.png")).resolve()
    ensure_chromium()
    page = args.html.read_text(encoding="utf-8")
    problems = static_check(page) + browser_check(page)
    chromium(f"--screenshot={output}", f"--window-size={args.window_size}", "--hide-scrollbars", args.html.resolve().as_uri())
    if not output.is_file() or output.stat().st_size == 0:
        problems.append(f"{output}: no screenshot written")
    count = len(re.findall(r"<img\s", page))
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.html}: {count} images, {'all loaded' if not problems else f'{len(problems)} problem(s)'}; screenshot {output}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
