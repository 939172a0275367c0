"""Plotly figure builders: pure functions from plain data to ``go.Figure`` (no streamlit, no TensorFlow).

Every builder takes ``teacher_mode``: big fonts and thick lines for a projector. Layouts are stable
(fixed heights, ``uirevision``) so a chart redrawn every second by a polling fragment keeps the
user's zoom and does not jump.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from core.curves import Onset

TRAIN_COLOR = "#2563eb"  # blue: training
VAL_COLOR = "#ea580c"  # orange: validation (blue/orange stays distinct for colour-blind readers)
BEST_COLOR = "#16a34a"
REGION_COLOR = "rgba(220, 38, 38, 0.12)"
SPLIT_COLORS = {"train": TRAIN_COLOR, "val": VAL_COLOR, "test": "#7c3aed"}
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
MAX_BATCH_POINTS = 300


def style(fig: go.Figure, teacher_mode: bool = False, height: int | None = None) -> go.Figure:
    """Readable fonts, white background and a stable layout; bigger everything in teacher mode.

    No plotly template on purpose: Streamlit applies its own theme, and resolving a template deep-copies
    it on every call (~70 ms), which adds up on a page redrawn while a run trains next to it.
    """
    layout = _base_layout(teacher_mode, height or 0)
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


def _epochs(values: Sequence[float] | None) -> tuple[list[int], list[float | None]]:
    """Epoch numbers (1-based) and values, NaN shown as gaps."""
    vals = [None if v is None or not math.isfinite(float(v)) else float(v) for v in (values or [])]
    return list(range(1, len(vals) + 1)), vals


def _base_layout(teacher_mode: bool, height: int) -> dict[str, Any]:
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


def _axis(layout: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**layout["_axis"], **extra}


def training_curves(
    history: Mapping[str, Sequence[float]],
    batch_history: Sequence[Mapping[str, float]] | None = None,
    onset: Onset | None = None,
    epoch_marker: float | None = None,
    teacher_mode: bool = False,
) -> go.Figure:
    """Loss and accuracy side by side, training vs validation, with the overfitting onset marked.

    Built as a plain dict, not with make_subplots/add_trace: the Train page redraws it every second
    while a run trains, and the graph-object helpers cost ~0.2 s of GIL-holding Python per call,
    which slows the training thread next to it many times over (GIL convoy on a 2-core laptop).
    """
    width = line_width(teacher_mode)
    traces: list[dict[str, Any]] = []
    for axis, metric in (("", "loss"), ("2", "accuracy")):
        xref, yref = f"x{axis}", f"y{axis}"
        if batch_history:
            xs, ys = downsample([b.get("x", 0.0) for b in batch_history], [b.get(metric) for b in batch_history])
            if xs:
                traces.append({
                    "type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": "training (per batch)",
                    "legendgroup": "batch", "showlegend": axis == "", "xaxis": xref, "yaxis": yref,
                    "line": {"color": TRAIN_COLOR, "width": max(1.0, width / 2.5)}, "opacity": 0.35,
                    "hovertemplate": f"epoch %{{x:.2f}}<br>training {metric} (batch) %{{y:.4f}}<extra></extra>",
                })
        for prefix, label, color, dash in (("", "training", TRAIN_COLOR, "solid"), ("val_", "validation", VAL_COLOR, "dash")):
            xs, ys = _epochs(history.get(prefix + metric))
            if xs:
                traces.append({
                    "type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": label,
                    "legendgroup": label, "showlegend": axis == "", "xaxis": xref, "yaxis": yref,
                    "line": {"color": color, "width": width, "dash": dash}, "marker": {"size": width * 2.4},
                    "hovertemplate": f"epoch %{{x}}<br>{label} {metric} %{{y:.4f}}<extra></extra>",
                })
    layout = _base_layout(teacher_mode, 440)
    title_size = 22 if teacher_mode else 15
    layout.update(
        xaxis=_axis(layout, domain=[0, 0.45], anchor="y", title={"text": "epoch"}, rangemode="tozero"),
        xaxis2=_axis(layout, domain=[0.55, 1], anchor="y2", title={"text": "epoch"}, rangemode="tozero"),
        yaxis=_axis(layout, anchor="x", rangemode="tozero"),
        yaxis2=_axis(layout, anchor="x2", range=[0, 1.02], tickformat=".0%"),
        # Legend above the two subplot titles, so neither hides the other.
        legend={**layout["legend"], "y": 1.16},
        margin={**layout["margin"], "t": 120 if teacher_mode else 100},
        annotations=[
            {"text": "Loss (lower is better)", "x": 0.225, "y": 1.0, "xref": "paper", "yref": "paper",
             "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": title_size}},
            {"text": "Accuracy (higher is better)", "x": 0.775, "y": 1.0, "xref": "paper", "yref": "paper",
             "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": title_size}},
        ],
        shapes=[],
    )
    if onset is not None:
        _mark_onset(layout, onset, teacher_mode, len(history.get("loss") or []))
    if epoch_marker is not None:
        for axis in ("", "2"):
            layout["shapes"].append(_vline(epoch_marker, axis, {"color": "#6b7280", "width": 1.5, "dash": "dot"}))
    layout.pop("_axis")
    return go.Figure({"data": traces, "layout": layout})


def _vline(x: float, axis: str, line: dict[str, Any]) -> dict[str, Any]:
    return {"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1, "xref": f"x{axis}", "yref": f"y{axis} domain",
            "line": line}


def _mark_onset(layout: dict[str, Any], onset: Onset, teacher_mode: bool, epochs_shown: int) -> None:
    """The best epoch as a green line; the divergence region as a red band (labels inside the loss plot)."""
    label_font = 18 if teacher_mode else 12
    if onset.region:
        start, end = onset.region
        stop = max(end, start + 0.5)
        for axis in ("", "2"):
            layout["shapes"].append({"type": "rect", "x0": start, "x1": stop, "y0": 0, "y1": 1, "xref": f"x{axis}",
                                     "yref": f"y{axis} domain", "fillcolor": REGION_COLOR, "line": {"width": 0},
                                     "layer": "below"})
        layout["annotations"].append({"x": (start + stop) / 2, "y": 0.98, "xref": "x", "yref": "y domain",
                                      "yanchor": "top", "text": "overfitting", "showarrow": False,
                                      "font": {"color": "#b91c1c", "size": label_font + 2}})
    for axis in ("", "2"):
        layout["shapes"].append(_vline(onset.best_epoch, axis, {"color": BEST_COLOR, "width": 3 if teacher_mode else 2,
                                                                 "dash": "dash"}))
    # The label sits on the roomier side of the line so it is never cut off at the plot's edge.
    left_half = onset.best_epoch <= max(epochs_shown, 1) / 2
    layout["annotations"].append({"x": onset.best_epoch, "y": 0.02, "xref": "x", "yref": "y domain",
                                  "yanchor": "bottom", "xanchor": "left" if left_half else "right",
                                  "showarrow": False,
                                  "text": f" lowest validation loss (epoch {onset.best_epoch}) ",
                                  "bgcolor": "rgba(255,255,255,0.85)",
                                  "font": {"color": BEST_COLOR, "size": label_font}})


def learning_rate_chart(history: Mapping[str, Sequence[float]], teacher_mode: bool = False) -> go.Figure:
    """The learning rate per epoch (log scale when it changes by more than 10x); a dict, like the curves."""
    xs, ys = _epochs(history.get("lr"))
    layout = _base_layout(teacher_mode, 260)
    finite = [y for y in ys if y]
    log = bool(finite) and max(finite) / max(min(finite), 1e-12) > 10
    # A constant rate would autorange to [rate-1, rate+1] and read "0": pin linear axes to [0, max].
    yrange = {"type": "log"} if log else {"range": [0, max(finite, default=1.0) * 1.2]}
    layout.update(
        title={"text": "Learning rate", "font": {"size": (24 if teacher_mode else 18)}}, showlegend=False,
        xaxis=_axis(layout, title={"text": "epoch"}, rangemode="tozero"),
        yaxis=_axis(layout, title={"text": "step size"}, tickformat=".1e", **yrange),
    )
    layout.pop("_axis")
    trace = {"type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": "learning rate",
             "line": {"color": "#0f766e", "width": line_width(teacher_mode)},
             "hovertemplate": "epoch %{x}<br>learning rate %{y:.2e}<extra></extra>"}
    return go.Figure({"data": [trace], "layout": layout})


def split_counts_chart(counts: Mapping[str, Mapping[str, int]], teacher_mode: bool = False) -> go.Figure:
    """Images per class, one bar per split (``counts[split][class]``), stacked."""
    fig = go.Figure()
    classes: list[str] = []
    for per_class in counts.values():
        classes.extend(c for c in per_class if c not in classes)
    for split, per_class in counts.items():
        fig.add_trace(go.Bar(
            x=classes, y=[per_class.get(c, 0) for c in classes], name=SPLIT_NAMES.get(split, split),
            marker_color=SPLIT_COLORS.get(split), hovertemplate="%{x}<br>%{y} images<extra>" + SPLIT_NAMES.get(split, split) + "</extra>",
        ))
    fig.update_layout(barmode="stack", title="Images per class and split")
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="images")
    style(fig, teacher_mode, height=380)
    # Legend in split order (stacked bars default to reversed), top right, clear of the title.
    return fig.update_layout(legend={"traceorder": "normal", "x": 1, "xanchor": "right"})


def size_chart(top_sizes: Sequence[Mapping[str, Any]], teacher_mode: bool = False) -> go.Figure:
    """The commonest image sizes (``[{"size": "WxH", "count": n}, ...]``) as a bubble chart of width vs height."""
    points = []
    for entry in top_sizes:
        w, _, h = str(entry.get("size", "")).partition("x")
        if w.isdigit() and h.isdigit():
            points.append((int(w), int(h), int(entry.get("count", 0))))
    biggest = max((p[2] for p in points), default=1) or 1
    fig = go.Figure(go.Scatter(
        x=[p[0] for p in points], y=[p[1] for p in points], mode="markers", customdata=[p[2] for p in points],
        marker={"size": [12 + 36 * math.sqrt(p[2] / biggest) for p in points], "color": TRAIN_COLOR, "opacity": 0.6},
        hovertemplate="%{x} × %{y} pixels<br>%{customdata} images<extra></extra>",
    ))
    fig.update_layout(title="Image sizes (width × height)", showlegend=False)
    fig.update_xaxes(title_text="width (pixels)", rangemode="tozero")
    fig.update_yaxes(title_text="height (pixels)", rangemode="tozero")
    return style(fig, teacher_mode, height=340)


def pixel_histogram_chart(pixel_stats: Mapping[str, Any], teacher_mode: bool = False) -> go.Figure:
    """How bright the pixels are, per channel (share of pixels per brightness bin, 0 = black, 255 = white)."""
    hist = pixel_stats.get("histogram") or {}
    edges = list(hist.get("bin_edges") or [])
    colors = {"red": "#dc2626", "green": "#16a34a", "blue": "#2563eb", "gray": "#475569"}
    fig = go.Figure()
    for name, counts in zip(pixel_stats.get("channel_names") or [], hist.get("counts") or []):
        total = sum(counts) or 1
        centers = [(edges[i] + edges[i + 1]) / 2 for i in range(min(len(counts), len(edges) - 1))]
        fig.add_trace(go.Scatter(
            x=centers, y=[c / total for c in counts[: len(centers)]], mode="lines", name=name,
            line={"color": colors.get(name), "width": line_width(teacher_mode), "shape": "hvh"},
            hovertemplate=f"{name} %{{x:.0f}}<br>%{{y:.1%}} of pixels<extra></extra>",
        ))
    fig.update_layout(title="Pixel brightness per channel")
    fig.update_xaxes(title_text="brightness (0 = black, 255 = white)", range=[0, 256])
    fig.update_yaxes(title_text="share of pixels", tickformat=".0%", rangemode="tozero")
    return style(fig, teacher_mode, height=320)


def category_bars(counts: Mapping[str, int], title: str, x_title: str, teacher_mode: bool = False) -> go.Figure:
    """A simple bar chart of counts per category (channels, formats, skip reasons, ...)."""
    fig = go.Figure(go.Bar(x=[str(k) for k in counts], y=list(counts.values()), marker_color=TRAIN_COLOR,
                           hovertemplate="%{x}<br>%{y} images<extra></extra>"))
    fig.update_layout(title=title, showlegend=False)
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text="images")
    return style(fig, teacher_mode, height=300)
