"""Transfer learning: a frozen ``keras.applications`` backbone with its own preprocessing inside, and a new head.

Transfer models (top-level layers, in order): ``pixels`` -> [``gray_to_rgb``] -> [``upsample`` to 32 px] ->
[``preprocess``] -> ``backbone`` (frozen, called with ``training=False``) -> ``pool`` -> ``head_dropout1`` ->
[``head_dense`` -> ``head_dropout2``] -> ``predictions``. Only built-in layers, so saved models load in safe mode.
A failed weight download becomes one sentence naming the file and the folder to put it in.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from core.config import ModelSpec
from core.errors import UserError
from core.models.runtime import keras_lock

BACKBONE = "backbone"
MIN_BACKBONE_SIZE = 32  # keras.applications refuse smaller inputs; smaller images are upsampled in the model
MOBILENET_ALPHAS = (0.35, 0.5, 1.0)
_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MOBILENET_ROWS = (96, 128, 160, 192, 224)
_TF_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class _Backbone:
    label: str
    factory: str  # keras.applications attribute
    preprocess: str  # "tf" | "caffe" | "torch" | "none": keras' preprocess_input mode
    description: str
    file: Callable[[float, int], str]  # weight file name from (alpha, rows)
    url_dir: str


def _mobilenet_file(alpha: float, rows: int) -> str:
    rows = rows if rows in _MOBILENET_ROWS else 224  # Keras loads the 224-px weights for any other size
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


BACKBONES: dict[str, _Backbone] = {
    "mobilenet_v2": _Backbone(
        "MobileNetV2", "MobileNetV2", "tf",
        "MobileNetV2 (ImageNet), width 0.35 / 0.5 / 1.0: fast on a CPU; pixels scaled to [-1, 1] inside.",
        _mobilenet_file, _TF_APPS + "mobilenet_v2/"),
    "efficientnet_b0": _Backbone(
        "EfficientNetB0", "EfficientNetB0", "none",
        "EfficientNetB0 (ImageNet): accurate for its size; takes 0..255 pixels (normalises inside).",
        lambda a, r: "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/"),
    "resnet50": _Backbone(
        "ResNet50", "ResNet50", "caffe",
        "ResNet50 (ImageNet): 25 M parameters, residual blocks; BGR mean-subtracted inside.",
        lambda a, r: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _TF_APPS + "resnet/"),
    "vgg16": _Backbone(
        "VGG16", "VGG16", "caffe",
        "VGG16 (ImageNet): the classic deep stack of 3x3 convs; slow on a CPU; BGR mean-subtracted inside.",
        lambda a, r: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _TF_APPS + "vgg16/"),
    "densenet121": _Backbone(
        "DenseNet121", "DenseNet121", "torch",
        "DenseNet121 (ImageNet): densely connected blocks; ImageNet mean/std normalisation inside.",
        lambda a, r: "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", _TF_APPS + "densenet/"),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def _backbone_entry(spec: ModelSpec) -> _Backbone:
    key = spec.backbone or ""
    if key not in BACKBONES:
        raise UserError(f"Unknown transfer backbone '{key}': choose one of {', '.join(BACKBONES)}.")
    return BACKBONES[key]


def keras_models_dir() -> Path:
    """The folder where ``keras.applications`` looks for (and caches) weight files.

    Keras reads ``$KERAS_HOME`` once, when it is imported, so this follows Keras' own value, not a later change.
    """
    try:
        from keras.src.backend.config import keras_home

        base = keras_home()
    except ImportError:  # a future Keras may move it; fall back to the documented rule
        base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base).expanduser() / "models"


def weights_file(spec: ModelSpec, input_shape: tuple[int, int, int]) -> str | None:
    """The ImageNet weight file the backbone needs for this input size (None for scratch or no weights)."""
    if not spec.is_transfer or spec.weights != "imagenet":
        return None
    entry = _backbone_entry(spec)
    rows, cols = (max(MIN_BACKBONE_SIZE, int(s)) for s in input_shape[:2])
    return entry.file(spec.alpha, rows if rows == cols else -1)


def check_input(input_shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise UserError("Images must have 1 (grayscale) or 3 (colour) channels.")
    h, w, c = (int(v) for v in input_shape)
    if not (8 <= h <= 512 and 8 <= w <= 512):
        raise UserError("The image size must be between 8 and 512 pixels.")
    if num_classes < 2:
        raise UserError("A classifier needs at least two classes.")
    return h, w, c


def _load_backbone(spec: ModelSpec, size: tuple[int, int]) -> keras.Model:
    """The keras.applications base without its top, frozen, named ``backbone``."""
    entry = _backbone_entry(spec)
    kwargs: dict[str, Any] = {"include_top": False, "input_shape": (*size, 3)}
    if entry.factory == "MobileNetV2":
        allowed = _IMAGENET_ALPHAS if spec.weights == "imagenet" else (*_IMAGENET_ALPHAS, 0.25, 0.75)
        if spec.alpha not in allowed:
            raise UserError(f"MobileNetV2 width (alpha) must be one of {', '.join(map(str, MOBILENET_ALPHAS))}.")
        kwargs["alpha"] = spec.alpha
    weights = spec.weights
    if weights not in (None, "imagenet") and not Path(str(weights)).is_file():
        raise UserError(f"The weights file '{weights}' does not exist.")
    folder = keras_models_dir()
    if weights == "imagenet":
        try:  # Keras falls back to /tmp/.keras when its home folder does not exist yet
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    try:
        # Keras prints download progress on stdout: keep it off the CLI's JSON output.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            # MobileNetV2 at sizes without their own weights: Keras loads the 224-px ones (they fit any size).
            warnings.filterwarnings("ignore", message=".*Weights for input shape.*")
            base = getattr(keras.applications, entry.factory)(weights=weights, **kwargs)
    except Exception as err:
        fname = entry.file(spec.alpha, size[0] if size[0] == size[1] else -1)
        if weights == "imagenet" and not (folder / fname).is_file():
            raise UserError(
                f"The ImageNet weights file '{fname}' could not be downloaded (no internet connection?): "
                f"download it from {entry.url_dir}{fname} on a connected machine and place it in {folder}."
            ) from err
        raise
    base.name = BACKBONE
    base.trainable = False
    # Keras 3.15 lets an outer `training=True` override the `training=False` a nested model was called with
    # (keras-team/keras#23364): without this, EfficientNet's internal dropout would run while the head trains.
    base._call_context_args = set()
    return base


def _preprocess_layers(kind: str) -> list[layers.Layer]:
    """The backbone's ``preprocess_input`` as built-in layers (serialisable, no Lambda)."""
    if kind == "tf":
        return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")]
    if kind == "torch":
        scale = [1.0 / (255.0 * s) for s in _TORCH_STD]
        offset = [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)]
        return [layers.Rescaling(scale, offset=offset, name="preprocess")]
    if kind == "caffe":
        # RGB -> BGR and mean subtraction as a fixed 1x1 convolution: exact, and a plain Keras layer.
        swap = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_c in range(3):
            swap[0, 0, 2 - out_c, out_c] = 1.0
        bias = -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")
        conv = layers.Conv2D(3, 1, name="preprocess", trainable=False,
                             kernel_initializer=keras.initializers.Constant(swap),
                             bias_initializer=keras.initializers.Constant(bias))
        return [conv]
    return []


