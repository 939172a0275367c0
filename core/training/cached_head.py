"""Training a frozen backbone's head on cached features: the same callbacks, the same saved model, far less time.

``fit_on_cached_features`` replaces ``model.fit`` for a transfer model whose backbone is frozen: the
backbone's pooled features come from ``core.training.feature_cache`` (computed once, or read back), the
head trains on them, and the run's callbacks see the full model through a view, so what is saved is the
full model (raw pixels in). Fine-tuning changes the backbone, so those epochs use the full model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.config import TrainConfig
from core.models.runtime import compiled, keras_lock, predict_function
from core.models.transfer import BACKBONE
from core.training.callbacks import redirected
from core.training.feature_cache import (
    MAX_CACHE_MB,
    ExtractionStopped,
    FeatureCache,
    cached_features,
    extractor_fingerprint,
    report_sentence,
)

HEAD_STEPS_PER_CALL = 32  # head-only training steps per traced call (see fit_on_cached_features)
POOL_LAYER = "pool"


def split_transfer_model(model: Any) -> tuple[Any, Any]:
    """(extractor, head) views of a built transfer model that share its layers and weights.

    Training the head trains the full model's head, so the full model (raw pixels in) is what gets saved.
    """
    import keras

    pool = model.get_layer(POOL_LAYER)
    extractor = keras.Model(model.inputs, pool.output, name=f"{model.name}_extractor")
    names = [layer.name for layer in model.layers]
    rest = model.layers[names.index(POOL_LAYER) + 1:]
    inputs = keras.Input(shape=tuple(pool.output.shape[1:]), name="features")
    x = inputs
    for layer in rest:
        x = layer(x)
    return extractor, keras.Model(inputs, x, name=f"{model.name}_head")


def wants_cached_features(model: Any, config: TrainConfig) -> bool:
    """True for a transfer model whose backbone is frozen, when the run allows the feature cache."""
    if not (config.use_feature_cache and config.model.is_transfer):
        return False
    try:
        backbone = model.get_layer(BACKBONE)
        model.get_layer(POOL_LAYER)
    except ValueError:
        return False
    return not backbone.trainable_weights


def passes_for(config: TrainConfig, epochs: int) -> int:
    """How many augmented passes to cache: ``feature_cache_passes`` (never more than epochs), 1 without augmentation."""
    if not config.augment.enabled:
        return 1
    return max(1, min(int(config.feature_cache_passes), int(epochs)))


def feature_batches(features: np.ndarray, labels: np.ndarray, *, batch_size: int, epochs: int, seed: int) -> Any:
    """A dataset of exactly ``epochs x ceil(N / batch)`` shuffled batches; epoch ``e`` uses pass ``e % K``."""
    import tensorflow as tf

    passes, n, dim = features.shape
    labels = np.asarray(labels, dtype=np.int32)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            feats = features[epoch % passes]
            order = rng.permutation(n)
            for i in range(0, n, batch_size):
                idx = np.sort(order[i:i + batch_size])
                yield feats[idx], labels[idx]

    spec = (tf.TensorSpec((None, dim), tf.float32), tf.TensorSpec((None,), tf.int32))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)


class _CallbackView:
    """What the run's callbacks see while only the head trains: the full model, except three things.

    ``stop_training`` / ``stop_evaluating`` reach the head being fitted; ``predict`` on the validation
    images answers from the cached validation features; ``save``/weights/optimizer are the full model's.
    """

    _FLAGS = ("stop_training", "stop_evaluating")

    def __init__(self, full: Any, head: Any, val_images: Any, val_features: Any) -> None:
        object.__setattr__(self, "_full", full)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_val_images", val_images)
        object.__setattr__(self, "_val_features", val_features)

    def __getattr__(self, name: str) -> Any:
        if name in _CallbackView._FLAGS:
            return getattr(self._head, name, False)
        return getattr(self._full, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CallbackView._FLAGS:
            setattr(self._head, name, value)
        setattr(self._full, name, value)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if self._val_features is not None and x is self._val_images:
            return predict_in_chunks(self._head, self._val_features)
        return self._full.predict(x, *args, **kwargs)


@dataclass(frozen=True)
class CachedFitContext:
    """What the feature-cache path needs from a run besides the model: data, home and the run's hooks."""

    config: TrainConfig
    home: Path
    train: Any  # core.data.dataset.Split
    val: Any | None
    channels: int
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str, str], None] = lambda kind, text: None


