"""Cached backbone features: hits, misses, invalidation, augmented passes, and head training on features."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from data_factory import make_class_folder

from core.config import AugmentConfig, ModelSpec, SplitConfig, TrainConfig
from core.data.dataset import Split
from core.data.pipeline import make_tf_dataset
from core.models.runtime import predict_function
from core.training.cached_head import (
    CachedFitContext,
    feature_batches,
    fit_on_cached_features,
    passes_for,
    split_transfer_model,
    wants_cached_features,
)
from core.training.callbacks import ValidationScores
from core.training.feature_cache import (
    ExtractionStopped,
    FeatureCache,
    cached_features,
    extract_features,
    split_fingerprint,
)

SPEC = ModelSpec(name="transfer:mobilenet_v2", weights=None)
SIZE = 16


def _images(n: int = 24, size: int = SIZE, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return Split(labels=np.arange(n) % 3, images=images)


def _extractor(scale: float = 1 / 255, seed: int = 0) -> keras.Model:
    """A tiny stand-in for a backbone: preprocessing + conv + global pooling."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(scale)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x)


def _get(extractor, split, cache, **kw):
    kw.setdefault("image_size", SIZE)
    return cached_features(extractor, split, split_name="train", spec=SPEC, channels=3, cache=cache, **kw)


def test_miss_then_hit_returns_the_extractors_features(home: Path) -> None:
    """The first call computes and stores; the second reads the same numbers without running the model."""
    split, ext, cache = _images(), _extractor(), FeatureCache(home)
    first, rep1 = _get(ext, split, cache)
    assert (rep1.hits, rep1.misses, rep1.images) == (0, 1, len(split))
    assert first.shape == (1, len(split), 8)
    assert len(cache.keys()) == 1 and (home / "feature-cache").is_dir()
    expected = ext.predict(split.images.astype("float32"), verbose=0)
    np.testing.assert_allclose(first[0], expected, rtol=1e-5, atol=1e-6)

    second, rep2 = _get(ext, split, cache)
    assert (rep2.hits, rep2.misses, rep2.images) == (1, 0, 0)
    np.testing.assert_array_equal(first, second)


def test_any_input_change_invalidates(home: Path) -> None:
    """Labels, pixels, weights, preprocessing, image size and augmentation each change the key."""
    split, ext, cache = _images(), _extractor(), FeatureCache(home)
    _get(ext, split, cache)
    relabelled = Split(labels=split.labels[::-1].copy(), images=split.images)
    pixels = split.images.copy()
    pixels[3, 0, 0, 0] ^= 1
    changed_pixel = Split(labels=split.labels, images=pixels)
    variants = {
        "labels": (ext, relabelled, {}),
        "pixels": (ext, changed_pixel, {}),
        "weights": (_extractor(seed=1), split, {}),
        "preprocessing": (_extractor(scale=1 / 127.5), split, {}),
        "image size": (ext, split, {"image_size": SIZE - 2}),
        "augmentation": (ext, split, {"augment": AugmentConfig(flip="horizontal")}),
    }
    for what, (e, s, kw) in variants.items():
        if what == "image size":
            e = keras.Sequential([keras.Input((SIZE - 2, SIZE - 2, 3)), *ext.layers[1:]])
        _, report = _get(e, s, cache, **kw)
        assert report.misses == 1 and report.hits == 0, what
    _, again = _get(ext, split, cache)
    assert again.hits == 1, "the original entry must still be valid"


def test_augmented_passes_differ_and_are_reused_when_k_grows(home: Path) -> None:
    """Each augmented pass is a different view; raising K computes only the new passes."""
    split, ext, cache = _images(), _extractor(), FeatureCache(home)
    aug = AugmentConfig(flip="both", rotation=0.2, contrast=0.3)
    two, rep = _get(ext, split, cache, augment=aug, passes=2, seed=5)
    assert rep.misses == 2 and two.shape[0] == 2
    plain, _ = _get(ext, split, cache)
    assert not np.allclose(two[0], two[1])
    assert not np.allclose(two[0], plain[0])
    three, rep3 = _get(ext, split, cache, augment=aug, passes=3, seed=5)
    assert (rep3.hits, rep3.misses) == (2, 1)
    np.testing.assert_array_equal(three[:2], two)
    # Without augmentation K is ignored: there is one plain pass.
    one, rep1 = _get(ext, split, cache, augment=AugmentConfig(), passes=4)
    assert one.shape[0] == 1 and rep1.hits == 1


