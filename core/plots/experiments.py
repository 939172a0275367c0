"""Figures for experiments: overlaid curves of a group of runs, final accuracies, the learning curve, the grid.

Every builder takes ``teacher_mode`` (big fonts, thick lines) and puts what it drew into ``layout.meta``
so tests and captions can check it without parsing traces.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.plots.style import (
    BEST_COLOR,
    TEST_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    finite_or_none,
    line_width,
    run_color,
    style,
)

GAP_COLOR = "rgba(220, 38, 38, 0.12)"


def group_curves_figure(series: Sequence[Mapping[str, Any]], metric: str = "accuracy",
                        teacher_mode: bool = False) -> go.Figure:
    """Training and validation ``metric`` of several runs overlaid, one colour per run, side by side.

    ``series``: ``[{"label": str, "history": {metric: [...], "val_" + metric: [...]}, "color": optional}]``.
    """
    word = "accuracy" if metric == "accuracy" else "loss"
    better = "higher is better" if metric == "accuracy" else "lower is better"
    fig = make_subplots(rows=1, cols=2, shared_yaxes=metric == "accuracy", horizontal_spacing=0.06,
                        subplot_titles=(f"Training {word} (images it learns from)",
                                        f"Validation {word} (new images) - {better}"))
    width = line_width(teacher_mode)
    drawn = []
    for i, s in enumerate(series):
        color = s.get("color") or run_color(i)
        history = s.get("history") or {}
        for col, key in ((1, metric), (2, "val_" + metric)):
            ys = finite_or_none(history.get(key))
            if not ys:
                continue
            fig.add_trace(go.Scatter(
                x=list(range(1, len(ys) + 1)), y=ys, mode="lines", name=s["label"], legendgroup=s["label"],
                showlegend=col == 1, line={"color": color, "width": width, "dash": "solid" if col == 2 else "dot"},
                hovertemplate=f"{s['label']}<br>epoch %{{x}}<br>{'validation' if col == 2 else 'training'} "
                              f"{word} %{{y:.3f}}<extra></extra>",
            ), row=1, col=col)
        drawn.append(s["label"])
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    else:
        fig.update_yaxes(rangemode="tozero")
    style(fig, teacher_mode, height=400)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0}, margin={"b": 110})
    fig.update_annotations(font_size=20 if teacher_mode else 14)
    fig.update_layout(meta={"runs": drawn, "metric": metric})
    return fig


def final_accuracy_figure(rows: Sequence[Mapping[str, Any]], teacher_mode: bool = False,
                          title: str = "Final accuracy of each run") -> go.Figure:
    """Horizontal bars per run: training, validation (mean of the last epochs) and test accuracy."""
    rows = list(rows)
    labels = [r["run"] for r in rows]
    fig = go.Figure()
    for key, name, color in (("train_accuracy", "training", TRAIN_COLOR), ("val_accuracy", "validation", VAL_COLOR),
                             ("test_accuracy", "test", TEST_COLOR)):
        values = [r.get(key) for r in rows]
        fig.add_trace(go.Bar(
            y=labels, x=[v if v is not None else 0 for v in values], name=name, orientation="h", marker_color=color,
            text=[f"{v:.0%}" if v is not None else "" for v in values], textposition="outside",
            hovertemplate=f"%{{y}}<br>{name} accuracy %{{x:.1%}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", title=title, bargap=0.25)
    fig.update_xaxes(range=[0, 1.12], tickformat=".0%", title_text="accuracy")
    fig.update_yaxes(autorange="reversed", automargin=True)
    style(fig, teacher_mode, height=max(300, 100 + 62 * len(rows)))
    fig.update_layout(margin={"t": 120 if teacher_mode else 100})  # the title above the legend, not on it
    fig.update_layout(meta={"runs": labels})
    return fig


def learning_curve_figure(points: Sequence[Mapping[str, Any]], teacher_mode: bool = False) -> go.Figure:
    """Accuracy against the amount of training data: training vs validation, the gap between them shaded."""
    pts = sorted(points, key=lambda p: p["fraction"])
    xs = [p.get("images") or p["fraction"] * 100 for p in pts]
    use_images = all(p.get("images") for p in pts)
    x_title = "training images" if use_images else "share of the training data (%)"
    train = [p.get("train_accuracy") for p in pts]
    val = [p.get("val_accuracy") for p in pts]
    width = line_width(teacher_mode)
    fig = go.Figure()
    # The gap: a filled band from validation up to training ("what the model memorised").
    fig.add_trace(go.Scatter(x=xs, y=val, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=xs, y=train, mode="lines", line={"width": 0}, fill="tonexty", fillcolor=GAP_COLOR,
                             name="gap (memorised)", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=xs, y=train, mode="lines+markers", name="training", line={"color": TRAIN_COLOR,
                             "width": width, "dash": "dot"}, marker={"size": width * 3},
                             hovertemplate="%{x} images<br>training accuracy %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=val, mode="lines+markers", name="validation", line={"color": VAL_COLOR,
                             "width": width}, marker={"size": width * 3},
                             hovertemplate="%{x} images<br>validation accuracy %{y:.1%}<extra></extra>"))
    tests = [p.get("test_accuracy") for p in pts]
    if any(t is not None for t in tests):
        fig.add_trace(go.Scatter(x=xs, y=tests, mode="markers", name="test", marker={"color": TEST_COLOR,
                                 "size": width * 3.2, "symbol": "diamond"},
                                 hovertemplate="%{x} images<br>test accuracy %{y:.1%}<extra></extra>"))
    fig.update_layout(title="Learning curve: more data, less memorising")
    fig.update_xaxes(title_text=x_title, type="log" if use_images and len(xs) > 2 else "linear",
                     tickvals=xs, ticktext=[f"{x:g}" for x in xs])
    fig.update_yaxes(range=[0, 1.04], tickformat=".0%", title_text="accuracy")
    style(fig, teacher_mode, height=420)
    fig.update_layout(margin={"t": 120 if teacher_mode else 100})  # the title above the legend, not on it
    fig.update_layout(meta={"x": xs, "val": val, "train": train})
    return fig


def _axis(name: str, label: str, values: Sequence[Any], scale: str) -> dict[str, Any]:
    """One parallel-coordinates dimension: numbers as they are, log10 for log scales, indices for categories."""
    if scale == "category" or any(isinstance(v, str) for v in values):
        cats = list(dict.fromkeys(str(v) for v in values))
        return {"label": label, "values": [cats.index(str(v)) for v in values], "tickvals": list(range(len(cats))),
                "ticktext": cats, "range": [-0.25, len(cats) - 0.75] if len(cats) > 1 else [-1, 1]}
    nums = [float(v) for v in values]
    distinct = sorted(set(nums))
    if scale == "log" and all(v > 0 for v in nums):
        return {"label": label, "values": [math.log10(v) for v in nums], "tickvals": [math.log10(v) for v in distinct],
                "ticktext": [f"{v:g}" for v in distinct]}
    dim: dict[str, Any] = {"label": label, "values": nums, "tickvals": distinct, "ticktext": [f"{v:g}" for v in distinct]}
    if len(distinct) == 1:
        dim["range"] = [distinct[0] - 1, distinct[0] + 1]
    return dim


def parallel_coordinates_figure(rows: Sequence[Mapping[str, Any]], params: Sequence[str],
                                labels: Mapping[str, str] | None = None, scales: Mapping[str, str] | None = None,
                                metric: str = "val_accuracy", teacher_mode: bool = False) -> go.Figure:
    """One line per finished run through its hyper-parameter values to its ``metric``, coloured by the metric."""
    labels, scales = dict(labels or {}), dict(scales or {})
    done = [r for r in rows if r.get(metric) is not None]
    metric_label = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}.get(metric, metric)
    dims = [_axis(p, labels.get(p, p), [r[p] for r in done], scales.get(p, "linear")) for p in params] if done else []
    scores = [float(r[metric]) for r in done]
    if done:
        lo, hi = min(scores), max(scores)
        ticks = sorted({round(lo, 3), round((lo + hi) / 2, 3), round(hi, 3)})
        dims.append({"label": metric_label, "values": scores, "range": [lo - 0.01, hi + 0.01] if hi > lo else [lo - 0.05, hi + 0.05],
                     "tickvals": ticks, "ticktext": [f"{t:.0%}" for t in ticks]})
    size = 20 if teacher_mode else 14
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line={"color": scores, "colorscale": "Viridis", "showscale": bool(done),
              "cmin": min(scores) if scores else 0, "cmax": max(scores) if scores else 1,
              "colorbar": {"title": {"text": metric_label}, "tickformat": ".0%"}},
        labelfont={"size": size}, tickfont={"size": size - 2}, rangefont={"size": size - 4},
    ))
    fig.update_layout(title="Each line is one run: follow the bright lines to the best settings")
    style(fig, teacher_mode, height=420)
    fig.update_layout(margin={"l": 80, "r": 80, "t": 110, "b": 40})
    fig.update_layout(meta={"runs": len(done), "params": list(params), "metric": metric})
    return fig