def _trunk(spec: ModelSpec, input_shape: tuple[int, int, int]) -> tuple[Any, Any]:
    """Raw pixels -> gray-to-RGB -> upsample if tiny -> preprocessing -> frozen backbone -> pooled features."""
    entry = _backbone_entry(spec)
    h, w, c = input_shape
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = inputs
    if c == 1:
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    size = (max(MIN_BACKBONE_SIZE, h), max(MIN_BACKBONE_SIZE, w))
    if size != (h, w):
        x = layers.Resizing(*size, interpolation="bilinear", name="upsample")(x)
    for layer in _preprocess_layers(entry.preprocess):
        x = layer(x)
    backbone = _load_backbone(spec, size)
    x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return inputs, x


def _head_layers(spec: ModelSpec, num_classes: int) -> list[layers.Layer]:
    """GlobalAveragePooling's successors: Dropout -> Dense(head_units, relu) -> Dropout -> Dense softmax."""
    if not 0 <= spec.head_dropout < 1:
        raise UserError("The head dropout must be at least 0 and below 1.")
    if spec.head_units < 0:
        raise UserError("The head's dense layer cannot have a negative number of units.")
    head: list[layers.Layer] = [layers.Dropout(spec.head_dropout, name="head_dropout1")]
    if spec.head_units > 0:
        head += [layers.Dense(spec.head_units, activation="relu", name="head_dense"),
                 layers.Dropout(spec.head_dropout, name="head_dropout2")]
    head.append(layers.Dense(num_classes, activation="softmax", name="predictions"))
    return head


