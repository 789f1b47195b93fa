"""`connbench report SWEEP`: figures and REPORT.md from the results store.

Reads only the store (``connbench.results.store.load``), never the runner or torch; figure 7 and
the butterfly check import ``connbench.nn.structures`` lazily. Heavy imports (pandas,
matplotlib) happen inside ``render_report`` so that ``connbench list`` stays fast.

Layout written::

    <out>/<sweep>/REPORT.md
    <out>/<sweep>/REPORT.html      (the same content for a browser)
    <out>/<sweep>/figures/<name>.png
"""

from __future__ import annotations

from pathlib import Path

from connbench.files import atomic_write


def sweep_name(sweep: str) -> str:
    """A sweep given as a TOML path reports under its file name."""
    return Path(sweep).stem if sweep.endswith(".toml") else sweep


def render_report(df, sweep: str, out_dir: str, dpi: int | None = None,
                  matrices: bool = True, butterfly_check=None,
                  catalogue: dict | None = None, preface: list[str] | None = None) -> Path:
    """Write REPORT.md and the figures for a results frame; return the REPORT.md path.

    ``catalogue`` is the results' catalogue (``connbench.results.catalogue.read``):
    structure order and styles, task sizes. ``preface``: Markdown lines put right under
    the title (what is missing, see ``connbench.report.completeness``).
    """
    from connbench.report import data as D
    from connbench.report.claims import all_claims
    from connbench.report.figures import FIGURES
    from connbench.report.html import to_html
    from connbench.report.markdown import render
    from connbench.report.plotting import DEFAULT_DPI, style_context
    from connbench.report.style import assign_styles, use_catalogue

    use_catalogue(catalogue)
    df = D.prepare(df)
    df.attrs["catalogue"] = dict(catalogue or {})
    styles = assign_styles(df["label"])
    root = Path(out_dir) / sweep
    fig_dir = root / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, str | None] = {}
    for spec in FIGURES:
        path = fig_dir / f"{spec.name}.png"
        if spec.name == "matrices" and not matrices:
            reason = "not drawn (--no-matrices)"
        else:
            with style_context():
                reason = spec.draw(df, styles, str(path), dpi or DEFAULT_DPI)
        results[spec.name] = reason
        if reason is not None and path.exists():
            path.unlink()  # a stale figure from an earlier, richer run would mislead
    if not matrices and butterfly_check is None:
        butterfly_check = (None, ["structural check not run (--no-matrices)"])
    claims = all_claims(df, butterfly_check)
    text = render(df, sweep, results, claims)
    if preface:
        from connbench.report.completeness import with_preface

        text = with_preface(text, preface)
    report = root / "REPORT.md"
    html = to_html(text, f"connbench report: {sweep}")
    for path, content in ((report, text), (root / "REPORT.html", html)):
        blob = content.encode("utf-8")
        atomic_write(path, lambda fh, blob=blob: fh.write(blob))  # never half a report
    return report
