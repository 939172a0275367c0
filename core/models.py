"""The architecture registry: the course reports' scratch CNNs, the custom builder and transfer backbones.

Every model takes raw pixels (float32 0..255, ``(S, S, C)``, C = 1 or 3) and ends in a softmax, so a saved
``.keras`` file needs no outside preprocessing. Scratch models rescale with a ``Rescaling`` layer and name
their last convolution ``last_conv``; transfer models tile grayscale to RGB, apply the backbone's own
``preprocess_input`` as built-in layers and call a frozen sub-model named ``backbone`` with ``training=False``.
Only built-in Keras layers are used, so saved models load with ``safe_mode=True`` and without this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
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

from core.config import CustomArchitecture, ModelSpec
from core.errors import UserError

__all__ = [
    "BACKBONE",
    "LAST_CONV",
    "MAX_FLATTEN_FEATURES",
    "MOBILENET_ALPHAS",
    "ModelInfo",
    "assemble_transfer",
    "build_model",
    "count_params",
    "feature_extractor",
    "gradcam_layer",
    "head_model",
    "keras_models_dir",
    "layer_kind",
    "layer_table",
    "list_models",
    "unfreeze_top",
    "weights_file",
]

BACKBONE = "backbone"
LAST_CONV = "last_conv"
# The presets' Flatten heads were sized for the reports' inputs (150 px and below); above that, extra
# max-pooling keeps the first dense layer from growing to hundreds of millions of weights.
MAX_FLATTEN_FEATURES = 50_000
MIN_BACKBONE_SIZE = 32  # keras.applications refuse smaller inputs; smaller images are upsampled in the model
MOBILENET_ALPHAS = (0.35, 0.5, 1.0)
_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MOBILENET_ROWS = (96, 128, 160, 192, 224)
_TF_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


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


# ============================================================================ scratch building blocks


class _Net:
    """Stacks the layers of a scratch preset; keeps tiny inputs from shrinking to nothing."""

    def __init__(self, input_shape: tuple[int, int, int], l2: float = 0.0) -> None:
        self.inputs = keras.Input(shape=input_shape, name="pixels")
        self.x = layers.Rescaling(1.0 / 255, name="rescale")(self.inputs)
        self.l2 = l2
        self._counts: dict[str, int] = {}

    def _name(self, kind: str) -> str:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{kind}{self._counts[kind]}"

    @property
    def size(self) -> int:
        """The smaller spatial side of the current feature map."""
        return int(min(self.x.shape[1], self.x.shape[2]))

    def _reg(self, l2: float | None) -> keras.regularizers.Regularizer | None:
        value = self.l2 if l2 is None else l2
        return keras.regularizers.L2(value) if value > 0 else None

    def conv(self, filters: int, kernel: int = 3, *, padding: str = "same", strides: int = 1,
             last: bool = False, l2: float | None = None) -> _Net:
        """A ReLU convolution; 'valid' padding and strides fall back when the map is too small for them."""
        if padding == "valid" and self.size - kernel + 1 < 2:
            padding = "same"
        while strides > 1 and self.size < 2 * strides:
            strides //= 2
        self.x = layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, activation="relu",
            kernel_regularizer=self._reg(l2), name=LAST_CONV if last else self._name("conv"),
        )(self.x)
        return self

    def bn(self) -> _Net:
        self.x = layers.BatchNormalization(name=self._name("bn"))(self.x)
        return self

    def pool(self, kind: str = "max", size: int = 2, strides: int | None = None, padding: str = "valid") -> _Net:
        """Pooling, skipped once the map is 2 px or smaller so any input from 8 px up works."""
        if kind == "none" or self.size <= 2:
            return self
        if self.size < size:
            padding = "same"
        cls = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
        self.x = cls(size, strides=strides, padding=padding, name=self._name("pool"))(self.x)
        return self

    def dropout(self, rate: float) -> _Net:
        if rate > 0:
            self.x = layers.Dropout(rate, name=self._name("dropout"))(self.x)
        return self

    def flatten(self, max_features: int | None = MAX_FLATTEN_FEATURES) -> _Net:
        """Flatten, after extra 2x2 max-pooling while the map is larger than ``max_features`` values."""
        while max_features and math.prod(self.x.shape[1:]) > max_features and self.size > 2:
            self.x = layers.MaxPooling2D(2, name=self._name("head_pool"))(self.x)
        self.x = layers.Flatten(name="flatten")(self.x)
        return self

    def gap(self) -> _Net:
        self.x = layers.GlobalAveragePooling2D(name="global_pool")(self.x)
        return self

    def dense(self, units: int, *, l2: float | None = None) -> _Net:
        self.x = layers.Dense(units, activation="relu", kernel_regularizer=self._reg(l2),
                              name=self._name("dense"))(self.x)
        return self

    def model(self, num_classes: int, name: str) -> keras.Model:
        outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(self.x)
        return keras.Model(self.inputs, outputs, name=name)


# ============================================================================ scratch presets


def _tiny(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(16).pool().conv(32, last=True).pool()
    return net.flatten().dense(32).model(n, "tiny")


def _overfit_demo(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(8).pool().conv(16, last=True).pool()
    return net.flatten().dense(512).dense(256).model(n, "overfit_demo")


def _classic_3block(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(32, padding="valid").pool().conv(64, padding="valid").pool()
    net.conv(128, padding="valid", last=True).pool()
    return net.flatten().dense(512).model(n, "classic_3block")


def _rps_baseline(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(16).pool().conv(32).pool().conv(64, last=True).pool()
    return net.flatten().dense(64).model(n, "rps_baseline")


def _rps_regularised(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(32).bn().pool().conv(64).bn().pool().conv(128, last=True).bn().pool()
    return net.flatten().dense(128, l2=0.01).dropout(0.5).model(n, "rps_regularised")


def _bn_dropout(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(32).bn().pool().dropout(0.25)
    net.conv(64).bn().pool().dropout(0.25)
    net.conv(128, last=True).bn().pool().dropout(0.25)
    net.flatten().dense(256).bn().dropout(0.5)
    return net.model(n, "bn_dropout")


def _deep_convblock(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    net.conv(32).conv(32).bn().pool().dropout(0.2)
    net.conv(64).conv(64).bn().pool().dropout(0.3)
    net.conv(128).conv(128, last=True).bn().pool().dropout(0.4)
    return net.flatten().dense(128).dropout(0.5).model(n, "deep_convblock")


def _alexnet_small(shape: tuple[int, int, int], n: int) -> keras.Model:
    net = _Net(shape)
    # AlexNet's 11x11 stride-4 stem only where the image is large enough to afford it.
    if net.size >= 128:
        net.conv(96, 11, strides=4)
    elif net.size >= 64:
        net.conv(64, 5, strides=2)
    else:
        net.conv(64, 5)
    net.bn().pool(size=3, strides=2, padding="same")
    net.conv(192, 5).bn().pool(size=3, strides=2, padding="same")
    net.conv(384).conv(256).conv(256, last=True).pool(size=3, strides=2, padding="same")
    return net.flatten().dense(1024).dropout(0.5).dense(512).dropout(0.5).model(n, "alexnet_small")


Builder = Callable[[tuple[int, int, int], int], keras.Model]

_PRESETS: dict[str, tuple[Builder, str, str]] = {
    "tiny": (
        _tiny,
        "Tiny demo CNN: two conv blocks (16/32) + max-pool, Dense 32; trains on shapes or digits in seconds.",
        "CNN Lab's own demo network, sized for a laptop CPU.",
    ),
    "overfit_demo": (
        _overfit_demo,
        "Overfitting demo: a tiny conv base under a big Dense 512/256 head with no regularisation.",
        "CNN Lab's overfitting lab: memorises a handful of images within a few epochs.",
    ),
    "classic_3block": (
        _classic_3block,
        "Classic 3-block CNN: conv 32/64/128 (valid) + max-pool, Flatten, Dense 512.",
        "Bears report (grizzly / black / teddy, 150 px).",
    ),
    "rps_baseline": (
        _rps_baseline,
        "RPS baseline: conv 16/32/64 with same padding + max-pool, Flatten, Dense 64.",
        "Rock-paper-scissors report, baseline model.",
    ),
    "rps_regularised": (
        _rps_regularised,
        "RPS regularised: conv 32/64/128 + BatchNorm, Dense 128 with L2 0.01, Dropout 0.5.",
        "Rock-paper-scissors report, regularised model.",
    ),
    "bn_dropout": (
        _bn_dropout,
        "BatchNorm + dropout CNN: conv 32/64/128 each with BatchNorm and Dropout 0.25, Dense 256 + Dropout 0.5.",
        "Vehicles report.",
    ),
    "deep_convblock": (
        _deep_convblock,
        "Deep conv-block CNN: three blocks of two convs (32/64/128) with dropout rising 0.2 -> 0.5.",
        "Fashion-MNIST report.",
    ),
    "alexnet_small": (
        _alexnet_small,
        "Small AlexNet-like CNN: five convs (64-384 filters), Dense 1024/512 with Dropout 0.5; the stem fits the size.",
        "CIFAR-100 report (AlexNet adapted to 32 px inputs).",
    ),
}


# ============================================================================ custom builder


def _check_custom(arch: CustomArchitecture) -> None:
    """Reject settings a user can get wrong with one plain sentence."""
    if not arch.blocks:
        raise UserError("The custom network needs at least one convolution block.")
    for i, block in enumerate(arch.blocks, 1):
        if not 1 <= block.filters <= 1024:
            raise UserError(f"Block {i}: the number of filters must be between 1 and 1024.")
        if not 1 <= block.kernel <= 11:
            raise UserError(f"Block {i}: the kernel size must be between 1 and 11.")
        if not 1 <= block.convs <= 4:
            raise UserError(f"Block {i}: a block holds between 1 and 4 convolutions.")
        if not 0 <= block.dropout < 1:
            raise UserError(f"Block {i}: dropout must be at least 0 and below 1.")
        if block.pool not in ("max", "avg", "none"):
            raise UserError(f"Block {i}: pooling must be max, avg or none.")
    if arch.head not in ("flatten", "gap"):
        raise UserError("The head must be 'flatten' or 'gap' (global average pooling).")
    if any(not 1 <= u <= 8192 for u in arch.dense_units):
        raise UserError("Each dense layer needs between 1 and 8192 units.")
    if not 0 <= arch.dropout < 1:
        raise UserError("The head dropout must be at least 0 and below 1.")
    if not 0 <= arch.l2 <= 1:
        raise UserError("The L2 weight penalty must be between 0 and 1.")


def _custom(arch: CustomArchitecture, shape: tuple[int, int, int], n: int) -> keras.Model:
    """The user's network: conv blocks, then a Flatten or global-average head, dense layers, softmax."""
    _check_custom(arch)
    net = _Net(shape, l2=arch.l2)
    for i, block in enumerate(arch.blocks):
        for j in range(block.convs):
            last = i == len(arch.blocks) - 1 and j == block.convs - 1
            net.conv(block.filters, block.kernel, last=last)
            if block.batch_norm:
                net.bn()
        net.pool(block.pool).dropout(block.dropout)
    if arch.head == "flatten":
        net.flatten(max_features=None)  # the user sees the parameter count and chose this head
    else:
        net.gap()
    for units in arch.dense_units:
        net.dense(units).dropout(arch.dropout)
    if not arch.dense_units:
        net.dropout(arch.dropout)
    return net.model(n, "custom")


