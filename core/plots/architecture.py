"""The network drawn: a visualkeras-like, interactive Plotly picture of a model's layers (pure functions).

One box per layer, left to right: its face height grows with the spatial size (or the number of units), its
thickness with the channels and its depth with the width, all on a log scale so a 224-px input and a 10-unit
output fit in one picture. Colour says the layer family; hover shows shape and parameters; a transfer backbone
is folded into one box unless expanded. Input: the blocks of ``core.models.architecture.architecture_blocks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from core.models.architecture import fold_blocks

__all__ = ["KIND_COLORS", "KIND_LABELS", "architecture_figure"]

KIND_LABELS: dict[str, str] = {
    "input": "Input",
    "preprocess": "Preprocessing",
    "conv": "Convolution",
    "norm": "Normalisation",
    "activation": "Activation",
    "pool": "Pooling",
    "dropout": "Dropout",
    "reshape": "Reshape / flatten",
    "merge": "Merge",
    "backbone": "Pretrained backbone",
    "dense": "Dense",
    "output": "Output (softmax)",
    "other": "Other",
}
KIND_COLORS: dict[str, str] = {
    "input": "#9e9e9e",
    "preprocess": "#bcaaa4",
    "conv": "#1f77b4",
    "norm": "#17becf",
    "activation": "#bcbd22",
    "pool": "#ff7f0e",
    "dropout": "#7f7f7f",
    "reshape": "#8c564b",
    "merge": "#e377c2",
    "backbone": "#2ca02c",
    "dense": "#9467bd",
    "output": "#d62728",
    "other": "#c7c7c7",
}
KIND_EXPLAINED: dict[str, str] = {
    "input": "the raw pixels enter here",
    "preprocess": "scales or converts pixels the way the network expects",
    "conv": "slides small learned filters over the image to detect local patterns",
    "norm": "re-centres and re-scales activations so training stays stable",
    "activation": "keeps positive signals, cuts the rest",
    "pool": "shrinks the map, keeping the strongest (or average) response",
    "dropout": "randomly silences units while training, against memorising",
    "reshape": "rearranges the numbers, e.g. a map into one long vector",
    "merge": "combines two paths (skip connections)",
    "backbone": "a network pretrained on ImageNet, reused as a feature extractor",
    "dense": "every input connected to every unit: combines features",
    "output": "one probability per class",
    "other": "",
}
_LABEL_LIMIT = 40  # above this many boxes (an expanded backbone) per-box labels would overlap


# ============================================================================ geometry


def _box(block: dict[str, Any]) -> tuple[float, float, float]:
    """(face height, thickness, depth) of a block, each on a log scale of its output shape."""
    shape = [d for d in block.get("output_shape") or [] if d]
    if block.get("kind") == "backbone":  # its output is tiny; draw the whole pretrained stack as a big slab
        h, w, c = (shape[-3:] if len(shape) >= 3 else [1, 1, 1])
        return max(6.0, 0.8 + 0.9 * math.log2(1 + h)), 1.2 + 0.2 * math.log2(1 + c), max(1.2, 0.3 * math.log2(1 + w))
    if len(shape) >= 3:
        h, w, c = shape[-3], shape[-2], shape[-1]
        return 0.8 + 0.9 * math.log2(1 + h), 0.25 + 0.22 * math.log2(1 + c), 0.3 * math.log2(1 + w)
    if len(shape) == 2:
        return 0.8 + 0.9 * math.log2(1 + shape[0]), 0.25 + 0.22 * math.log2(1 + shape[1]), 0.3
    if len(shape) == 1:
        return 0.6 + 0.55 * math.log2(1 + shape[0]), 0.4, 0.15
    return 1.0, 0.35, 0.15


def _lighter(hex_color: str, amount: float) -> str:
    """Mix a #rrggbb colour with white: the lit top and side faces of a box."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    mix = [round(v + (255 - v) * amount) for v in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(d) for d in shape) if shape else "?"


def _hover(block: dict[str, Any], teacher_mode: bool) -> str:
    lines = [
        f"<b>{block['name']}</b>",
        f"{block['type']}" + (f" ({block['layers']} layers)" if block.get("layers", 1) > 1 else ""),
        f"output: {_shape_text(block.get('output_shape') or [])}",
        f"parameters: {int(block.get('params', 0)):,}",
    ]
    trainable = block.get("trainable_params")
    if trainable is not None and trainable != block.get("params"):
        lines.append(f"trainable: {int(trainable):,}")
    if teacher_mode and KIND_EXPLAINED.get(block["kind"]):
        lines.append(f"<i>{KIND_EXPLAINED[block['kind']]}</i>")
    return "<br>".join(lines)


