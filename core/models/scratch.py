"""Scratch CNNs: the course reports' presets and the custom builder, for any input from 8 to 512 px.

Each takes raw pixels (float32 0..255), rescales with a ``Rescaling`` layer, names its last convolution
``last_conv`` and ends in a softmax named ``predictions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import layers

from core.config import CustomArchitecture
from core.errors import UserError

LAST_CONV = "last_conv"
# The presets' Flatten heads were sized for the reports' inputs (150 px and below); above that, extra
# max-pooling keeps the first dense layer from growing to hundreds of millions of weights.
MAX_FLATTEN_FEATURES = 50_000


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

PRESETS: dict[str, tuple[Builder, str, str]] = {
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


def build_custom(arch: CustomArchitecture, shape: tuple[int, int, int], n: int) -> keras.Model:
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

