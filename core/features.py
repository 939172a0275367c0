"""Cached backbone features: a frozen-base transfer model's backbone runs once, the head trains on disk features.

A frozen backbone computes the same pooled features every epoch, so CNN Lab computes them once per
(split, backbone, width, weights, image size, preprocessing, augmentation, pass) and keeps them under
``<home>/feature-cache/``. The head then trains on those vectors (an epoch takes well under a second).
With augmentation on, ``K = feature_cache_passes`` differently augmented passes are cached and epoch
``e`` trains on pass ``e % K``. Fine-tuning phases change the backbone, so they use the full model.

Extraction and inference run in graph mode (``tf.function``) over a batched tf.data pipeline whose
decoding is parallel, instead of an eager Python loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.config import AugmentConfig, TrainConfig
from core.store import atomic_path

CACHE_DIRNAME = "feature-cache"
CACHE_FORMAT = 1  # bump when the stored layout or the extraction numerics change
EXTRACT_BATCH = 64
HEAD_STEPS_PER_CALL = 32  # head-only training steps per traced call (see fit_on_cached_features)
MAX_CACHE_MB = int(os.environ.get("CNNLAB_FEATURE_CACHE_MB", "2048"))  # least recently used entries go first
POOL_LAYER = "pool"
BACKBONE_LAYER = "backbone"


class ExtractionStopped(Exception):
    """The user stopped the run while features were being extracted."""


# ---------------------------------------------------------------- fingerprints and keys


def split_fingerprint(split: Any) -> str:
    """Hash of a split's images in order: file path + size + mtime for files, pixel bytes for arrays; plus labels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.asarray(split.labels, dtype=np.int64).tobytes())
    if getattr(split, "files", None) is not None:
        for f in split.files:
            try:
                st = os.stat(f)
                digest.update(f"{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{f}\tmissing\n".encode())
    elif getattr(split, "images", None) is not None:
        images = np.ascontiguousarray(split.images)
        digest.update(f"{images.shape}{images.dtype}".encode())
        digest.update(images.tobytes())
    return digest.hexdigest()


def _layer_signature(layer: Any) -> Any:
    """Layer type and configuration without auto-generated names (they differ between processes)."""
    inner = getattr(layer, "layers", None)
    if inner:
        return [type(layer).__name__, [_layer_signature(sub) for sub in inner]]
    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - a layer without a config is identified by its type alone
        cfg = {}
    cfg.pop("name", None)
    return [type(layer).__name__, json.dumps(cfg, sort_keys=True, default=str)]


