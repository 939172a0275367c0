"""Plotly figures for judging a trained model: confusion matrix, per-class bars, top-k, comparisons.

Pure functions from plain data (numpy arrays, lists, dicts) to ``go.Figure``; every builder takes
``teacher_mode`` (big fonts, thick lines for a projector). The confusion matrix carries a transparent
scatter of cell centres on top of the heatmap, because Plotly heatmap cells do not report clicks to
Streamlit's ``on_select``; ``selected_cell`` turns that selection back into (true, predicted). The
numbers behind the cells (rates, members) are ``core.explain.confusion``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from core.explain.confusion import confusion_rates
from core.plots.style import PALETTE, line_width, titled

SELECT_COLOUR = "#E69F00"
CORRECT_COLOUR = "#009E73"
WRONG_COLOUR = "#D55E00"
_MAX_CELL_TEXT_CLASSES = 25


# ---------------------------------------------------------------- confusion matrix


def confusion_matrix_figure(
    cm: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    normalize: bool = False,
    selected: tuple[int, int] | None = None,
    title: str | None = None,
    teacher_mode: bool = False,
) -> go.Figure:
    """Heatmap of true (rows) against predicted (columns); every cell is clickable and hovers with counts and rates.

    ``normalize`` colours and labels each cell by the share of its true class (row = 100 %);
    ``selected`` draws a frame around one (true, predicted) cell.
    """
    counts = np.asarray(cm, dtype=np.int64)
    n = counts.shape[0]
    names = [str(c) for c in class_names]
    row_rates, col_rates = confusion_rates(counts)
    z = row_rates if normalize else counts
    show_text = n <= _MAX_CELL_TEXT_CLASSES
    # Empty cells stay blank so the mistakes stand out (fastai-style matrices drown in zeros).
    text = [[("" if counts[i, j] == 0 else f"{row_rates[i, j]:.0%}" if normalize else f"{counts[i, j]}")
             for j in range(n)] for i in range(n)]
    ticks = list(range(n))
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=ticks,
            y=ticks,
            text=text if show_text else None,
            texttemplate="%{text}" if show_text else None,
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalize else max(1, int(counts.max(initial=0))),
            showscale=normalize,
            colorbar=dict(tickformat=".0%", title="share of true class") if normalize else None,
            hoverinfo="skip",
            name="confusion",
        )
    )
    tt, pp = np.meshgrid(ticks, ticks, indexing="ij")
    customdata = [
        [int(t), int(p), int(counts[t, p]), float(row_rates[t, p]), float(col_rates[t, p]), names[t], names[p]]
        for t, p in zip(tt.ravel(), pp.ravel())
    ]
    height = int(min(900, max(380, 150 + 46 * n)))
    cell_px = max(6, min(70, int((height - 150) / max(n, 1) * 0.9)))
    fig.add_trace(
        go.Scatter(
            x=pp.ravel().tolist(),
            y=tt.ravel().tolist(),
            mode="markers",
            marker=dict(symbol="square", size=cell_px, color="rgba(0,0,0,0)"),
            selected=dict(marker=dict(color="rgba(230,159,0,0.35)")),
            unselected=dict(marker=dict(opacity=0)),
            customdata=customdata,
            hovertemplate=(
                "true <b>%{customdata[5]}</b> → predicted <b>%{customdata[6]}</b><br>"
                "%{customdata[2]} images<br>"
                "%{customdata[3]:.1%} of the true %{customdata[5]} images<br>"
                "%{customdata[4]:.1%} of the images predicted %{customdata[6]}"
                "<extra>click to see the images</extra>"
            ),
            showlegend=False,
            name="cells",
        )
    )
    if selected is not None:
        t, p = selected
        fig.add_shape(
            type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5,
            line=dict(color=SELECT_COLOUR, width=line_width(teacher_mode) + 1),
        )
    axis = dict(tickmode="array", tickvals=ticks, ticktext=names, showgrid=False, zeroline=False,
                range=[-0.5, n - 0.5])
    fig.update_xaxes(title_text="predicted class", side="bottom", **axis)
    fig.update_yaxes(title_text="true class", scaleanchor="x", constrain="domain",
                     **{**axis, "range": [n - 0.5, -0.5]})
    fig.update_layout(hovermode="closest", hoverdistance=-1, clickmode="event+select", dragmode=False,
                      plot_bgcolor="white")
    titled(fig, teacher_mode, height=height, title=title)
    # Square cells: the width follows the height, so pages can draw it at this width with no gap.
    margin = {"l": 80 if teacher_mode else 64, "r": 16, "b": 90 if teacher_mode else 70, "t": 60 if title else 16}
    side = int(fig.layout.height) - margin["t"] - margin["b"]
    fig.update_layout(width=side + margin["l"] + margin["r"], margin=margin)
    return fig


def selected_cell(selection: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The (true, predicted) cell a Streamlit Plotly selection points at, or None.

    Reads the cell-centre scatter's ``customdata`` (true, predicted first), else rounds x/y; the last
    point wins when a box selected several cells.
    """
    if not selection:
        return None
    points = selection.get("points") if isinstance(selection, Mapping) else None
    if points is None and isinstance(selection, Mapping) and "selection" in selection:
        return selected_cell(selection["selection"])
    for point in reversed(list(points or [])):
        custom = point.get("customdata")
        if isinstance(custom, (list, tuple)) and len(custom) >= 2:
            try:
                return int(custom[0]), int(custom[1])
            except (TypeError, ValueError):
                pass
        x, y = point.get("x"), point.get("y")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return int(round(y)), int(round(x))
    return None