def test_damaged_file_is_a_miss_and_no_temp_files_remain(home: Path) -> None:
    """A truncated cache file is recomputed and replaced; atomic writes leave nothing half-written."""
    split, ext, cache = _images(), _extractor(), FeatureCache(home)
    _get(ext, split, cache)
    (path,) = (home / "feature-cache").glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    _, report = _get(ext, split, cache)
    assert report.misses == 1
    _, report = _get(ext, split, cache)
    assert report.hits == 1
    assert [p.name for p in (home / "feature-cache").iterdir()] == [path.name]


def test_prune_removes_least_recently_used(home: Path) -> None:
    cache = FeatureCache(home)
    for i in range(3):
        cache.put(f"k{i}", np.ones((100, 10), np.float32) * i, np.zeros(100))
    one = cache.path("k0").stat().st_size
    assert cache.get("k0") is not None  # k0 becomes the most recently used
    removed = cache.prune(max_bytes=one + 10)
    assert set(removed) == {"k1", "k2"} and cache.keys() == ["k0"]


def test_file_fingerprint_follows_file_contents(tmp_path: Path) -> None:
    """A folder split's fingerprint changes when a file is rewritten, even under the same name."""
    files = []
    for i in range(3):
        f = tmp_path / f"{i}.bin"
        f.write_bytes(b"x" * (i + 1))
        files.append(str(f))
    split = Split(labels=np.array([0, 1, 0]), files=files)
    before = split_fingerprint(split)
    assert split_fingerprint(split) == before
    Path(files[1]).write_bytes(b"yyyy")
    assert split_fingerprint(split) != before