def extractor_fingerprint(extractor: Any) -> str:
    """Hash of the extractor's structure, preprocessing constants and weights: equal features, equal hash."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(_layer_signature(extractor), default=str).encode())
    digest.update(str(tuple(extractor.input_shape)).encode())
    for w in extractor.weights:
        value = np.asarray(w.numpy())
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def feature_cache_key(*, split_name: str, split_hash: str, backbone: str, alpha: float, weights: str | None,
                      image_size: int, channels: int, extractor_hash: str, augment: AugmentConfig | None,
                      seed: int, pass_index: int) -> str:
    """The cache file's name: every input that changes the stored features is part of it."""
    parts = {
        "format": CACHE_FORMAT,
        "split": split_name,
        "data": split_hash,
        "backbone": backbone,
        "alpha": float(alpha),
        "weights": weights,
        "image_size": int(image_size),
        "channels": int(channels),
        "extractor": extractor_hash,  # preprocessing layers + backbone weights
        "augment": augment.to_dict() if augment is not None and augment.enabled else None,
        "seed": int(seed) if augment is not None and augment.enabled else None,
        "pass": int(pass_index),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return f"{split_name}-{backbone}-{image_size}px-p{pass_index}-{digest}"


# ---------------------------------------------------------------- the on-disk cache


class FeatureCache:
    """Feature arrays on disk under ``<home>/feature-cache/``, one ``.npz`` per key, written atomically."""

    def __init__(self, home: Path | str) -> None:
        self.folder = Path(home) / CACHE_DIRNAME
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str, labels: np.ndarray | None = None) -> np.ndarray | None:
        """The cached features for ``key``, or None (missing, unreadable, or labels that do not match)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                feats, stored = data["features"], data["labels"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # a damaged file is a miss; the next put replaces it
        if labels is not None and not np.array_equal(stored, np.asarray(labels, dtype=np.int64)):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for pruning
        return feats

    def put(self, key: str, features: np.ndarray, labels: np.ndarray) -> Path:
        """Store features atomically (temp file + fsync + rename): a crash never leaves half a file."""
        path = self.path(key)
        with self._lock, atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=np.asarray(features, dtype=np.float32),
                         labels=np.asarray(labels, dtype=np.int64))
        return path

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npz")) if self.folder.is_dir() else 0

    def prune(self, max_bytes: int) -> list[str]:
        """Delete the least recently used entries until the cache is at most ``max_bytes``; return their keys."""
        if not self.folder.is_dir():
            return []
        files = sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        removed: list[str] = []
        for p in files:
            if total <= max_bytes:
                break
            total -= p.stat().st_size
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.stem)
        return removed

    def clear(self) -> None:
        for p in self.folder.glob("*.npz") if self.folder.is_dir() else []:
            with contextlib.suppress(OSError):
                p.unlink()


# ---------------------------------------------------------------- graph-mode extraction and inference


def predict_function(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A graph-mode ``images -> probabilities`` callable for one model (no per-call Keras data adapter).

    ``model.predict`` builds a data pipeline on every call and an eager ``model(x)`` runs layer by layer
    in Python; a traced function does neither, which is what single-image latency needs.
    """
    import tensorflow as tf

    shape = (None, *tuple(model.input_shape[1:]))

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def run(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def call(images: np.ndarray) -> np.ndarray:
        return run(tf.convert_to_tensor(np.asarray(images, dtype=np.float32))).numpy()

    return call


def _extract_steps(extractor: Any, augmenters: list[Any | None]) -> Callable[[Any], list[Any]]:
    """One traced function: a batch of pixels -> the features of every requested (augmented) view.

    Traced once (the batch dimension is left open); the plain step is kept on the extractor for reuse.
    """
    import tensorflow as tf

    plain = all(a is None for a in augmenters) and len(augmenters) == 1
    if plain and getattr(extractor, "_cnnlab_plain_step", None) is not None:
        return extractor._cnnlab_plain_step
    signature = [tf.TensorSpec((None, *tuple(extractor.input_shape[1:])), tf.float32)]

    @tf.function(input_signature=signature)
    def step(x: tf.Tensor) -> list[tf.Tensor]:
        outs = []
        for aug in augmenters:
            # Clipped like the training pipeline's augmentation (core.pipeline), so both see the same pixels.
            view = tf.clip_by_value(tf.cast(aug(x, training=True), tf.float32), 0.0, 255.0) if aug is not None else x
            outs.append(extractor(view, training=False))
        return outs

    if plain:
        extractor._cnnlab_plain_step = step
    return step


def extract_features(extractor: Any, dataset: Any, *, augmenters: list[Any | None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Run ``extractor`` in graph mode over a batched ``(pixels, labels)`` dataset.

    Returns one ``[N, D]`` float32 array per augmenter (None = the plain images) and the labels in
    dataset order. The images are decoded once however many augmented views are asked for.
    Raises ``ExtractionStopped`` when ``should_stop()`` turns true between batches.
    """
    import tensorflow as tf

    augmenters = augmenters if augmenters is not None else [None]
    step = _extract_steps(extractor, augmenters)
    chunks: list[list[np.ndarray]] = [[] for _ in augmenters]
    labels: list[np.ndarray] = []
    for x, y in dataset:
        if should_stop is not None and should_stop():
            raise ExtractionStopped()
        for i, out in enumerate(step(tf.cast(x, tf.float32))):
            chunks[i].append(out.numpy())
        labels.append(np.asarray(y))
        if on_batch is not None:
            on_batch(int(y.shape[0]))
    dim = int(extractor.output_shape[-1])
    feats = [np.concatenate(c).astype(np.float32) if c else np.zeros((0, dim), np.float32) for c in chunks]
    return feats, (np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64))


# ---------------------------------------------------------------- cached features for one split


@dataclass
class ExtractionReport:
    """What one ``cached_features`` call did: cache hits and misses, images run and the time it took."""

    hits: int = 0
    misses: int = 0
    images: int = 0
    seconds: float = 0.0

    def add(self, other: ExtractionReport) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def cached_features(extractor: Any, split: Any, *, split_name: str, spec: Any, image_size: int, channels: int,
                    cache: FeatureCache, augment: AugmentConfig | None = None, passes: int = 1, seed: int = 0,
                    batch_size: int = EXTRACT_BATCH, extractor_hash: str | None = None,
                    should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, ExtractionReport]:
    """The split's features ``[passes, N, D]``: cached passes are read, missing ones computed in one data pass.

    Without augmentation there is a single plain pass. Pass ``k`` of an augmented split is made by an
    augmenter seeded from ``(seed, k)``, so it is the same whatever ``passes`` is and can be reused.
    """
    from core.pipeline import build_augmenter, make_tf_dataset

    augmented = augment is not None and augment.enabled
    passes = max(int(passes), 1) if augmented else 1
    ehash = extractor_hash or extractor_fingerprint(extractor)
    labels = np.asarray(split.labels, dtype=np.int64)
    shash = split_fingerprint(split)
    keys = [feature_cache_key(split_name=split_name, split_hash=shash, backbone=spec.backbone or spec.name,
                              alpha=spec.alpha, weights=spec.weights, image_size=image_size, channels=channels,
                              extractor_hash=ehash, augment=augment if augmented else None, seed=seed,
                              pass_index=k) for k in range(passes)]
    report = ExtractionReport()
    found: dict[int, np.ndarray] = {}
    for k, key in enumerate(keys):
        feats = cache.get(key, labels)
        if feats is not None:
            found[k] = feats
    report.hits = len(found)
    missing = [k for k in range(passes) if k not in found]
    if missing:
        t0 = time.perf_counter()
        dataset = make_tf_dataset(split, image_size=image_size, channels=channels, batch_size=batch_size,
                                  training=False, augment=None, seed=seed)
        augmenters = [build_augmenter(augment, seed=_pass_seed(seed, k)) if augmented else None for k in missing]
        feats_list, got_labels = extract_features(extractor, dataset, augmenters=augmenters, should_stop=should_stop)
        if not np.array_equal(got_labels, labels):
            raise RuntimeError("the input pipeline returned the images of a split out of order")
        for k, feats in zip(missing, feats_list):
            cache.put(keys[k], feats, labels)
            found[k] = feats
        report.misses = len(missing)
        report.images = len(labels) * len(missing)
        report.seconds = time.perf_counter() - t0
    return np.stack([found[k] for k in range(passes)]), report


def _pass_seed(seed: int, pass_index: int) -> int:
    return int(seed) * 7919 + 101 * (int(pass_index) + 1)


# ---------------------------------------------------------------- training the head on cached features


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
        backbone = model.get_layer(BACKBONE_LAYER)
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


def _redirected(callbacks: list[Any], view: _CallbackView) -> list[Any]:
    """Wrap callbacks so that Keras hands them ``view`` instead of the head model it is fitting."""
    import keras

    class Redirect(keras.callbacks.Callback):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def set_model(self, model: Any) -> None:
            super().set_model(model)
            self.inner.set_model(view)

        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self.inner.set_params(params)

    hooks = [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]
    for hook in hooks:
        setattr(Redirect, hook, (lambda h: lambda self, *a, **k: getattr(self.inner, h)(*a, **k))(hook))
    return [Redirect(cb) for cb in callbacks]


@dataclass(frozen=True)
class CachedFitContext:
    """What the feature-cache path needs from a run besides the model: data, home and the run's hooks."""

    config: TrainConfig
    home: Path
    train: Any  # core.datasets.Split
    val: Any | None
    channels: int
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str, str], None] = lambda kind, text: None
    naming_lock: Any = None  # the lock that guards Keras' global layer naming, if the caller has one


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
    context.log("info", _report_sentence(report))
    cache.prune(MAX_CACHE_MB * 2**20)

    bs = cfg.batch_size
    train_ds = feature_batches(train_feats, context.train.labels, batch_size=bs, epochs=n_epochs, seed=cfg.seed)
    steps = max(math.ceil(len(context.train) / bs), 1)
    with model.distribute_strategy.scope():
        # Head steps take about a millisecond: run up to HEAD_STEPS_PER_CALL of them per graph call, so
        # Python and callback overhead does not dominate; a stop still lands within one call (< 1 s).
        head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                     steps_per_execution=steps_per_call(steps))
    view = _CallbackView(model, head, val_images, val_feats)
    model.stop_training = False
    # Validation is scored from the cached validation features through one traced function, not by
    # Keras' validation_data (an evaluate loop with its own data adapter every epoch).
    scores = [] if val_feats is None else [_validation_callback(head, val_feats, context.val.labels)]
    return head.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    callbacks=scores + _redirected(callbacks, view), class_weight=class_weight, shuffle=False, verbose=0)


