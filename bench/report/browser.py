"""Open a page in a real headless browser and keep a screenshot of it.

``python -m connbench.report.browser REPORT.html SHOT.png`` (``make report-check``)
renders the page with Chromium (Debian: ``apt-get install chromium``), so that a
report is checked the way a reader sees it: figures decoded, tables laid out. It
exits 2 with one line when no Chromium is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1200, 2000)
# no network, no background services: the page must render from the file alone
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars")


def find_browser() -> str | None:
    """The path of an installed Chromium, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(page: str | Path, png: str | Path, window: tuple[int, int] = WINDOW,
               timeout_s: float = 120) -> Path:
    """Render ``page`` headless and write a ``window``-sized screenshot to ``png``."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (tried " + ", ".join(BROWSERS)
                                + "); on Debian: apt-get install chromium")
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page; run `connbench report SWEEP` first")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="connbench-chromium-") as profile:
        proc = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={window[0]},{window[1]}", page.as_uri()],
            capture_output=True, text=True, timeout=timeout_s)
    if not png.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{browser} wrote no screenshot (exit {proc.returncode}): {tail[0]}")
    return png


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m connbench.report.browser PAGE.html SHOT.png", file=sys.stderr)
        return 2
    try:
        png = screenshot(args[0], args[1])
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"connbench.report.browser: {exc}", file=sys.stderr)
        return 2
    print(f"screenshot of {args[0]} -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
