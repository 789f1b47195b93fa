"""REPORT.html: one self-contained file (figures inlined), a table of contents with
anchors, numbers right-aligned; and what a real browser makes of it."""

from __future__ import annotations

import base64
import re
import struct

import pytest

from connbench.report import browser
from connbench.report.html import is_number, to_html

# a 1x1 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")

TEXT = """# connbench report: t

## Setup

- one `sweep`, **two** arms

## Key tables

| structure | time per step | speedup | seeds solved |
|---|---|---|---|
| banded:width=3 | 1,234.5 | 12.5× | 3/3 |
| full | 0.125 [0.12, 0.158] | 1× | n/a |

## Figures

![Speedup vs full](figures/speed.png)

![Gone](figures/missing.png)

Figures: [speed](figures/speed.png)

Learning (supported):
| arm | median |
|---|---|
| full | 0.5 |
"""


@pytest.mark.parametrize("cell,num", [
    ("1,234.5", True), ("-4 %", True), ("3/3", True), ("12.5×", True), ("2.1e-05", True),
    ("0.125 [0.12, 0.158]", True), ("banded:width=3", False), ("n/a", False),
    ("H=64", False), ("**supported**", False)])
def test_numbers_are_recognised(cell, num):
    assert is_number(cell) is num


def test_page_is_self_contained_with_toc_and_aligned_numbers(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "speed.png").write_bytes(PNG)
    page = to_html(TEXT, "t", tmp_path)
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert 'src="figures/missing.png"' in page  # a missing figure keeps its link
    assert '<a href="#fig-speed">speed</a>' in page and 'id="fig-speed"' in page
    # the table of contents links every section to its anchor
    for anchor, title in (("setup", "Setup"), ("key-tables", "Key tables")):
        assert f'<a href="#{anchor}">{title}</a>' in page
        assert f'<h2 id="{anchor}">{title}</h2>' in page
    cells = re.findall(r'<td( class="num")?>([^<]*)</td>', page)
    assert [c for cls, c in cells if cls] == ["1,234.5", "12.5×", "3/3",
                                             "0.125 [0.12, 0.158]", "1×", "0.5"]
    assert "<strong>two</strong>" in page and "<code>sweep</code>" in page
    assert page.count("<table>") == 2  # also the one right under a line of text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(browser.find_browser() is None, reason="no Chromium installed")
def test_headless_chromium_renders_the_page(tmp_path):
    import matplotlib.image as mpimg

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "speed.png").write_bytes(PNG)
    page = tmp_path / "alone" / "REPORT.html"
    page.parent.mkdir()
    page.write_text(to_html(TEXT, "t", tmp_path))  # away from its figures: must not matter
    shot = browser.screenshot(page, tmp_path / "shot.png", window=(800, 600))
    assert _png_size(shot.read_bytes()) == (800, 600)
    pixels = mpimg.imread(shot)
    assert pixels[..., :3].std() > 0.01  # text and tables were drawn, not a blank page


def test_browser_cli_without_a_page_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(browser, "find_browser", lambda: "/bin/true")
    assert browser.main([str(tmp_path / "nope.html"), str(tmp_path / "x.png")]) == 2
    assert "no such page" in capsys.readouterr().err
    monkeypatch.setattr(browser, "find_browser", lambda: None)
    assert browser.main([str(tmp_path / "nope.html"), str(tmp_path / "x.png")]) == 2
    assert "apt-get install chromium" in capsys.readouterr().err
