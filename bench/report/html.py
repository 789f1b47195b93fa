"""REPORT.html: the same content as REPORT.md, as one self-contained page.

Rendered by Python-Markdown (``markdown``, with its ``tables`` and ``toc`` extensions)
rather than a hand-written converter, plus two small tree processors of our own:

* figures are inlined as base64 ``data:`` URIs, so the page is one file that can be
  mailed or attached (a missing figure keeps its relative link), and links to a
  figure file jump to the inlined figure instead;
* table cells that hold a number (``1.23``, ``-4 %``, ``3/3``, ``12.5×``) are
  right-aligned, so digits line up.

A table of contents with anchors to every section follows the title. Deterministic
like the Markdown it comes from.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from xml.etree.ElementTree import Element

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
nav.toc { background: #fafafa; border: 1px solid #e3e3e3; padding: 0.2em 1em;
          display: inline-block; }
nav.toc ul { margin: 0.3em 0; }
"""

# a number, optionally signed, with thousands separators, a unit or a ratio: the
# cells to right-align (text such as "banded:width=3" stays left)
NUMBER = re.compile(r"^[+\-−~≈]?\s*\d[\d,]*(\.\d+)?(e[+\-]?\d+)?\s*"
                    r"(%|×|x|s|ms|us|µs|MiB|KiB|GiB|B)?(\s*/\s*\d+)?"
                    r"(\s*\[[^\]]*\])?$", re.IGNORECASE)


def is_number(text: str) -> bool:
    """Whether a table cell holds a number (and so is right-aligned)."""
    return bool(NUMBER.match(text.strip()))


class _Inline(Treeprocessor):
    """Figures as data URIs and numeric table cells right-aligned."""

    def __init__(self, md: markdown.Markdown, base: Path | None):
        super().__init__(md)
        self.base = base

    def run(self, root: Element) -> None:
        inlined: dict[str, str] = {}  # figure path -> the id of its inlined image
        for img in root.iter("img"):
            src = img.get("src", "")
            if self.base is None or src.startswith(("data:", "http:", "https:")):
                continue
            path = self.base / src
            if path.is_file():
                inlined[src] = "fig-" + re.sub(r"[^\w-]", "-", Path(src).stem)
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                img.set("src", f"data:{mime};base64,{data}")
                img.set("id", inlined[src])
        # "Figures: x" links to a figure file would break once the page travels alone:
        # they point at the inlined image instead
        for a in root.iter("a"):
            if a.get("href") in inlined:
                a.set("href", "#" + inlined[a.get("href")])
        for td in root.iter("td"):
            text = "".join(td.itertext())
            if text.strip() and is_number(text):
                td.set("class", "num")


class _InlineExtension(Extension):
    def __init__(self, base: Path | None):
        super().__init__()
        self.base = base

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - the API's name
        md.treeprocessors.register(_Inline(md, self.base), "connbench_inline", 5)


def _separate_tables(text: str) -> str:
    """A blank line before every table: GitHub's Markdown lets a table follow a line of
    text directly (REPORT.md does, after "Learning (supported):"), Python-Markdown
    needs the table to start a block."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("|") and out and out[-1].strip() and not out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return "\n".join(out) + "\n"


def to_html(text: str, title: str, base_dir: str | Path | None = None) -> str:
    """HTML page of a Markdown text; images are read relative to ``base_dir`` and
    inlined (``None``: links are kept as written)."""
    md = markdown.Markdown(extensions=[
        "tables", "toc", _InlineExtension(None if base_dir is None else Path(base_dir))],
        extension_configs={"toc": {"toc_depth": "2-3"}})
    body = md.convert(_separate_tables(text))
    toc = f'<nav class="toc"><strong>Contents</strong>{md.toc}</nav>'
    # after the title, or first when there is none
    body, n = re.subn(r"(</h1>)", r"\1\n" + toc.replace("\\", "\\\\"), body, count=1)
    if not n:
        body = toc + "\n" + body
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        body, "</body></html>"]) + "\n"
