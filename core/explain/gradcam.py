"""Grad-CAM: which pixels made the model say what it said (Selvaraju et al., 2017), for any model the app builds.

The gradient model is rebuilt from the trained model's own layers (shared weights, no copy), so it works for
Sequential and Functional models and for a frozen backbone nested as one layer (the usual Keras 3 trap: an inner
layer's ``.output`` is not connected to the outer model's input, so ``Model(model.inputs, inner.output)`` fails
with "graph disconnected"). The class score is the pre-softmax logit, as in the paper (so confident predictions
do not saturate into an empty map), centred across classes (so evidence shared by every class does not show).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from core.data.pixels import as_uint8, to_channels, to_model_pixels
from core.errors import UserError
from core.models.runtime import compiled, keras_lock

__all__ = [
    "COLORMAPS",
    "GradCam",
    "find_target_layer",
    "gradcam_for",
    "heatmap_peak",
    "overlay",
    "target_layer_choices",
]

SEP = "/"  # Keras forbids "/" in layer names, so it safely joins a nested path such as "backbone/out_relu".
BATCH = 32  # images per gradient pass: bounds memory for large galleries
EAGER_CALLS = 2  # calls served eagerly before the gradient pass is compiled with tf.function

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
}

_CONV_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


# --------------------------------------------------------------------------------------------- target layer


def _is_model(layer: Any) -> bool:
    return isinstance(layer, keras.Model)


def _own_layers(model: keras.Model) -> list[Any]:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _output_shape(layer: Any) -> tuple | None:
    """The layer's output shape, or None when it has none or several (a shared layer)."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    return tuple(out.shape) if hasattr(out, "shape") else None


def _is_4d(layer: Any) -> bool:
    shape = _output_shape(layer)
    return shape is not None and len(shape) == 4


def _feeds_on(layer: Any, previous: Any) -> bool:
    """True when ``layer`` takes ``previous``'s output as (one of) its inputs."""
    try:
        inputs = keras.tree.flatten(layer.input)
        out = previous.output
    except (AttributeError, ValueError, RuntimeError):
        return False
    return any(x is out for x in inputs)


def _last_conv_path(model: keras.Model) -> list[str] | None:
    """Path to the last convolution's activation map: the conv, then the BN/activation right after it."""
    layers = _own_layers(model)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if _is_model(layer):
            inner = _last_conv_path(layer)
            if inner is not None:
                return [layer.name, *inner]
            continue
        if isinstance(layer, _CONV_TYPES) and _is_4d(layer):
            # Walk over the pointwise layers that keep the conv's resolution (BatchNorm, ReLU, Add, Dropout):
            # the map after them is what the head sees, and a following pooling would only coarsen it.
            pick, size = layer, _output_shape(layer)[1:3]
            for nxt in layers[i + 1 :]:
                if _is_model(nxt) or not _is_4d(nxt) or _output_shape(nxt)[1:3] != size:
                    break
                if not _feeds_on(nxt, pick):
                    break
                pick = nxt
            return [pick.name]
    return None


def _last_4d_path(model: keras.Model) -> list[str] | None:
    """Fallback for convolution-free models: the last layer whose output is still an image."""
    for layer in reversed(_own_layers(model)):
        if _is_model(layer):
            inner = _last_4d_path(layer)
            if inner is not None:
                return [layer.name, *inner]
        elif _is_4d(layer):
            return [layer.name]
    return None


def find_target_layer(model: keras.Model) -> str:
    """The layer Grad-CAM explains by default: the last conv activation before the head ("backbone/out_relu")."""
    path = _last_conv_path(model) or _last_4d_path(model)
    if path is None:
        raise UserError("This model has no image-shaped (convolutional) layer, so Grad-CAM cannot explain it.")
    return SEP.join(path)


def target_layer_choices(model: keras.Model) -> list[str]:
    """Every layer path with an image-shaped output, input first, nested models included: choices for an override."""
    out: list[str] = []
    for layer in _own_layers(model):
        if _is_model(layer):
            out.extend(f"{layer.name}{SEP}{p}" for p in target_layer_choices(layer))
        elif _is_4d(layer):
            out.append(layer.name)
    return out