# ============================================================================ transfer backbones


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


_BACKBONES: dict[str, _Backbone] = {
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
    if key not in _BACKBONES:
        raise UserError(f"Unknown transfer backbone '{key}': choose one of {', '.join(_BACKBONES)}.")
    return _BACKBONES[key]


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


def _check_input(input_shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
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
    inputs, pooled = _trunk(spec, _check_input(input_shape, 2))
    return keras.Model(inputs, pooled, name=f"{_model_name(spec)}_features")


def head_model(spec: ModelSpec, feature_dim: int, num_classes: int) -> keras.Model:
    """The classifier head alone, trained on cached features; ``assemble_transfer`` puts it back on the base."""
    if num_classes < 2:
        raise UserError("A classifier needs at least two classes.")
    inputs = keras.Input(shape=(int(feature_dim),), name="features")
    x = inputs
    for layer in _head_layers(spec, num_classes):
        x = layer(x)
    return keras.Model(inputs, x, name=f"{_model_name(spec)}_head")


def assemble_transfer(extractor: keras.Model, head: keras.Model, name: str | None = None) -> keras.Model:
    """The full model: the extractor's layers then the head's, sharing their weights (no copy)."""
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


def _transfer(spec: ModelSpec, shape: tuple[int, int, int], n: int) -> keras.Model:
    inputs, x = _trunk(spec, shape)
    for layer in _head_layers(spec, n):
        x = layer(x)
    return keras.Model(inputs, x, name=_model_name(spec))


# ============================================================================ public API


def list_models() -> list[ModelInfo]:
    """Every architecture ``build_model`` knows: scratch presets, the custom builder, transfer backbones."""
    infos = [ModelInfo(name, "scratch", desc, origin) for name, (_, desc, origin) in _PRESETS.items()]
    infos.append(ModelInfo(
        "custom", "custom",
        "Your own CNN: conv blocks (filters, kernel, batch norm, pooling, dropout), Flatten or global-average "
        "head, dense layers, dropout and L2.",
        "CNN Lab's custom builder.",
    ))
    for key, entry in _BACKBONES.items():
        infos.append(ModelInfo(
            f"transfer:{key}", "transfer", entry.description,
            f"keras.applications.{entry.factory} with ImageNet weights, frozen, plus a new head.",
            MOBILENET_ALPHAS if key == "mobilenet_v2" else (),
        ))
    return infos


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A fresh, uncompiled model for raw 0..255 pixels of ``input_shape`` with a softmax over the classes."""
    shape = _check_input(input_shape, num_classes)
    if spec.is_transfer:
        return _transfer(spec, shape, num_classes)
    if spec.name == "custom":
        return _custom(spec.custom or CustomArchitecture(), shape, num_classes)
    if spec.name not in _PRESETS:
        names = ", ".join([*_PRESETS, "custom", *(f"transfer:{k}" for k in _BACKBONES)])
        raise UserError(f"Unknown model '{spec.name}': choose one of {names}.")
    return _PRESETS[spec.name][0](shape, num_classes)


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


def gradcam_layer(model: keras.Model) -> str:
    """The layer Grad-CAM should explain: ``last_conv`` for scratch models, ``backbone`` for transfer ones."""
    names = [layer.name for layer in model.layers]
    for name in (LAST_CONV, BACKBONE):
        if name in names:
            return name
    for layer in reversed(model.layers):
        try:
            if len(layer.output.shape) == 4:
                return layer.name
        except (AttributeError, ValueError, RuntimeError):
            continue
    raise UserError("This model has no image-shaped layer for Grad-CAM to explain.")