# ---------------------------------------------------------------- per class, confidence, top-k


def per_class_figure(per_class: Sequence[Mapping[str, Any]], *, teacher_mode: bool = False) -> go.Figure:
    """Grouped bars of precision, recall and F1 for every class (0..1)."""
    labels = [str(r["label"]) for r in per_class]
    fig = go.Figure()
    for i, key in enumerate(("precision", "recall", "f1")):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[float(r.get(key, 0.0)) for r in per_class],
                name="F1" if key == "f1" else key,
                marker_color=PALETTE[i],
                hovertemplate=f"%{{x}}: {key} %{{y:.1%}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category", title_text="class")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title_text="score")
    return titled(fig, teacher_mode, height=380)


def confidence_figure(confidences: np.ndarray, correct: np.ndarray, *, teacher_mode: bool = False) -> go.Figure:
    """Histogram of the model's confidence, right answers against wrong ones."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    fig = go.Figure()
    for mask, name, colour in ((correct, "right", CORRECT_COLOUR), (~correct, "wrong", WRONG_COLOUR)):
        fig.add_trace(
            go.Histogram(
                x=confidences[mask], name=f"{name} ({int(mask.sum())})", marker_color=colour, opacity=0.75,
                xbins=dict(start=0.0, end=1.0001, size=0.05),
                hovertemplate="confidence %{x}<br>%{y} images<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="confidence of the predicted class")
    fig.update_yaxes(title_text="images")
    return titled(fig, teacher_mode, height=320)


def top_k_figure(
    top: Sequence[tuple[str, float]],
    *,
    threshold: float | None = None,
    teacher_mode: bool = False,
) -> go.Figure:
    """Horizontal bars of the k most likely classes (most likely on top), with the 'not sure' line."""
    labels = [str(label) for label, _ in top][::-1]
    values = [float(p) for _, p in top][::-1]
    best = max(values) if values else 0.0
    sure = threshold is None or best >= threshold
    colours = [
        (CORRECT_COLOUR if sure else SELECT_COLOUR) if (v == best and i == len(values) - 1) else "#9AA5B1"
        for i, v in enumerate(values)
    ]
    fig = go.Figure(
        go.Bar(
            x=values, y=labels, orientation="h", marker_color=colours,
            text=[f"{v:.1%}" for v in values], textposition="auto",
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    if threshold is not None:
        fig.add_vline(
            x=threshold, line=dict(color="#555", dash="dash", width=line_width(teacher_mode) - 1),
            annotation_text=f"not sure below {threshold:.0%}", annotation_position="top",
        )
    fig.update_xaxes(range=[0, 1.02], tickformat=".0%", title_text="probability")
    fig.update_yaxes(type="category", automargin=True)
    return titled(fig, teacher_mode, height=max(200, 70 + 42 * len(labels)))


# ---------------------------------------------------------------- comparisons


def overlay_curves_figure(
    histories: Sequence[tuple[str, Mapping[str, Sequence[float]]]],
    metric: str = "accuracy",
    *,
    teacher_mode: bool = False,
) -> go.Figure:
    """Training (dashed) and validation (solid) ``metric`` per epoch for several runs, one colour a run."""
    fig = go.Figure()
    width = line_width(teacher_mode)
    for i, (name, history) in enumerate(histories):
        colour = PALETTE[i % len(PALETTE)]
        for key, dash, label in ((metric, "dot", "training"), (f"val_{metric}", "solid", "validation")):
            values = [float(v) for v in (history.get(key) or [])]
            if not values:
                continue
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                    name=f"{name} · {label}", legendgroup=name,
                    line=dict(color=colour, dash=dash, width=width), marker=dict(size=width * 2),
                    hovertemplate=f"{name}<br>{label} {metric}: %{{y:.3f}}<br>epoch %{{x}}<extra></extra>",
                )
            )
    longest = max((len(h.get(metric) or []) for _, h in histories), default=0)
    fig.update_xaxes(title_text="epoch", dtick=1 if longest <= 20 else None)
    fig.update_yaxes(title_text=metric, tickformat=".0%" if "acc" in metric else None)
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return titled(fig, teacher_mode, height=400)


def comparison_bars_figure(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]] = (("accuracy", "test accuracy"), ("macro_f1", "macro F1")),
    *,
    teacher_mode: bool = False,
) -> go.Figure:
    """Grouped bars of test scores (0..1) for several runs; ``rows`` hold ``name`` and the metric keys."""
    fig = go.Figure()
    names = [str(r["name"]) for r in rows]
    for i, (key, label) in enumerate(metrics):
        fig.add_trace(
            go.Bar(
                x=names, y=[r.get(key) for r in rows], name=label, marker_color=PALETTE[i % len(PALETTE)],
                text=[(f"{r[key]:.1%}" if r.get(key) is not None else "") for r in rows], textposition="auto",
                hovertemplate=f"%{{x}}<br>{label}: %{{y:.1%}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    return titled(fig, teacher_mode, height=340)