def _resolve(model: keras.Model, path: str) -> list[Any]:
    """The chain of layers named by ``path``; every step but the last is a nested model."""
    chain: list[Any] = []
    current: Any = model
    for part in path.split(SEP):
        if not _is_model(current):
            raise UserError(f"'{path}' is not a layer of this model: '{current.name}' has no inner layers.")
        try:
            current = current.get_layer(part)
        except ValueError:
            raise UserError(f"'{path}' is not a layer of this model; pick one of the listed layers.") from None
        chain.append(current)
    if _is_model(chain[-1]):
        raise UserError(f"'{path}' is a whole sub-model; pick one of its layers, e.g. '{path}{SEP}...'.")
    if not _is_4d(chain[-1]):
        raise UserError(f"Layer '{path}' does not output an image-shaped map, so Grad-CAM cannot use it.")
    return chain


# ------------------------------------------------------------------------------------------- gradient model


class _DenseLogits(keras.layers.Layer):
    """A softmax Dense layer's pre-activation scores, computed with that layer's own (shared) weights."""

    def __init__(self, dense: keras.layers.Dense, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, x: Any) -> Any:
        y = keras.ops.matmul(x, self.dense.kernel)
        return y + self.dense.bias if self.dense.use_bias else y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.dense.units)


def _is_softmax(fn: Any) -> bool:
    return fn is keras.activations.softmax or getattr(fn, "__name__", "") == "softmax"


def _logits_call(layer: Any, args: tuple, kwargs: dict) -> Any | None:
    """The head's centred logits, or None when the layer is not a softmax head.

    Softmax ignores anything added to every logit alike, so such evidence (a feature the model finds in
    every class) explains nothing; centring removes it without the saturation of the softmax itself.
    """
    if isinstance(layer, keras.layers.Dense) and _is_softmax(layer.activation):
        logits = _DenseLogits(layer)(args[0])
    elif isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation)
    ):
        logits = args[0]
    else:
        return None
    return logits - keras.ops.mean(logits, axis=-1, keepdims=True)


def _replay(model: keras.Model, call: Callable[..., Any]) -> tuple[Any, Any]:
    """Re-run ``model``'s graph on fresh inputs through ``call(layer, *args, **kwargs)``; layers are reused."""
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise ValueError("Grad-CAM needs a built model (give the Sequential model an Input).")
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
        x = inputs
        for layer in _own_layers(model):
            x = call(layer, x)
        return inputs, x
    if len(getattr(model, "outputs", None) or ()) != 1:
        kind = type(model).__name__
        raise ValueError(f"Grad-CAM needs a Sequential or Functional model with one output, not {kind}.")
    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs, clone.outputs[0]


def _tap_model(model: keras.Model, chain: list[Any], logits: bool) -> keras.Model:
    """A model with outputs ``[target activations, scores]`` built from ``model``'s own layers."""
    target = chain[0]
    inner = _tap_model(target, chain[1:], logits=False) if len(chain) > 1 else None
    head = _own_layers(model)[-1] if logits else None
    taps: list[Any] = []

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer is target and inner is not None:
            activation, out = inner(*args, **kwargs)
            taps.append(activation)
            return out
        out = _logits_call(layer, args, kwargs) if layer is head else None
        if out is None:
            out = layer(*args, **kwargs)
        if layer is target:
            taps.append(out)
        return out

    inputs, outputs = _replay(model, call)
    if len(taps) != 1:
        raise UserError(f"Layer '{target.name}' is used {len(taps)} times in this model; pick a layer used once.")
    return keras.Model(inputs, [taps[0], outputs])


# ---------------------------------------------------------------------------------------------- the engine


