"""REPORT.html: the same content as REPORT.md, for a browser.

A converter for the small Markdown subset markdown.py writes (headings, paragraphs,
bullet and numbered lists, pipe tables, images, links, bold, code), so the report
needs no Markdown package. Deterministic like the Markdown it comes from.
"""

from __future__ import annotations

import html
import re

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', out)
    out = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> list[str]:
    head, body = _cells(lines[0]), lines[2:]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    for line in body:
        out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(line)) + "</tr>")
    return out + ["</table>"]


def to_html(markdown: str, title: str) -> str:
    """HTML page of a Markdown text written by connbench.report.markdown."""
    lines = markdown.splitlines()
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"]
    i, open_list = 0, None
    while i < len(lines):
        line = lines[i]
        kind = ("ul" if line.startswith("- ") else
                "ol" if re.match(r"^\d+\. ", line) else None)
        if open_list and kind != open_list:
            out.append(f"</{open_list}>")
            open_list = None
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out += _table(block)
            continue
        if kind:
            if not open_list:
                out.append(f"<{kind}>")
                open_list = kind
            item = line[2:] if kind == "ul" else line.split(". ", 1)[1]
            out.append(f"<li>{_inline(item)}</li>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    if open_list:
        out.append(f"</{open_list}>")
    return "\n".join(out + ["</body></html>"]) + "\n"