def test_feature_batches_cycle_through_passes() -> None:
    """Epoch e trains on pass e % K, every sample once per epoch, ceil(N / B) batches per epoch."""
    passes, n, bs, epochs = 3, 10, 4, 5
    feats = np.stack([np.full((n, 2), k, np.float32) + np.arange(n)[:, None] / 100 for k in range(passes)])
    labels = np.arange(n)
    batches = list(feature_batches(feats, labels, batch_size=bs, epochs=epochs, seed=0).as_numpy_iterator())
    per_epoch = -(-n // bs)
    assert len(batches) == epochs * per_epoch
    for e in range(epochs):
        chunk = batches[e * per_epoch:(e + 1) * per_epoch]
        x = np.concatenate([b[0] for b in chunk])
        y = np.concatenate([b[1] for b in chunk])
        assert sorted(y.tolist()) == list(range(n))
        assert np.all(np.floor(x[:, 0]) == e % passes)
        np.testing.assert_allclose(x[:, 0] - e % passes, y / 100, atol=1e-6)


def test_extraction_stops_between_batches() -> None:
    ext = _extractor()
    ds = make_tf_dataset(_images(), image_size=SIZE, channels=3, batch_size=4, training=False)
    seen = []
    with pytest.raises(ExtractionStopped):
        extract_features(ext, ds, should_stop=lambda: len(seen) >= 2, on_batch=seen.append)
    assert len(seen) == 2


def test_predict_function_matches_model() -> None:
    ext = _extractor()
    x = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(predict_function(ext)(x), ext.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_passes_and_eligibility() -> None:
    cfg = TrainConfig(model=SPEC, augment=AugmentConfig.preset("light"), feature_cache_passes=3)
    assert passes_for(cfg, epochs=10) == 3
    assert passes_for(cfg, epochs=2) == 2
    assert passes_for(cfg.replace(augment=AugmentConfig()), epochs=10) == 1
    model = _tiny_transfer()
    assert wants_cached_features(model, cfg)
    assert not wants_cached_features(model, cfg.replace(use_feature_cache=False))
    model.get_layer("backbone").trainable = True
    assert not wants_cached_features(model, cfg), "an unfrozen backbone (fine-tuning) needs full passes"


def _tiny_transfer() -> keras.Model:
    from core.models.registry import build_model

    return build_model(SPEC, (32, 32, 3), 3)


class _Probe(keras.callbacks.Callback):
    """Checks what a run's callbacks see during cached training, and stops after ``stop_after`` epochs."""

    def __init__(self, full: keras.Model, val_images, stop_after: int, tmp: Path) -> None:
        super().__init__()
        self.full, self.val_images, self.stop_after, self.tmp = full, val_images, stop_after, tmp
        self.val_match: list[bool] = []
        self.saved_inputs: tuple | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        got = self.model.predict(self.val_images, verbose=0)
        want = self.full.predict(self.val_images, verbose=0)
        self.val_match.append(bool(np.allclose(got, want, atol=1e-5)))
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(logs or {})
        if epoch + 1 >= self.stop_after:
            self.model.save(self.tmp / "m.keras")
            self.saved_inputs = tuple(keras.models.load_model(self.tmp / "m.keras").input_shape)
            self.model.stop_training = True


@pytest.mark.slow
def test_head_trains_on_features_with_the_runs_callbacks(home: Path, tmp_path: Path) -> None:
    """Callbacks see the full model (saves take raw pixels; validation predictions agree), stop works,
    and the trained head ends up inside the full model."""
    rng = np.random.default_rng(1)
    train = Split(labels=np.arange(30) % 3, images=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8))
    val = Split(labels=np.arange(9) % 3, images=rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8))
    cfg = TrainConfig(model=SPEC, image_size=32, batch_size=8, epochs=5, split=SplitConfig())
    model = _tiny_transfer()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.get_layer("predictions").kernel.numpy().copy()
    val_images = make_tf_dataset(val, image_size=32, channels=3, batch_size=8, training=False)
    probe = _Probe(model, val_images, stop_after=2, tmp=tmp_path)
    ctx = CachedFitContext(config=cfg, home=home, train=train, val=val, channels=3)
    scores = ValidationScores(val_images, val.labels, skip=lambda: False)  # first, as the job puts it
    history = fit_on_cached_features(model, val_images, epochs=5, initial_epoch=0, callbacks=[scores, probe],
                                     class_weight=None, context=ctx)
    assert len(history.history["loss"]) == 2, "stop_training from a callback must end the fit"
    assert probe.val_match == [True, True]
    assert scores.probs is not None and scores.probs.shape == (9, 3)  # answered from the cached features
    assert probe.saved_inputs == (None, 32, 32, 3)
    assert not np.allclose(model.get_layer("predictions").kernel.numpy(), before)
    assert len(FeatureCache(home).keys()) == 2  # train + val

    stopped = CachedFitContext(config=cfg, home=home / "other", train=train, val=val, channels=3,
                               should_stop=lambda: True)
    assert fit_on_cached_features(model, val_images, epochs=5, initial_epoch=0, callbacks=[], class_weight=None,
                                  context=stopped) is None