class GradCam:
    """Grad-CAM heatmaps for one model; the gradient model is built once, calls are serialised by a lock."""

    def __init__(self, model: keras.Model, layer_name: str | None = None) -> None:
        self.model = model
        with keras_lock():  # the gradient model is built from the model's layers: Keras' global naming
            self.layer_name = layer_name or find_target_layer(model)
            chain = _resolve(model, self.layer_name)
            self._tap = _tap_model(model, chain, logits=True)
        shape = tuple(self._tap.inputs[0].shape)
        # What pages may read: the (height, width) images must have, their channels, the heatmap's (h, w).
        self.input_size: tuple[int | None, int | None] = (shape[1], shape[2])
        self.channels: int = int(shape[3])
        self.num_classes: int = int(self._tap.outputs[1].shape[-1])
        self.map_size: tuple[int | None, int | None] = tuple(self._tap.outputs[0].shape[1:3])  # type: ignore
        self._lock = threading.Lock()
        self._calls = 0
        # A partial, not the bound method: TF keys its "frequent retracing" warning on the function's code,
        # so every GradCam's single trace would otherwise count as a retrace of one shared function.
        self._fn = tf.function(
            functools.partial(GradCam._compute, self),
            input_signature=(
                tf.TensorSpec((None, *self.input_size, self.channels), tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ),
            reduce_retracing=True,
        )

    def heatmap(self, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """float32 [h, w] in 0..1 for one uint8 HxWxC image (predicted class if None)."""
        return self.heatmaps([image], [class_index])[0]

    def heatmaps(
        self, batch: np.ndarray | Sequence[np.ndarray], class_indices: Sequence[int | None] | None = None
    ) -> np.ndarray:
        """float32 [N, h, w] in 0..1, one heatmap per image; a None class index means the predicted class."""
        if len(batch) == 0:
            return np.zeros((0, *(d or 0 for d in self.map_size)), np.float32)
        images = np.stack([self.model_input(img) for img in batch])
        classes = self._class_array(class_indices, len(images))
        parts = []
        with self._lock:
            # Tracing costs several eager calls (seconds for a big backbone), so the first calls run eagerly
            # and only an instance that keeps being asked compiles its graph: a one-off photo stays fast.
            compute = self._fn if self._calls >= EAGER_CALLS else self._compute
            self._calls += 1
            for start in range(0, len(images), BATCH):
                chunk = tf.constant(images[start : start + BATCH])
                parts.append(compute(chunk, tf.constant(classes[start : start + BATCH])).numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _class_array(self, class_indices: Sequence[int | None] | None, n: int) -> np.ndarray:
        if class_indices is None:
            return np.full(n, -1, np.int32)
        if len(class_indices) != n:
            raise ValueError(f"Got {n} images but {len(class_indices)} class indices.")
        for c in class_indices:
            if c is not None and not 0 <= int(c) < self.num_classes:
                raise ValueError(f"Class index {c} is out of range 0..{self.num_classes - 1}.")
        return np.array([-1 if c is None else int(c) for c in class_indices], np.int32)

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """What the gradient pass sees of ``image``: ``to_model_pixels`` at the model's size, as float32."""
        h, w = self.input_size
        if h is None or w is None:
            raise ValueError("Grad-CAM needs a model with a fixed input size.")
        return to_model_pixels(as_uint8(image), (int(h), int(w)), self.channels).astype(np.float32)

    def _compute(self, images: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        """Grad-CAM for a batch: ReLU(sum_k mean_ij(d score / d A_k) * A_k), each map scaled to max 1."""
        with tf.GradientTape() as tape:
            # Watch the input so the whole graph is recorded even when every weight is frozen.
            tape.watch(images)
            activations, scores = self._tap(images, training=False)
            predicted = tf.argmax(scores, axis=-1, output_type=tf.int32)
            chosen = tf.where(classes < 0, predicted, classes)
            score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(score, activations)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        return tf.where(peak > 0, cam / tf.where(peak > 0, peak, 1.0), tf.zeros_like(cam))


def gradcam_for(model: keras.Model) -> GradCam:
    """The model's Grad-CAM engine for its default layer, built once and shared by every page and stream."""
    return compiled(model, "gradcam", lambda: GradCam(model))


# ------------------------------------------------------------------------------------------------ drawing


def _upsample(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """The heatmap resized to ``height x width`` (bilinear, so values stay in 0..1)."""
    hm = np.nan_to_num(np.asarray(heatmap, np.float32))
    if hm.ndim != 2:
        raise ValueError(f"Expected a 2-D heatmap, got shape {hm.shape}.")
    return np.clip(cv2.resize(hm, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """The image with the coloured heatmap blended on top: uint8 HxWx3 (gray images are tiled to RGB)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}.")
    if colormap not in COLORMAPS:
        raise UserError(f"Unknown colour map '{colormap}': choose one of {', '.join(COLORMAPS)}.")
    rgb = to_channels(image, 3)
    hm = _upsample(heatmap, rgb.shape[0], rgb.shape[1])
    colored = cv2.applyColorMap(np.round(hm * 255).astype(np.uint8), COLORMAPS[colormap])
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def heatmap_peak(heatmap: np.ndarray, image_shape: Sequence[int]) -> tuple[int, int]:
    """(row, col) of the hottest pixel once the heatmap is resized to the image as ``overlay`` draws it."""
    hm = _upsample(heatmap, int(image_shape[0]), int(image_shape[1]))
    row, col = np.unravel_index(int(np.argmax(hm)), hm.shape)
    return int(row), int(col)
