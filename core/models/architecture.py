"""A model's layers as plain blocks (name, kind, output shape, parameters): what the architecture drawing shows.

A nested transfer ``backbone`` is one block unless expanded; ``fold_blocks`` folds an expanded one back.
Drawing them is ``core.plots.architecture``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _backbone_label(model: Any) -> str:
    """Recognise a keras.applications network by its signature layer names."""
    names = {layer.name for layer in model.layers}
    if "block_1_expand" in names:
        return "MobileNetV2"
    if "stem_conv" in names:
        return "EfficientNetB0"
    if "block1_conv1" in names:
        return "VGG16"
    if "conv2_block1_concat" in names:
        return "DenseNet121"
    if "conv2_block1_0_conv" in names:
        return "ResNet50"
    return "Backbone"


def _shape(layer: Any) -> list[int]:
    """The output shape without the batch axis ([] when unknown or several outputs)."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError, RuntimeError):
        return []
    return [int(d) for d in shape[1:] if d is not None]


def _params(weights: Sequence[Any]) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _kind(layer: Any) -> str:
    from core.models.registry import layer_kind  # keeps this module importable without TensorFlow

    return layer_kind(layer)


def _block(layer: Any, group: str = "") -> dict[str, Any]:
    nested = hasattr(layer, "layers") and layer.name == "backbone"
    kind = "backbone" if nested else _kind(layer)
    block = {
        "name": layer.name,
        "type": f"{_backbone_label(layer)} backbone" if nested else type(layer).__name__,
        "kind": kind,
        "output_shape": _shape(layer),
        "params": _params(layer.weights),
        "trainable_params": _params(layer.trainable_weights),
        "group": group,
        "layers": len(layer.layers) - 1 if nested else 1,
    }
    return block


def architecture_blocks(model: Any, expand_backbone: bool = False) -> list[dict[str, Any]]:
    """One dict per layer (name, type, kind, output_shape, params, trainable_params, group, layers).

    A nested ``backbone`` is one block (``group="backbone"``, ``layers`` = its layer count) unless
    ``expand_backbone``, then one block per inner layer, each with ``group="backbone"``.
    """
    blocks: list[dict[str, Any]] = []
    for layer in model.layers:
        nested = hasattr(layer, "layers") and layer.name == "backbone"
        if nested and expand_backbone:
            inner = [sub for sub in layer.layers if type(sub).__name__ != "InputLayer"]
            label = f"{_backbone_label(layer)} backbone"
            for sub in inner:
                block = _block(sub, group=layer.name)
                block["group_type"] = label
                if block["kind"] == "input":
                    block["kind"] = "other"
                blocks.append(block)
        else:
            blocks.append(_block(layer, group="backbone" if nested else ""))
    return blocks


def fold_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold runs of blocks that belong to one group (an expanded backbone) back into a single block."""
    folded: list[dict[str, Any]] = []
    for block in blocks:
        group = block.get("group") or ""
        prev = folded[-1] if folded else None
        if group and block.get("kind") != "backbone" and prev is not None and prev.get("_run") == group:
            prev["params"] += int(block.get("params", 0))
            prev["trainable_params"] += int(block.get("trainable_params", 0))
            prev["layers"] += 1
            prev["output_shape"] = list(block.get("output_shape") or [])
            continue
        if group and block.get("kind") != "backbone":
            folded.append({
                "name": group, "type": block.get("group_type", "Backbone"), "kind": "backbone",
                "group": group, "_run": group,
                "output_shape": list(block.get("output_shape") or []), "params": int(block.get("params", 0)),
                "trainable_params": int(block.get("trainable_params", 0)), "layers": 1,
            })
            continue
        folded.append(dict(block))
    for block in folded:
        block.pop("_run", None)
    return folded