def test_split_transfer_model_shares_weights() -> None:
    model = _tiny_transfer()
    extractor, head = split_transfer_model(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(head(extractor(x)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert head.get_layer("predictions") is model.get_layer("predictions")


def _cached_matches_full(home: Path, cfg: TrainConfig) -> None:
    """The cached-feature run's test accuracy is within 2 points of full passes, its features land in the
    home's cache, its model.keras takes raw pixels, and its test predictions are the saved model's."""
    from core.store.runs import RunStore
    from core.training.manager import train_to_completion

    size = cfg.image_size
    store = RunStore(home)
    full = train_to_completion(cfg.replace(use_feature_cache=False), store)
    cached = train_to_completion(cfg, store)
    assert full["status"] == cached["status"] == "finished", (full["message"], cached["message"])
    events = [e["text"] for e in store.events(cached["run_id"])]
    assert any("Backbone features computed" in t for t in events), events
    assert not any("Backbone features" in e["text"] for e in store.events(full["run_id"]))
    accs = (full["test"]["accuracy"], cached["test"]["accuracy"])
    assert accs[0] > 0.6, f"the comparison needs a model that learned something: {accs}"
    assert abs(accs[1] - accs[0]) <= 0.02, f"full vs cached test accuracy: {accs}"
    assert len(cached["history"]["val_loss"]) == cfg.epochs

    # train, validation and test features, one plain pass each (the test split is scored from its features)
    assert sorted(k.split("-")[0] for k in FeatureCache(home).keys()) == ["test", "train", "val"]
    model = keras.models.load_model(store.run_dir(cached["run_id"]) / "model.keras")
    assert tuple(model.input_shape) == (None, size, size, 3) and model.get_layer("backbone") is not None

    # The test predictions made from cached features are what the saved model predicts from the pixels.
    from core.data.sources import load_dataset

    test = load_dataset(cfg.data, cfg.split, home=home).splits["test"]
    pixels = make_tf_dataset(test, image_size=size, channels=3, batch_size=16, training=False)
    with np.load(store.run_dir(cached["run_id"]) / "predictions.npz") as saved:
        np.testing.assert_allclose(saved["probs"], model.predict(pixels, verbose=0), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cached_training_matches_full_passes(home: Path, tmp_path: Path) -> None:
    """A frozen backbone with random weights (no download, nothing beside the repository): random VGG16
    features tell class colours apart, so both ways of training really learn."""
    root = make_class_folder(tmp_path / "colours", classes=("a", "b", "c", "d"), per_class=40, size=32)
    _cached_matches_full(home, TrainConfig(
        data=str(root), split=SplitConfig(val_fraction=0.2, test_fraction=0.4, seed=0),
        model=ModelSpec(name="transfer:vgg16", head_units=32, weights=None),
        image_size=32, batch_size=16, epochs=6, seed=0, learning_rate=1e-2))


@pytest.mark.slow
def test_cached_training_matches_full_passes_on_imagenet_features(home: Path, imagenet_keras_home: Path) -> None:
    """The same with real ImageNet MobileNetV2 features on generated shapes (needs the offline weights)."""
    _cached_matches_full(home, TrainConfig(
        data="builtin:shapes?per_class=60&size=48&seed=3",
        split=SplitConfig(val_fraction=0.2, test_fraction=0.4, seed=0),
        model=ModelSpec(name="transfer:mobilenet_v2", alpha=0.35, head_units=32),
        image_size=96, batch_size=16, epochs=4, seed=0))


def test_steps_per_call_divides_the_epoch() -> None:
    from core.training.cached_head import steps_per_call

    assert [steps_per_call(n) for n in (1, 18, 32, 33, 45, 47, 64)] == [1, 18, 32, 11, 15, 1, 32]


@pytest.mark.slow
def test_head_epochs_see_every_batch_once_when_steps_are_grouped(home: Path) -> None:
    """33 steps an epoch run as 3 calls of 11: each epoch ends on its own last batch, none runs out of data."""

    class Steps(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[list[int]] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.ends.append([])

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends[-1].append(batch)

    rng = np.random.default_rng(2)
    train = Split(labels=np.arange(66) % 3, images=rng.integers(0, 256, (66, 32, 32, 3), dtype=np.uint8))
    cfg = TrainConfig(model=SPEC, image_size=32, batch_size=2, epochs=3, split=SplitConfig())
    model = _tiny_transfer()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    steps = Steps()
    history = fit_on_cached_features(model, None, epochs=3, initial_epoch=0, callbacks=[steps], class_weight=None,
                                     context=CachedFitContext(config=cfg, home=home, train=train, val=None,
                                                              channels=3))
    assert len(history.history["loss"]) == 3
    assert steps.ends == [[10, 21, 32]] * 3