def _model_name(spec: ModelSpec) -> str:
    return spec.name.replace(":", "_")


def feature_extractor(spec: ModelSpec, input_shape: tuple[int, int, int]) -> keras.Model:
    """Raw pixels -> pooled backbone features (preprocessing included): what a feature cache stores."""
    if not spec.is_transfer:
        raise UserError("Only transfer models have a pretrained backbone to extract features with.")
    with keras_lock():
        inputs, pooled = _trunk(spec, check_input(input_shape, 2))
        return keras.Model(inputs, pooled, name=f"{_model_name(spec)}_features")


def head_model(spec: ModelSpec, feature_dim: int, num_classes: int) -> keras.Model:
    """The classifier head alone, trained on cached features; ``assemble_transfer`` puts it back on the base."""
    if num_classes < 2:
        raise UserError("A classifier needs at least two classes.")
    with keras_lock():
        inputs = keras.Input(shape=(int(feature_dim),), name="features")
        x = inputs
        for layer in _head_layers(spec, num_classes):
            x = layer(x)
        return keras.Model(inputs, x, name=f"{_model_name(spec)}_head")


def assemble_transfer(extractor: keras.Model, head: keras.Model, name: str | None = None) -> keras.Model:
    """The full model: the extractor's layers then the head's, sharing their weights (no copy)."""
    with keras_lock():
        inputs = keras.Input(shape=tuple(extractor.input_shape[1:]), name="pixels")
        x = inputs
        for layer in extractor.layers[1:]:
            if isinstance(layer, layers.Concatenate):
                x = layer([x, x, x])
            elif layer.name == BACKBONE:
                x = layer(x, training=False)
            else:
                x = layer(x)
        for layer in head.layers[1:]:
            x = layer(x)
        default = extractor.name.removesuffix("_features")
        return keras.Model(inputs, x, name=name or default)


def build_transfer(spec: ModelSpec, shape: tuple[int, int, int], n: int) -> keras.Model:
    inputs, x = _trunk(spec, shape)
    for layer in _head_layers(spec, n):
        x = layer(x)
    return keras.Model(inputs, x, name=_model_name(spec))



def unfreeze_top(model: keras.Model, n_layers: int) -> None:
    """Fine-tuning: make the top ``n_layers`` of the backbone trainable; BatchNorm layers stay frozen.

    Recompile the model afterwards (with a lower learning rate) for the change to take effect.
    """
    try:
        backbone = model.get_layer(BACKBONE)
    except ValueError as err:
        raise UserError("Only transfer models have a backbone to fine-tune.") from err
    if n_layers <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    inner = backbone.layers
    for layer in inner:
        layer.trainable = False
    for layer in inner[-n_layers:]:
        if not isinstance(layer, layers.BatchNormalization):
            layer.trainable = True

