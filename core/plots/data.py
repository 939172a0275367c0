"""Figures of a dataset for the Data page: counts per class and split, sizes, pixel brightness, per-class stats."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.plots.style import CHANNEL_COLORS, SPLIT_COLORS, SPLIT_NAMES, TRAIN_COLOR, line_width, style


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
    fig = go.Figure()
    for name, counts in zip(pixel_stats.get("channel_names") or [], hist.get("counts") or []):
        total = sum(counts) or 1
        centers = [(edges[i] + edges[i + 1]) / 2 for i in range(min(len(counts), len(edges) - 1))]
        fig.add_trace(go.Scatter(
            x=centers, y=[c / total for c in counts[: len(centers)]], mode="lines", name=name,
            line={"color": CHANNEL_COLORS.get(name), "width": line_width(teacher_mode), "shape": "hvh"},
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


def channel_stats_figure(pixel_stats: Mapping[str, Any], teacher_mode: bool = False) -> go.Figure:
    """One histogram per channel (share of pixels per brightness bin) with its mean and +-1 std marked."""
    names = list(pixel_stats.get("channel_names") or [])
    hist = pixel_stats.get("histogram") or {}
    edges = list(hist.get("bin_edges") or [])
    counts = list(hist.get("counts") or [])
    means, stds = list(pixel_stats.get("mean") or []), list(pixel_stats.get("std") or [])
    n = max(len(names), 1)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{c}: mean {m:.0f}, std {s:.0f}" for c, m, s in zip(names, means, stds)] or [""])
    for i, (name, row) in enumerate(zip(names, counts), start=1):
        total = sum(row) or 1
        centers = [(edges[k] + edges[k + 1]) / 2 for k in range(min(len(row), len(edges) - 1))]
        color = CHANNEL_COLORS.get(name, TRAIN_COLOR)
        fig.add_trace(go.Bar(x=centers, y=[c / total for c in row[: len(centers)]], marker_color=color, name=name,
                             showlegend=False, hovertemplate=f"{name} %{{x:.0f}}<br>%{{y:.1%}} of pixels<extra></extra>"),
                      row=1, col=i)
        if i - 1 < len(means):
            m, s = means[i - 1], stds[i - 1] if i - 1 < len(stds) else 0.0
            fig.add_vrect(x0=max(m - s, 0), x1=min(m + s, 255), fillcolor="rgba(100,116,139,0.15)", line_width=0,
                          row=1, col=i)
            fig.add_vline(x=m, line={"color": "#111827", "width": 2, "dash": "dash"}, row=1, col=i)
    fig.update_xaxes(range=[0, 256], title_text="brightness")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    fig.update_yaxes(title_text="share of pixels", row=1, col=1)
    style(fig, teacher_mode, height=320)
    fig.update_annotations(font_size=18 if teacher_mode else 13)
    fig.update_layout(bargap=0.05, meta={"channels": names})
    return fig


def class_brightness_figure(class_stats: Mapping[str, Any], teacher_mode: bool = False) -> go.Figure:
    """Mean pixel value per class and channel (error bar = standard deviation): odd classes stand out."""
    names = list(class_stats.get("channel_names") or [])
    classes = class_stats.get("classes") or {}
    labels = list(classes)
    fig = go.Figure()
    for c, channel in enumerate(names):
        fig.add_trace(go.Bar(
            x=labels, y=[classes[k]["mean"][c] for k in labels], name=channel,
            marker_color=CHANNEL_COLORS.get(channel, TRAIN_COLOR),
            error_y={"type": "data", "array": [classes[k]["std"][c] for k in labels], "thickness": 1.2},
            hovertemplate=f"%{{x}}<br>{channel} mean %{{y:.0f}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", title="Average brightness per class (bars) and its spread (whiskers)",
                      showlegend=len(names) > 1)
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(range=[0, 260], title_text="pixel value (0-255)")
    style(fig, teacher_mode, height=340)
    fig.update_layout(meta={"classes": labels})
    return fig