def _layout(blocks: list[dict[str, Any]], labelled: bool) -> list[tuple[float, float, float, float, float]]:
    """(x, y centre, height, thickness, depth) per block; long networks wrap into rows to stay readable."""
    sizes = [_box(b) for b in blocks]
    steps = [max(w + d * 0.7 + 0.35, 0.9 if labelled else 0.0) for _, w, d in sizes]  # room for labels
    row_h = max((h + d * 0.7 for h, _, d in sizes), default=1.0) + 1.0
    total = sum(steps)
    rows = 1 if labelled else max(1, round(math.sqrt(total / (3.0 * row_h))))
    per_row = total / rows
    placed, x, y = [], 0.0, 0.0
    for (h, w, d), step in zip(sizes, steps):
        if x > 0 and x + step > per_row * 1.02:
            x, y = 0.0, y - row_h
        placed.append((x, y, h, w, d))
        x += step
    return placed


def architecture_figure(
    blocks: Sequence[dict[str, Any]], expand_backbone: bool = False, teacher_mode: bool = False
) -> go.Figure:
    """An interactive drawing of the network: boxes sized by output shape, coloured by layer family.

    ``blocks`` come from ``architecture_blocks``; an expanded backbone is folded into one box unless
    ``expand_backbone``.
    """
    blocks = [dict(b) for b in blocks]
    if not expand_backbone:
        blocks = fold_blocks(blocks)
    for block in blocks:
        if block.get("kind") not in KIND_COLORS:
            block["kind"] = "other"

    show_labels = len(blocks) <= _LABEL_LIMIT
    font = 13 if teacher_mode else 10
    placed = _layout(blocks, show_labels)
    faces: dict[str, dict[str, list[float | None]]] = {}
    hover: dict[str, dict[str, list[Any]]] = {}
    annotations = []
    low = min((y - h / 2 for _, y, h, _, _ in placed), default=0.0)
    for block, (x0, yc, h, w, d) in zip(blocks, placed):
        kind = block["kind"]
        dx = dy = d * 0.7
        top, bottom = yc + h / 2, yc - h / 2
        f = faces.setdefault(kind, {"fx": [], "fy": [], "sx": [], "sy": []})
        f["fx"] += [x0, x0 + w, x0 + w, x0, x0, None]
        f["fy"] += [bottom, bottom, top, top, bottom, None]
        f["sx"] += [x0, x0 + dx, x0 + w + dx, x0 + w, x0, None, x0 + w, x0 + w + dx, x0 + w + dx, x0 + w, x0 + w, None]
        f["sy"] += [top, top + dy, top + dy, top, top, None, bottom, bottom + dy, top + dy, top, bottom, None]
        hv = hover.setdefault(kind, {"x": [], "y": [], "text": []})
        hv["x"].append(x0 + w / 2)
        hv["y"].append(yc)
        hv["text"].append(_hover(block, teacher_mode))
        if show_labels:  # one baseline under the tallest box keeps the labels aligned
            label = block["type"] if kind == "backbone" else block["name"]
            if teacher_mode:
                label += f"<br>{_shape_text(block.get('output_shape') or [])}"
            annotations.append({"x": x0 + w / 2, "y": low - 0.2, "text": label, "showarrow": False,
                                "textangle": -40, "xanchor": "right", "yanchor": "top",
                                "font": {"size": font}})

    fig = go.Figure()
    for kind, color in KIND_COLORS.items():  # a fixed order keeps the legend stable while the custom builder redraws
        if kind not in faces:
            continue
        f, hv = faces[kind], hover[kind]
        name = KIND_LABELS[kind]
        fig.add_trace(go.Scatter(
            x=f["sx"], y=f["sy"], mode="lines", fill="toself", fillcolor=_lighter(color, 0.45),
            line={"color": color, "width": 1}, hoverinfo="skip", legendgroup=kind, showlegend=False,
            name=f"{name} (faces)",
        ))
        fig.add_trace(go.Scatter(
            x=f["fx"], y=f["fy"], mode="lines", fill="toself", fillcolor=color,
            line={"color": "#333333", "width": 1},
            hoverinfo="skip", legendgroup=kind, showlegend=True, name=name,
        ))
        fig.add_trace(go.Scatter(
            x=hv["x"], y=hv["y"], mode="markers", marker={"size": 18, "color": "rgba(0,0,0,0)"},
            hovertext=hv["text"], hovertemplate="%{hovertext}<extra></extra>",
            hoverlabel={"bgcolor": color}, legendgroup=kind, showlegend=False, name=f"{name} (hover)",
        ))
    total = sum(int(b.get("params", 0)) for b in blocks)
    rows = len({round(y, 6) for _, y, _, _, _ in placed}) - 1
    title = f"{len(blocks)} blocks, {total:,} parameters"
    if teacher_mode:
        title += " - data flows left to right; box height ~ image size, thickness ~ channels (log scale)"
    fig.update_layout(
        title={"text": title, "font": {"size": 16 if teacher_mode else 13}},
        annotations=annotations,
        showlegend=True,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "font": {"size": font + 1}},
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x", "scaleratio": 1},
        plot_bgcolor="white",
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        height=min(900, (520 if teacher_mode else 400) + 110 * rows),
        hovermode="closest",
        meta={"blocks": len(blocks), "params": total, "rows": rows + 1},
    )
    return fig
