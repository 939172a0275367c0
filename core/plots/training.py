"""Training curves and the learning rate: the Train page's live charts (pure, built as dicts: cheap to redraw)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from core.plots.style import (
    BEST_COLOR,
    REGION_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    axis_of,
    base_layout,
    downsample,
    line_width,
)
from core.training.verdicts import Onset


def _epochs(values: Sequence[float] | None) -> tuple[list[int], list[float | None]]:
    """Epoch numbers (1-based) and values, NaN shown as gaps."""
    vals = [None if v is None or not math.isfinite(float(v)) else float(v) for v in (values or [])]
    return list(range(1, len(vals) + 1)), vals


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
    layout = base_layout(teacher_mode, 440)
    title_size = 22 if teacher_mode else 15
    layout.update(
        xaxis=axis_of(layout, domain=[0, 0.45], anchor="y", title={"text": "epoch"}, rangemode="tozero"),
        xaxis2=axis_of(layout, domain=[0.55, 1], anchor="y2", title={"text": "epoch"}, rangemode="tozero"),
        yaxis=axis_of(layout, anchor="x", rangemode="tozero"),
        yaxis2=axis_of(layout, anchor="x2", range=[0, 1.02], tickformat=".0%"),
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
    layout = base_layout(teacher_mode, 260)
    finite = [y for y in ys if y]
    log = bool(finite) and max(finite) / max(min(finite), 1e-12) > 10
    # A constant rate would autorange to [rate-1, rate+1] and read "0": pin linear axes to [0, max].
    yrange = {"type": "log"} if log else {"range": [0, max(finite, default=1.0) * 1.2]}
    layout.update(
        title={"text": "Learning rate", "font": {"size": (24 if teacher_mode else 18)}}, showlegend=False,
        xaxis=axis_of(layout, title={"text": "epoch"}, rangemode="tozero"),
        yaxis=axis_of(layout, title={"text": "step size"}, tickformat=".1e", **yrange),
    )
    layout.pop("_axis")
    trace = {"type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": "learning rate",
             "line": {"color": "#0f766e", "width": line_width(teacher_mode)},
             "hovertemplate": "epoch %{x}<br>learning rate %{y:.2e}<extra></extra>"}
    return go.Figure({"data": [trace], "layout": layout})
