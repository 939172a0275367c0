"""The architecture registry: presets, custom builder, transfer backbones, parameter counts, fine-tuning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from core.config import ConvBlock, CustomArchitecture, ModelSpec
from core.errors import UserError
from core.explain.gradcam import find_target_layer
from core.models.registry import build_model, count_params, layer_table, list_models
from core.models.scratch import LAST_CONV, MAX_FLATTEN_FEATURES
from core.models.transfer import (
    BACKBONE,
    assemble_transfer,
    feature_extractor,
    head_model,
    keras_models_dir,
    unfreeze_top,
    weights_file,
)

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [m.name for m in list_models() if m.kind == "scratch"]
BACKBONES = ["mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16", "densenet121"]


def _pixels(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def _probabilities_ok(model: keras.Model, shape: tuple[int, int, int], classes: int) -> None:
    probs = np.asarray(model(_pixels(2, shape), training=False))
    assert probs.shape == (2, classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


# ------------------------------------------------------------------------------------------- registry


def test_list_models_names_every_architecture_with_description_and_origin() -> None:
    infos = list_models()
    names = [m.name for m in infos]
    expected = {"tiny", "classic_3block", "rps_baseline", "rps_regularised", "bn_dropout", "deep_convblock",
                "alexnet_small", "overfit_demo", "custom", *(f"transfer:{b}" for b in BACKBONES)}
    assert expected <= set(names)
    assert len(names) == len(set(names))
    for info in infos:
        d = info.to_dict()
        assert d["description"] and d["origin"] and d["kind"] in ("scratch", "transfer", "custom")
        json.dumps(d)
    mobilenet = next(m for m in infos if m.name == "transfer:mobilenet_v2")
    assert set(mobilenet.alphas) == {0.35, 0.5, 1.0}


def test_cli_models_json_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [m.name for m in list_models()]
    assert all(r["description"] for r in rows)


@pytest.mark.parametrize("bad", [
    {"spec": ModelSpec(name="nope"), "shape": (32, 32, 3), "n": 3},
    {"spec": ModelSpec(name="tiny"), "shape": (32, 32, 4), "n": 3},
    {"spec": ModelSpec(name="tiny"), "shape": (4, 4, 1), "n": 3},
    {"spec": ModelSpec(name="tiny"), "shape": (32, 32, 3), "n": 1},
    {"spec": ModelSpec(name="transfer:alexnet"), "shape": (32, 32, 3), "n": 3},
])
def test_bad_requests_raise_one_plain_sentence(bad: dict) -> None:
    with pytest.raises(UserError) as info:
        build_model(bad["spec"], bad["shape"], bad["n"])
    assert str(info.value).endswith(".") and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- scratch


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3), (64, 64, 1)])
@pytest.mark.slow
def test_preset_builds_for_small_and_medium_inputs(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(ModelSpec(name=name), shape, 4)
    assert tuple(model.input_shape[1:]) == shape
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    last = model.get_layer(LAST_CONV)
    assert isinstance(last, keras.layers.Conv2D) and len(last.output.shape) == 4
    # Grad-CAM explains the map the head sees: the last convolution after the layers that follow it at
    # the same resolution (batch norm, dropout), up to the first pooling or flatten.
    expected = LAST_CONV
    for layer in model.layers[[layer.name for layer in model.layers].index(LAST_CONV) + 1:]:
        if len(layer.output.shape) != 4 or tuple(layer.output.shape[1:3]) != tuple(last.output.shape[1:3]):
            break
        expected = layer.name
    assert find_target_layer(model) == expected
    assert model.layers[-1].name == "predictions"
    _probabilities_ok(model, shape, 4)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_at_512_px_keeps_the_flatten_head_bounded(name: str) -> None:
    model = build_model(ModelSpec(name=name), (512, 512, 3), 10)
    flat = model.get_layer("flatten")
    assert flat.output.shape[-1] <= MAX_FLATTEN_FEATURES
    assert count_params(model)["total"] < 60_000_000


def test_presets_reproduce_the_reports_layers() -> None:
    classic = build_model(ModelSpec(name="classic_3block"), (150, 150, 3), 3)
    convs = [layer for layer in classic.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128] and all(c.padding == "valid" for c in convs)
    assert [d.units for d in classic.layers if isinstance(d, keras.layers.Dense)] == [512, 3]
    assert "head_pool1" not in [layer.name for layer in classic.layers]  # the report's 150 px is untouched

    reg = build_model(ModelSpec(name="rps_regularised"), (150, 150, 3), 3)
    dense = reg.get_layer("dense1")
    assert dense.units == 128 and dense.kernel_regularizer is not None
    assert float(dense.kernel_regularizer.l2) == pytest.approx(0.01)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in reg.layers) == 3
    assert [layer.rate for layer in reg.layers if isinstance(layer, keras.layers.Dropout)] == [0.5]

    deep = build_model(ModelSpec(name="deep_convblock"), (28, 28, 1), 10)
    rates = [layer.rate for layer in deep.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == sorted(rates) and rates[0] < rates[-1]

    overfit = build_model(ModelSpec(name="overfit_demo"), (64, 64, 3), 3)
    assert not any(isinstance(layer, (keras.layers.Dropout, keras.layers.BatchNormalization))
                   for layer in overfit.layers)
    dense_params = sum(layer.count_params() for layer in overfit.layers if isinstance(layer, keras.layers.Dense))
    assert dense_params > 0.9 * overfit.count_params()  # the head, not the conv base, holds the capacity


@pytest.mark.slow
def test_tiny_reaches_90_percent_on_digits_in_five_epochs() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = (digits.images * (255 / 16)).astype("float32")
    big = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)[..., None]  # 8 -> 32 px
    x_train, x_test, y_train, y_test = train_test_split(big, digits.target, test_size=0.15,
                                                        stratify=digits.target, random_state=0)
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(name="tiny"), (32, 32, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=5, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.90


# ------------------------------------------------------------------------------------------- custom


@pytest.mark.parametrize("arch", [
    CustomArchitecture(),
    CustomArchitecture(blocks=(ConvBlock(8, 5, convs=2, batch_norm=True, pool="avg", dropout=0.1),
                               ConvBlock(16, 3, pool="none")), head="gap", dense_units=(), dropout=0.3),
    CustomArchitecture(blocks=(ConvBlock(4), ConvBlock(8), ConvBlock(8), ConvBlock(16), ConvBlock(16)),
                       head="flatten", dense_units=(64, 32), dropout=0.5, l2=0.001),
])
@pytest.mark.parametrize("shape", [(8, 8, 1), (48, 48, 3)])
def test_custom_builder_follows_the_spec(arch: CustomArchitecture, shape: tuple[int, int, int]) -> None:
    model = build_model(ModelSpec(name="custom", custom=arch), shape, 3)
    _probabilities_ok(model, shape, 3)
    types = [type(layer).__name__ for layer in model.layers]
    assert types.count("Conv2D") == sum(b.convs for b in arch.blocks)
    assert types.count("BatchNormalization") == sum(b.convs for b in arch.blocks if b.batch_norm)
    assert ("Flatten" in types) == (arch.head == "flatten")
    assert ("GlobalAveragePooling2D" in types) == (arch.head == "gap")
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)][:-1] == \
        list(arch.dense_units)
    assert model.get_layer(LAST_CONV).filters == arch.blocks[-1].filters
    if arch.blocks[0].pool == "avg" and shape[0] > 2:
        assert "AveragePooling2D" in types
    assert (len(model.losses) > 0) == (arch.l2 > 0)
    spatial = [layer.output.shape[1] for layer in model.layers if len(layer.output.shape) == 4]
    assert min(spatial) >= 1


def test_custom_builder_rejects_impossible_settings() -> None:
    for arch in (CustomArchitecture(blocks=()), CustomArchitecture(dropout=1.0),
                 CustomArchitecture(blocks=(ConvBlock(filters=0),)), CustomArchitecture(dense_units=(0,))):
        with pytest.raises(UserError):
            build_model(ModelSpec(name="custom", custom=arch), (32, 32, 3), 3)


def test_layer_table_and_count_params_match_keras() -> None:
    for spec in (ModelSpec(name="rps_regularised"), ModelSpec(name="bn_dropout"),
                 ModelSpec(name="custom", custom=CustomArchitecture(l2=0.01))):
        model = build_model(spec, (40, 40, 3), 5)
        table = layer_table(model)
        counts = count_params(model)
        assert [row["name"] for row in table] == [layer.name for layer in model.layers]
        assert sum(row["params"] for row in table) == counts["total"] == model.count_params()
        assert counts["trainable"] + counts["non_trainable"] == counts["total"]
        assert counts["non_trainable"] == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        assert (counts["non_trainable"] > 0) == has_bn  # BatchNorm's moving statistics
        conv = next(row for row in table if row["name"] == "conv1")
        assert conv["output_shape"] == "(None, 40, 40, 32)" and conv["type"] == "Conv2D" and conv["trainable"]


# ------------------------------------------------------------------------------------------- transfer


@pytest.fixture(scope="module")
def transfer_models() -> dict[str, keras.Model]:
    """Each backbone built once, weights=None, at the smallest size it accepts (RGB)."""
    return {b: build_model(ModelSpec(name=f"transfer:{b}", weights=None), (32, 32, 3), 3) for b in BACKBONES}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.slow
def test_transfer_model_structure(transfer_models: dict[str, keras.Model], backbone: str) -> None:
    model = transfer_models[backbone]
    base = model.get_layer(BACKBONE)
    assert isinstance(base, keras.Model) and not base.trainable and not base.trainable_weights
    assert len(base.output.shape) == 4 and find_target_layer(model).startswith(f"{BACKBONE}/")
    if backbone == "mobilenet_v2":
        assert find_target_layer(model) == f"{BACKBONE}/out_relu"
    names = [layer.name for layer in model.layers]
    assert names[names.index(BACKBONE):] == [BACKBONE, "pool", "head_dropout1", "head_dense", "head_dropout2",
                                              "predictions"]
    counts = count_params(model)
    head = sum(model.get_layer(n).count_params() for n in ("head_dense", "predictions"))
    assert counts["trainable"] == head
    assert sum(row["params"] for row in layer_table(model)) == counts["total"] == model.count_params()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_transfer_preprocessing_matches_keras_preprocess_input(transfer_models: dict[str, keras.Model],
                                                              backbone: str) -> None:
    model = transfer_models[backbone]
    module = {"mobilenet_v2": keras.applications.mobilenet_v2, "efficientnet_b0": keras.applications.efficientnet,
              "resnet50": keras.applications.resnet50, "vgg16": keras.applications.vgg16,
              "densenet121": keras.applications.densenet}[backbone]
    x = _pixels(2, (32, 32, 3), seed=3)
    expected = np.asarray(module.preprocess_input(x.copy()))
    names = [layer.name for layer in model.layers]
    if "preprocess" in names:
        front = keras.Model(model.inputs, model.get_layer("preprocess").output)
        got = np.asarray(front(x))
    else:  # EfficientNet normalises inside the backbone: nothing may touch the pixels before it
        assert names[1] == BACKBONE
        got = x
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_grayscale_and_tiny_inputs_are_tiled_and_upsampled() -> None:
    spec = ModelSpec(name="transfer:mobilenet_v2", alpha=0.5, weights=None)
    model = build_model(spec, (16, 16, 1), 3)
    _probabilities_ok(model, (16, 16, 1), 3)
    x = _pixels(2, (16, 16, 1))
    tiled = keras.Model(model.inputs, model.get_layer("gray_to_rgb").output)(x)
    np.testing.assert_array_equal(tiled, np.repeat(x, 3, axis=-1))
    assert tuple(model.get_layer("upsample").output.shape[1:]) == (32, 32, 3)


def test_frozen_backbone_stays_in_inference_mode_when_the_head_trains(
        transfer_models: dict[str, keras.Model]) -> None:
    # EfficientNet has dropout inside: an outer training=True must not reach it (Keras 3.15 would let it).
    model = transfer_models["efficientnet_b0"]
    front = keras.Model(model.inputs, model.get_layer("pool").output)
    x = _pixels(2, (32, 32, 3))
    np.testing.assert_allclose(front(x, training=True), front(x, training=False), atol=1e-6)


@pytest.mark.slow
def test_feature_extractor_then_head_equals_the_assembled_model(
        tmp_path: Path, transfer_models: dict[str, keras.Model]) -> None:
    spec = ModelSpec(name="transfer:mobilenet_v2", weights=None)
    extractor = feature_extractor(spec, (32, 32, 3))
    feature_dim = extractor.output.shape[-1]
    head = head_model(spec, feature_dim, 3)
    rng = np.random.default_rng(1)
    head.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in head.get_weights()])
    full = assemble_transfer(extractor, head)
    x = _pixels(3, (32, 32, 3))
    np.testing.assert_allclose(full(x), head(extractor(x)), atol=1e-5)
    assert full.get_layer("predictions") is head.get_layer("predictions")  # trained head weights, not copies
    reference = transfer_models["mobilenet_v2"]  # what build_model gives for the same spec
    assert [(layer.name, type(layer)) for layer in full.layers] == \
        [(layer.name, type(layer)) for layer in reference.layers]
    assert count_params(full) == count_params(reference)
    # Saved like any run's model, it reloads with safe_mode and no custom objects.
    path = tmp_path / "model.keras"
    full.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded(x), full(x), atol=1e-5)


def test_unfreeze_top_leaves_batchnorm_frozen() -> None:
    model = build_model(ModelSpec(name="transfer:mobilenet_v2", weights=None), (32, 32, 3), 3)
    frozen = count_params(model)["trainable"]
    unfreeze_top(model, 12)
    inner = model.get_layer(BACKBONE).layers
    top = inner[-12:]
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert any(layer.trainable and layer.trainable_weights for layer in top)
    assert all(not layer.trainable for layer in inner[:-12])
    assert count_params(model)["trainable"] > frozen
    unfreeze_top(model, 0)
    assert count_params(model)["trainable"] == frozen
    with pytest.raises(UserError):
        unfreeze_top(build_model(ModelSpec(name="tiny"), (32, 32, 3), 3), 5)


# ------------------------------------------------------------------------------------------- weights


def test_weight_file_names_follow_keras_rules() -> None:
    spec = ModelSpec(name="transfer:mobilenet_v2", alpha=0.35)
    assert weights_file(spec, (96, 96, 3)).endswith("_0.35_96_no_top.h5")
    assert weights_file(spec, (100, 100, 3)).endswith("_0.35_224_no_top.h5")  # Keras loads 224 weights
    assert weights_file(spec, (16, 16, 1)).endswith("_0.35_224_no_top.h5")  # upsampled to 32 px
    assert weights_file(spec.replace(alpha=1.0), (128, 128, 3)).endswith("_1.0_128_no_top.h5")
    assert weights_file(ModelSpec(name="tiny"), (32, 32, 3)) is None
    assert weights_file(spec.replace(weights=None), (96, 96, 3)) is None
    assert keras_models_dir() == Path(os.environ["KERAS_HOME"]) / "models"


def test_offline_imagenet_weights_load_at_any_size(imagenet_keras_home: Path) -> None:
    import h5py

    spec = ModelSpec(name="transfer:mobilenet_v2", alpha=0.35)
    model = build_model(spec, (100, 100, 1), 3)  # no 100-px weights: Keras uses the 224-px file
    kernel = model.get_layer(BACKBONE).get_layer("Conv1").kernel.numpy()
    path = imagenet_keras_home / "models" / weights_file(spec, (100, 100, 1))
    with h5py.File(path, "r") as f:
        stored = np.asarray(f["Conv1"]["Conv1"]["kernel"])
    np.testing.assert_array_equal(kernel, stored)


def test_failed_weight_download_names_the_file_and_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import urllib.error

    import keras.src.backend.config as keras_config
    from keras.src.utils import file_utils

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no internet")

    # Keras reads $KERAS_HOME once at import: point its snapshot at an empty folder, as a fresh process would.
    empty = tmp_path / "keras-home"
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(empty))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    assert keras_models_dir() == empty / "models"
    with pytest.raises(UserError) as info:
        build_model(ModelSpec(name="transfer:mobilenet_v2", alpha=0.5), (32, 32, 3), 2)
    message = str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5" in message
    assert str(empty / "models") in message and "\n" not in message
    assert "Downloading" not in capsys.readouterr().out  # Keras' chatter goes to stderr, off the CLI's JSON
