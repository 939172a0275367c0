"""The look every CNN Lab chart shares: fonts, colours, stable layouts, teacher mode, downsampling.

Every builder in ``core.plots`` takes ``teacher_mode``: big fonts and thick lines for a projector. Layouts
are stable (fixed heights, ``uirevision``) so a chart redrawn every second by a polling fragment keeps the
user's zoom and does not jump. Builders are pure: plain data in, ``go.Figure`` out, no numbers computed
that a page would need elsewhere (those live in ``core.explain``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

TRAIN_COLOR = "#2563eb"  # blue: training
VAL_COLOR = "#ea580c"  # orange: validation (blue/orange stays distinct for colour-blind readers)
TEST_COLOR = "#7c3aed"
BEST_COLOR = "#16a34a"
REGION_COLOR = "rgba(220, 38, 38, 0.12)"
SPLIT_COLORS = {"train": TRAIN_COLOR, "val": VAL_COLOR, "test": TEST_COLOR}
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
CHANNEL_COLORS = {"red": "#dc2626", "green": "#16a34a", "blue": "#2563eb", "gray": "#475569"}
# A colour-blind-safe palette (Okabe-Ito), one colour per run in comparisons.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
RUN_COLORS = qualitative.Dark24
MAX_BATCH_POINTS = 300


def style(fig: go.Figure, teacher_mode: bool = False, height: int | None = None) -> go.Figure:
    """Readable fonts, white background and a stable layout; bigger everything in teacher mode.

    No plotly template on purpose: Streamlit applies its own theme, and resolving a template deep-copies
    it on every call (~70 ms), which adds up on a page redrawn while a run trains next to it.
    """
    layout = base_layout(teacher_mode, height or 0)
    axis = layout.pop("_axis")
    if not height:
        layout.pop("height")
    fig.update_layout(**layout)
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    return fig


def line_width(teacher_mode: bool) -> float:
    """Line width for the main series."""
    return 5.0 if teacher_mode else 2.5


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int = MAX_BATCH_POINTS) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points by averaging equal bins (keeps the trend, drops per-batch noise)."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))]
    if len(pairs) <= max_points:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    size = len(pairs) / max_points
    out_x, out_y = [], []
    for b in range(max_points):
        chunk = pairs[int(b * size) : int((b + 1) * size)] or [pairs[min(int(b * size), len(pairs) - 1)]]
        out_x.append(chunk[-1][0])  # the bin's last x, so the line ends exactly at the newest batch
        out_y.append(sum(p[1] for p in chunk) / len(chunk))
    return out_x, out_y


def base_layout(teacher_mode: bool, height: int) -> dict[str, Any]:
    """The same look as ``style`` as a plain dict (the live charts are built as dicts: see below)."""
    base = 20 if teacher_mode else 14
    axis = {"title": {"font": {"size": base}}, "tickfont": {"size": base - 2}, "gridcolor": "#e5e7eb",
            "zeroline": False}
    return {
        "plot_bgcolor": "white", "paper_bgcolor": "white", "font": {"size": base}, "hoverlabel": {"font": {"size": base}},
        "legend": {"font": {"size": base}, "orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "margin": {"l": 60, "r": 20, "t": 70 if teacher_mode else 60, "b": 50},
        "uirevision": "keep", "height": int(height * (1.25 if teacher_mode else 1)),
        "_axis": axis,
    }


def axis_of(layout: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**layout["_axis"], **extra}




def titled(fig: go.Figure, teacher_mode: bool, height: int | None = None, title: str | None = None) -> go.Figure:
    """``style`` plus an optional title at the top left."""
    style(fig, teacher_mode, height=height)
    if title:
        fig.update_layout(title={"text": title, "x": 0, "xanchor": "left"})
    return fig


def run_color(i: int) -> str:
    """A distinct colour for the i-th run of a group (stable across charts)."""
    return RUN_COLORS[i % len(RUN_COLORS)]


def finite_or_none(values: Sequence[Any] | None) -> list[float | None]:
    """Numbers as floats, anything missing or not finite as None (a gap in a line)."""
    out: list[float | None] = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f if math.isfinite(f) else None)
    return out