def steps_per_call(steps: int, most: int = HEAD_STEPS_PER_CALL) -> int:
    """The largest divisor of an epoch's steps up to ``most``: Keras runs whole calls, so a call that
    overran the epoch would eat the next epoch's batches (and the last epoch would run out)."""
    return max(d for d in range(1, min(steps, most) + 1) if steps % d == 0)


def _validation_callback(head: Any, features: np.ndarray, labels: np.ndarray) -> Any:
    """A callback writing ``val_loss`` / ``val_accuracy`` into the epoch logs, as ``validation_data`` would."""
    import keras

    from core.training import validation_scores

    labels = np.asarray(labels, dtype=np.int64)

    class ValidationScores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["val_loss"], logs["val_accuracy"] = validation_scores(predict_in_chunks(head, features),
                                                                           labels, head)

    return ValidationScores()


def _cached_views(model: Any, context: CachedFitContext) -> tuple[Any, Any, str]:
    """``(extractor, head, extractor fingerprint)`` of a frozen-base model, built once per model object."""
    views = getattr(model, "_cnnlab_cached_views", None)
    if views is None:
        lock = context.naming_lock if context.naming_lock is not None else contextlib.nullcontext()
        with lock, model.distribute_strategy.scope():
            extractor, head = split_transfer_model(model)
        views = (extractor, head, extractor_fingerprint(extractor))
        model._cnnlab_cached_views = views
    return views


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
        context.log("info", f"{split_name.capitalize()} split: {_report_sentence(report)}")
    return predict_in_chunks(head, feats[0])


def predict_in_chunks(head: Any, features: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The head's probabilities for feature vectors, through one traced function kept on the head.

    ``head.predict`` builds a data adapter on every call (~0.1 s); once an epoch, that is most of a
    cached-feature epoch.
    """
    run = getattr(head, "_cnnlab_predict", None)
    if run is None:
        run = head._cnnlab_predict = predict_function(head)
    parts = [run(features[i:i + chunk]) for i in range(0, len(features), chunk)]
    n_classes = int(head.output_shape[-1])
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, n_classes), np.float32)


def _report_sentence(report: ExtractionReport) -> str:
    if report.misses == 0:
        return f"Backbone features reused from the cache ({report.hits} cached pass(es)): no backbone pass needed."
    rate = report.images / report.seconds if report.seconds > 0 else float("nan")
    return (f"Backbone features computed for {report.images:,} images in {report.seconds:.1f} s "
            f"({rate:.0f} images/s; {report.hits} pass(es) reused from the cache).")
