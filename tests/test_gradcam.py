"""Grad-CAM: it must point at the evidence (marker test), find its layer in every model shape, and draw right."""

from __future__ import annotations

import threading
import time

import keras
import numpy as np
import pytest

from core.data.pixels import to_model_pixels
from core.errors import UserError
from core.explain.gradcam import GradCam, find_target_layer, heatmap_peak, overlay, target_layer_choices

SIZE, PATCH, CLASSES = 32, 6, 3
MARGIN = 2  # pixels the marker box is dilated by when judging a peak (the 8x8 map has 4-pixel cells)


# ------------------------------------------------------------------------------------ the marker data set


def _patterns() -> list[np.ndarray]:
    """Black/white 6x6 textures, one per class: same colours, so only the pattern tells the class."""
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    return [(yy // 2 + xx // 2) % 2, (yy // 2) % 2, (xx // 2) % 2]  # checkerboard, rows, columns


def _distractor() -> np.ndarray:
    """A hollow square: as salient as a marker but worthless for the class."""
    d = np.ones((PATCH, PATCH), int)
    d[1:-1, 1:-1] = 0
    return d


def _free_corners(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Top-left corners of ``count`` patches whose boxes, dilated by MARGIN, never overlap."""
    while True:
        corners = [rng.integers(0, SIZE - PATCH + 1, 2) for _ in range(count)]
        if all(np.abs(a - b).max() >= PATCH + 2 * MARGIN for i, a in enumerate(corners) for b in corners[:i]):
            return corners


def marker_dataset(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Noisy images whose class is decided only by one marker patch, plus 0-2 class-independent distractors.

    The distractor count varies so a model cannot fold their evidence into a constant bias: it must ignore them.
    Returns images, labels, marker corners [n, 2] and each image's list of distractor corners.
    """
    images = rng.integers(40, 216, (n, SIZE, SIZE, 3)).astype(np.uint8)
    labels = rng.integers(0, CLASSES, n)
    markers, distractors = np.zeros((n, 2), int), []
    patterns, distractor = _patterns(), _distractor()
    for i in range(n):
        marker, *others = _free_corners(1 + int(rng.integers(0, 3)), rng)
        for corner, patch in [(marker, patterns[labels[i]]), *((d, distractor) for d in others)]:
            images[i, corner[0] : corner[0] + PATCH, corner[1] : corner[1] + PATCH] = (patch * 255)[:, :, None]
        markers[i] = marker
        distractors.append(others)
    return images, labels, markers, distractors


def small_cnn(kind: str) -> keras.Model:
    """Three convs over rescaled pixels, then global average pooling and a softmax.

    "functional": ReLU convs, GAP, Dense. "sequential": the last conv followed by BatchNorm, ReLU, GAP and Dropout,
    so the target is the activation after the conv.
    """
    base = [
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
    ]
    head = keras.layers.Dense(CLASSES, activation="softmax")
    if kind == "sequential":
        tail = [
            keras.layers.Conv2D(32, 3, padding="same", name="last_conv"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(name="last_act"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
        ]
        return keras.Sequential([keras.Input((SIZE, SIZE, 3)), *base, *tail, head])
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for layer in [*base, keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")]:
        x = layer(x)
    return keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(x)))


def _inside(point: tuple[int, int], corner: np.ndarray) -> bool:
    """Is the pixel inside the patch box whose top-left is ``corner``, dilated by MARGIN on every side?"""
    r, c = point
    top, left = corner[0] - MARGIN, corner[1] - MARGIN
    return bool(top <= r < top + PATCH + 2 * MARGIN and left <= c < left + PATCH + 2 * MARGIN)


@pytest.fixture(scope="module", params=["functional", "sequential"])
def trained(request: pytest.FixtureRequest) -> dict:
    """A small CNN trained on the marker data (fixed seeds), with its held-out test images."""
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train, _, _ = marker_dataset(600, rng)
    x_test, y_test, markers, distractors = marker_dataset(150, rng)
    model = small_cnn(request.param)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train.astype("float32"), y_train, epochs=10, batch_size=32, verbose=0)
    pred = model.predict(x_test.astype("float32"), verbose=0).argmax(axis=1)
    return dict(
        kind=request.param, model=model, x=x_test, y=y_test, pred=pred,
        markers=markers, distractors=distractors, fit_seconds=time.perf_counter() - start,
    )


@pytest.mark.slow
def test_gradcam_peak_falls_on_the_marker(trained: dict) -> None:
    """Acceptance: for >= 80 % of correctly classified test images, the peak of the predicted-class heatmap
    (upsampled to 32x32 exactly as ``overlay`` draws it) lies inside the 6x6 marker box dilated by 2 px.

    And it is the marker's class that matters, not its contrast: at most 10 % of peaks fall on a (dilated)
    distractor box, and the heatmap of a class absent from the image peaks on the marker for at most half of them.
    """
    start = time.perf_counter()
    correct = trained["pred"] == trained["y"]
    assert correct.mean() >= 0.8, f"the CNN did not learn the markers (test accuracy {correct.mean():.2f})"
    cam = GradCam(trained["model"])
    assert cam.layer_name == ("last_act" if trained["kind"] == "sequential" else "last_conv")
    assert cam.map_size == (8, 8)

    images, markers = trained["x"][correct], trained["markers"][correct]
    distractors = [d for d, ok in zip(trained["distractors"], correct) if ok]
    peaks = [heatmap_peak(h, images.shape[1:3]) for h in cam.heatmaps(images)]
    hit = np.mean([_inside(p, m) for p, m in zip(peaks, markers)])
    on_distractor = np.mean([any(_inside(p, d) for d in ds) for p, ds in zip(peaks, distractors)])
    absent = (trained["y"][correct] + 1) % CLASSES
    peaks_absent = [heatmap_peak(h, images.shape[1:3]) for h in cam.heatmaps(images, list(absent))]
    hit_absent = np.mean([_inside(p, m) for p, m in zip(peaks_absent, markers)])
    print(
        f"\n[{trained['kind']}] accuracy {correct.mean():.3f}, marker hit rate {hit:.3f} on {correct.sum()} images, "
        f"distractor {on_distractor:.3f}, absent-class hit {hit_absent:.3f}; "
        f"train {trained['fit_seconds']:.1f}s, Grad-CAM {time.perf_counter() - start:.1f}s"
    )
    assert hit >= 0.8
    assert on_distractor <= 0.1
    assert hit_absent <= 0.5


def test_class_index_is_honoured_and_batches_match_single_calls(trained: dict) -> None:
    cam = GradCam(trained["model"])
    images = trained["x"][:6]
    predicted = trained["pred"][:6]
    other = (predicted + 1) % CLASSES
    for img, p, o in zip(images, predicted, other):
        assert not np.allclose(cam.heatmap(img, int(p)), cam.heatmap(img, int(o)), atol=1e-3)
    batch = cam.heatmaps(images, [None, *other[1:]])
    assert batch.shape == (6, 8, 8) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], cam.heatmap(images[0], int(predicted[0])), atol=1e-5)
    for i in range(1, 6):
        np.testing.assert_allclose(batch[i], cam.heatmap(images[i], int(other[i])), atol=1e-5)
    with pytest.raises(ValueError):
        cam.heatmap(images[0], CLASSES)


# ------------------------------------------------------------------------------------- target discovery


def _sequential_with_trailing_pool() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, padding="same", name="c2"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="act"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Dropout(0.2, name="drop"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_target_layer_in_sequential_is_the_last_conv_activation_not_the_pool() -> None:
    model = _sequential_with_trailing_pool()
    assert find_target_layer(model) == "act"
    cam = GradCam(model)
    assert cam.map_size == (12, 12)
    hm = cam.heatmap(np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    assert hm.shape == (12, 12) and hm.dtype == np.float32 and 0.0 <= hm.min() and hm.max() <= 1.0
    assert GradCam(model, "pool").map_size == (6, 6)  # the caller can override


def test_target_layer_in_functional_follows_a_residual_join() -> None:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(x)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(a)
    x = keras.layers.ReLU(name="joined")(keras.layers.Add(name="add")([a, b]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert find_target_layer(model) == "joined"
    assert GradCam(model).heatmap(np.zeros((16, 16, 3), np.uint8)).shape == (16, 16)


def _transfer_model(classes: int = 3, size: int = 96) -> tuple[keras.Model, keras.Model]:
    """The app's transfer layout: preprocessing inside, frozen MobileNetV2 nested as "backbone", training=False."""
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None, alpha=0.35)
    base.name = "backbone"
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)), base


@pytest.mark.slow
def test_nested_mobilenetv2_backbone_matches_a_hand_computed_gradcam() -> None:
    """GAP + Dense head: Grad-CAM of class c is ReLU(A @ (W[:, c] - mean_j W[:, j])) up to scale (centred logits)."""
    model, base = _transfer_model()
    assert find_target_layer(model) == "backbone/out_relu"
    assert "backbone/block_13_expand_relu" in target_layer_choices(model)
    cam = GradCam(model)
    img = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    maps = cam.heatmaps([img] * 3, [0, 1, 2])

    features = keras.Model(base.input, base.get_layer("out_relu").output)
    acts = np.asarray(features(img[None].astype("float32") / 127.5 - 1.0))[0]
    kernel = np.asarray(model.layers[-1].kernel)
    kernel = kernel - kernel.mean(axis=1, keepdims=True)
    for c in range(3):
        expected = np.maximum(acts @ kernel[:, c], 0)
        expected = expected / expected.max() if expected.max() > 0 else expected
        np.testing.assert_allclose(maps[c], expected, atol=1e-4)
    assert max(m.max() for m in maps) == pytest.approx(1.0)

    inner = GradCam(model, "backbone/block_13_expand_relu")
    assert inner.heatmap(img).shape == (6, 6)


def test_bad_layer_names_are_user_errors() -> None:
    model, _ = _transfer_model(size=32)
    with pytest.raises(UserError, match="not a layer"):
        GradCam(model, "backbone/no_such_layer")
    with pytest.raises(UserError, match="sub-model"):
        GradCam(model, "backbone")
    with pytest.raises(UserError, match="image-shaped"):
        GradCam(model, model.layers[-1].name)
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(UserError):
        find_target_layer(flat)


# ----------------------------------------------------------------------------------- inputs and drawing


def _tiny_model(channels: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((20, 20, channels)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_grayscale_images_work_for_gray_and_rgb_models() -> None:
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    cam = GradCam(_tiny_model(1))
    hm = cam.heatmap(gray, 1)
    assert hm.shape == (20, 20) and hm.dtype == np.float32
    np.testing.assert_allclose(cam.heatmap(gray[:, :, None], 1), hm, atol=1e-6)

    rgb_cam = GradCam(_tiny_model(3))  # a gray photo given to a colour model is tiled to RGB
    np.testing.assert_allclose(rgb_cam.heatmap(gray, 0), rgb_cam.heatmap(np.dstack([gray] * 3), 0), atol=1e-6)
    # Another size is resized the way the model sees photos (core.data.pixels), not refused.
    odd = rng.integers(0, 256, (31, 27), dtype=np.uint8)
    np.testing.assert_allclose(cam.heatmap(odd, 1), cam.heatmap(to_model_pixels(odd, 20, 1), 1), atol=1e-6)


def test_overlay_shape_dtype_and_blend() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    heat = np.zeros((5, 5), np.float32)
    heat[1, 3] = 1.0
    out = overlay(image, heat)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    pure = overlay(image, heat, alpha=1.0)  # jet: hot is red, cold is blue
    r, c = heatmap_peak(heat, image.shape)
    assert pure[r, c, 0] > 100 and pure[r, c, 2] < 50
    assert pure[39, 0, 2] > 100 and pure[39, 0, 0] < 50
    assert not np.array_equal(overlay(image, heat, colormap="viridis"), out)

    gray = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    for g in (gray, gray[:, :, None]):
        tiled = overlay(g, heat, alpha=0.0)
        assert tiled.shape == (40, 30, 3) and tiled.dtype == np.uint8
        np.testing.assert_array_equal(tiled, np.dstack([gray] * 3))
    with pytest.raises(UserError):
        overlay(image, heat, colormap="rainbow-unicorn")
    with pytest.raises(ValueError):
        overlay(image, heat, alpha=1.5)


def test_heatmap_peak_is_in_image_pixels() -> None:
    heat = np.zeros((4, 4), np.float32)
    heat[1, 2] = 1.0
    r, c = heatmap_peak(heat, (32, 32, 3))
    assert 4 <= r < 12 and 16 <= c < 24  # inside the 8x8-pixel block of cell (1, 2)
    r, c = heatmap_peak(heat, (40, 20))
    assert 10 <= r < 20 and 10 <= c < 15


def test_concurrent_callers_on_different_models_get_their_own_answers() -> None:
    models = [_sequential_with_trailing_pool(), _sequential_with_trailing_pool()]
    images = np.random.default_rng(5).integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)
    cams = [GradCam(m) for m in models]
    expected = [c.heatmaps(images) for c in cams]
    assert not np.allclose(expected[0], expected[1])  # different weights, different maps
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i].append(cams[i].heatmaps(images))
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and all(len(r) == 5 for r in results.values())
    for i in (0, 1):
        for got in results[i]:
            np.testing.assert_allclose(got, expected[i], atol=1e-6)


# ------------------------------------------------------------------------- every architecture the app builds


def _app_specs() -> list:
    from core.config import ConvBlock, CustomArchitecture, ModelSpec
    from core.models.registry import list_models

    specs = [ModelSpec(name=info.name) for info in list_models() if info.kind == "scratch"]
    blocks = (ConvBlock(8, batch_norm=True, dropout=0.1), ConvBlock(16, convs=2, pool="avg"))
    specs += [ModelSpec(name="custom", custom=CustomArchitecture(blocks=blocks, head=h)) for h in ("flatten", "gap")]
    return specs


@pytest.mark.parametrize("spec", _app_specs(), ids=lambda s: s.name + (f"-{s.custom.head}" if s.custom else ""))
def test_every_scratch_and_custom_model_is_explained_at_its_last_conv(spec) -> None:
    from core.models.registry import build_model
    from core.models.scratch import LAST_CONV

    model = build_model(spec, (32, 32, 3), 3)
    cam = GradCam(model)
    assert cam.map_size == GradCam(model, LAST_CONV).map_size  # never coarsened by a pooling layer
    hm = cam.heatmap(np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert hm.shape == cam.map_size and np.isfinite(hm).all() and 0.0 <= hm.min() and hm.max() <= 1.0


def test_app_transfer_model_on_gray_images_is_explained_inside_its_backbone() -> None:
    from core.config import ModelSpec
    from core.models.registry import build_model

    model = build_model(ModelSpec(name="transfer:mobilenet_v2", weights=None), (64, 64, 1), 2)
    cam = GradCam(model)
    assert cam.layer_name == "backbone/out_relu" and cam.channels == 1
    hm = cam.heatmap(np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8), 1)
    assert hm.shape == (2, 2) and np.isfinite(hm).all() and hm.max() <= 1.0
