"""Matplotlib plumbing shared by the figures: backend, deterministic saving, legends."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless, and the only backend whose PNG bytes we pin

import matplotlib.pyplot as plt  # noqa: E402

# No "Software" (matplotlib version) or dates in the PNG: the bytes depend only on the data.
PNG_METADATA = {"Software": None}
DEFAULT_DPI = 110

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "connbench",
}


def new_figure(nrows: int, ncols: int, width: float, height: float, **kw):
    """A figure with the report's style; squeeze off so axes is always 2-D."""
    kw.setdefault("layout", "constrained")  # makes room for suptitle and outside legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    return fig, axes


def style_context():
    return plt.rc_context(RC)


def save(fig, path: str, dpi: int = DEFAULT_DPI) -> None:
    # tight bbox: the figure legend sits outside the panels, to the right
    fig.savefig(path, dpi=dpi, metadata=PNG_METADATA, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def figure_legend(fig, handles, labels, title: str | None = None, ncol: int = 1) -> None:
    """One legend for the whole figure, to the right of the panels."""
    fig.legend(handles, labels, loc="outside right center", title=title, frameon=False,
               ncol=ncol)


def hide_unused(axes, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def unique_handles(axes_list):
    """Legend handles of several axes without duplicate labels, in first-seen order."""
    seen, handles, labels = set(), [], []
    for ax in axes_list:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            if lab not in seen and not lab.startswith("_"):
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    return handles, labels


def hidden_axis(ax, hiddens) -> None:
    """Log-2 x axis ticked at the measured hidden sizes, written as plain numbers."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    hs = sorted({int(h) for h in hiddens})
    ax.set_xticks(hs, [str(h) for h in hs])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plain_log(axis) -> None:
    """Log axis labels 20, 40, 100 rather than 2×10¹, minor labels when the range is
    short (so that a range inside one decade still has numbers)."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:,.0f}" if x >= 1 else f"{x:.3g}"

    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.4)))


def plain_log_y(ax) -> None:
    ax.set_yscale("log")
    _plain_log(ax.yaxis)


def plain_log_x(ax) -> None:
    ax.set_xscale("log")
    _plain_log(ax.xaxis)


def count_x(ax, values) -> str:
    """Log x for counts; symlog when a zero (the `none` structure) must show. Returns
    the scale's name for the axis label."""
    vals = [v for v in values if v == v]
    if vals and min(vals) > 0:
        plain_log_x(ax)
        return "log scale"
    ax.set_xscale("symlog", linthresh=10)
    return "symlog scale: 0 shown"
