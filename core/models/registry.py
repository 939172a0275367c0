"""The architecture registry: every model ``build_model`` knows, and the facts pages show about a built model.

Every model takes raw pixels (float32 0..255, ``(S, S, C)``, C = 1 or 3) and ends in a softmax, so a saved
``.keras`` file needs no outside preprocessing (``core.models.scratch``, ``core.models.transfer``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from core.config import CustomArchitecture, ModelSpec
from core.errors import UserError
from core.models.runtime import keras_lock
from core.models.scratch import PRESETS, build_custom
from core.models.transfer import BACKBONE, BACKBONES, MOBILENET_ALPHAS, build_transfer, check_input


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``python -m core models``: what it is and where it comes from."""

    name: str
    kind: str  # "scratch" | "transfer" | "custom"
    description: str
    origin: str
    alphas: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



def list_models() -> list[ModelInfo]:
    """Every architecture ``build_model`` knows: scratch presets, the custom builder, transfer backbones."""
    infos = [ModelInfo(name, "scratch", desc, origin) for name, (_, desc, origin) in PRESETS.items()]
    infos.append(ModelInfo(
        "custom", "custom",
        "Your own CNN: conv blocks (filters, kernel, batch norm, pooling, dropout), Flatten or global-average "
        "head, dense layers, dropout and L2.",
        "CNN Lab's custom builder.",
    ))
    for key, entry in BACKBONES.items():
        infos.append(ModelInfo(
            f"transfer:{key}", "transfer", entry.description,
            f"keras.applications.{entry.factory} with ImageNet weights, frozen, plus a new head.",
            MOBILENET_ALPHAS if key == "mobilenet_v2" else (),
        ))
    return infos


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A fresh, uncompiled model for raw 0..255 pixels of ``input_shape`` with a softmax over the classes."""
    shape = check_input(input_shape, num_classes)
    if not spec.is_transfer and spec.name != "custom" and spec.name not in PRESETS:
        names = ", ".join([*PRESETS, "custom", *(f"transfer:{k}" for k in BACKBONES)])
        raise UserError(f"Unknown model '{spec.name}': choose one of {names}.")
    with keras_lock():  # Keras names layers from process-wide counters
        if spec.is_transfer:
            return build_transfer(spec, shape, num_classes)
        if spec.name == "custom":
            return build_custom(spec.custom or CustomArchitecture(), shape, num_classes)
        return PRESETS[spec.name][0](shape, num_classes)


def _shape_text(layer: layers.Layer) -> str:
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _params(weights: list[Any]) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


_KINDS: dict[str, tuple[str, ...]] = {
    "input": ("InputLayer",),
    "conv": ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose", "Conv1D", "Conv3D"),
    "pool": ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"),
    "norm": ("BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization"),
    "activation": ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"),
    "dropout": ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "AlphaDropout"),
    "reshape": ("Flatten", "Reshape", "ZeroPadding2D", "Cropping2D", "Permute", "UpSampling2D"),
    "merge": ("Add", "Concatenate", "Multiply", "Average", "Subtract", "Maximum", "Minimum"),
    "preprocess": ("Rescaling", "Normalization", "Resizing", "CenterCrop"),
    "dense": ("Dense", "EinsumDense"),
}


def layer_kind(layer: layers.Layer) -> str:
    """A coarse family for colouring and grouping: conv, pool, norm, dropout, dense, backbone, ..."""
    if layer.name == BACKBONE or isinstance(layer, keras.Model):
        return "backbone"
    if layer.name in ("preprocess", "gray_to_rgb", "upsample", "rescale"):
        return "preprocess"
    if layer.name == "predictions":
        return "output"
    cls = type(layer).__name__
    for kind, names in _KINDS.items():
        if cls in names:
            return kind
    return "other"


def layer_table(model: keras.Model) -> list[dict[str, Any]]:
    """One row per top-level layer (a nested backbone is one row): name, type, output_shape, params, trainable."""
    rows = []
    for layer in model.layers:
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__ if layer.name != BACKBONE else f"{type(layer).__name__} (backbone)",
            "output_shape": _shape_text(layer),
            "params": _params(layer.weights),
            "trainable": bool(layer.trainable and _params(layer.trainable_weights) > 0),
            "kind": layer_kind(layer),
        })
    return rows


def count_params(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts, as Keras counts them."""
    trainable = _params(model.trainable_weights)
    non_trainable = _params(model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}