def fit_on_cached_features(model: Any, val_images: Any | None, *, epochs: int, initial_epoch: int,
                           callbacks: list[Any], class_weight: dict[int, float] | None,
                           context: CachedFitContext) -> Any:
    """Train a frozen-base transfer model's head on cached backbone features; same callbacks, same model.

    ``model`` must be compiled; its optimizer is shared with the head, so learning-rate callbacks act
    on it. Returns the Keras History, or None when the run was stopped during extraction.
    """
    cfg = context.config
    extractor, head, ehash = _cached_views(model, context)
    cache = FeatureCache(context.home)
    n_epochs = max(epochs - initial_epoch, 1)
    passes = passes_for(cfg, n_epochs)
    common = dict(spec=cfg.model, image_size=cfg.image_size, channels=context.channels, cache=cache,
                  extractor_hash=ehash, should_stop=context.should_stop)
    context.log("info", f"The backbone is frozen: its features ({passes} pass{'es' if passes > 1 else ''} over the "
                        f"training images) are computed once or read from the cache, and the head trains on them.")
    try:
        train_feats, report = cached_features(extractor, context.train, split_name="train", augment=cfg.augment,
                                              passes=passes, seed=cfg.seed, **common)
        val_feats = None
        if context.val is not None and len(context.val):
            val_arr, val_report = cached_features(extractor, context.val, split_name="val", **common)
            val_feats = val_arr[0]
            report.add(val_report)
    except ExtractionStopped:
        context.log("info", "Stopped while computing backbone features.")
        return None
    context.log("info", report_sentence(report))
    cache.prune(MAX_CACHE_MB * 2**20)

    bs = cfg.batch_size
    train_ds = feature_batches(train_feats, context.train.labels, batch_size=bs, epochs=n_epochs, seed=cfg.seed)
    steps = max(math.ceil(len(context.train) / bs), 1)
    with model.distribute_strategy.scope():
        # Head steps take about a millisecond: run up to HEAD_STEPS_PER_CALL of them per graph call, so
        # Python and callback overhead does not dominate; a stop still lands within one call (< 1 s).
        head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                     steps_per_execution=steps_per_call(steps))
    # The callbacks see the full model; its validation "predict" answers from the cached validation
    # features through one traced function (no evaluate loop with its own data adapter every epoch).
    view = _CallbackView(model, head, val_images, val_feats)
    model.stop_training = False
    return head.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                    callbacks=redirected(callbacks, view), class_weight=class_weight, shuffle=False, verbose=0)


def steps_per_call(steps: int, most: int = HEAD_STEPS_PER_CALL) -> int:
    """The largest divisor of an epoch's steps up to ``most``: Keras runs whole calls, so a call that
    overran the epoch would eat the next epoch's batches (and the last epoch would run out)."""
    return max(d for d in range(1, min(steps, most) + 1) if steps % d == 0)


def _cached_views(model: Any, context: CachedFitContext) -> tuple[Any, Any, str]:
    """``(extractor, head, extractor fingerprint)`` of a frozen-base model, built once per model object."""
    def build() -> tuple[Any, Any, str]:
        with keras_lock(), model.distribute_strategy.scope():
            extractor, head = split_transfer_model(model)
        return extractor, head, extractor_fingerprint(extractor)

    return compiled(model, "cached_views", build)


def predict_from_cached_features(model: Any, split: Any, *, split_name: str,
                                 context: CachedFitContext) -> np.ndarray | None:
    """Class probabilities of a split from its cached backbone features through the head, in split order.

    The same numbers as ``model.predict`` on the images (the head is the model's own top), without a
    backbone pass when the features are cached. None when the backbone is not frozen (after fine-tuning).
    """
    if not wants_cached_features(model, context.config):
        return None
    extractor, head, ehash = _cached_views(model, context)
    cfg = context.config
    feats, report = cached_features(extractor, split, split_name=split_name, spec=cfg.model,
                                    image_size=cfg.image_size, channels=context.channels,
                                    cache=FeatureCache(context.home), extractor_hash=ehash)
    if report.misses:
        context.log("info", f"{split_name.capitalize()} split: {report_sentence(report)}")
    return predict_in_chunks(head, feats[0])


def predict_in_chunks(head: Any, features: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The head's probabilities for feature vectors, through the head's one traced predict function.

    ``head.predict`` builds a data adapter on every call (~0.1 s); once an epoch, that is most of a
    cached-feature epoch.
    """
    run = predict_function(head)
    parts = [run(features[i:i + chunk]) for i in range(0, len(features), chunk)]
    n_classes = int(head.output_shape[-1])
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, n_classes), np.float32)
