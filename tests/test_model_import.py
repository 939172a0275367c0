"""Models from elsewhere: safe loading, refused model kinds, and Teachable Machine's Keras export."""

from __future__ import annotations

import base64
import io
import json
import marshal
import shutil
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from core.errors import UserError
from core.serving.model_import import PREPROCESSING, ImportedModel, load_user_model

FIXTURES = Path(__file__).parent / "fixtures"
TM = FIXTURES / "teachable_machine"


# ---------------------------------------------------------------- helpers


def _tiny_model(*, rescale: bool = True, activation: str = "softmax", units: int = 3, size: int = 8) -> "keras.Model":
    """A small CNN taking (size, size, 3) pixels; weights seeded so predictions are reproducible."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs) if rescale else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, outputs)


def _pixels(n: int = 4, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _predict(model: "keras.Model", x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _rewrite_config(path: Path, edit) -> None:
    """Apply ``edit`` to the JSON model description stored in an HDF5 model file."""
    with h5py.File(path, "r+") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        f.attrs["model_config"] = json.dumps(edit(config))


def _strip_keras3_keys(obj):
    """How tf.keras <= 2.12 wrote configs (Teachable Machine exports): no module/registered_name/build_config."""
    if isinstance(obj, dict):
        return {k: _strip_keras3_keys(v) for k, v in obj.items()
                if k not in ("module", "registered_name", "build_config")}
    if isinstance(obj, list):
        return [_strip_keras3_keys(v) for v in obj]
    return obj


# ---------------------------------------------------------------- Teachable Machine


@pytest.fixture(scope="module")
def tm_expected() -> dict[str, np.ndarray]:
    with np.load(TM / "expected.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def tm_import() -> ImportedModel:
    return load_user_model(TM / "keras_model.h5", labels=(TM / "labels.txt").read_text())


def test_teachable_machine_export_fails_in_plain_keras3() -> None:
    """Why the import path exists: Keras 3's own loader cannot read a tf-keras 2 export."""
    with pytest.raises(Exception, match="Functional"):
        keras.models.load_model(TM / "keras_model.h5", compile=False)


def test_older_teachable_machine_export_fails_with_the_groups_argument(tmp_path: Path) -> None:
    """Exports written by tf.keras <= 2.12 fail on DepthwiseConv2D's `groups`, as users report."""
    old = tmp_path / "keras_model.h5"
    shutil.copy(TM / "keras_model.h5", old)
    _rewrite_config(old, _strip_keras3_keys)
    with pytest.raises(Exception, match="groups"):
        keras.models.load_model(old, compile=False)


@pytest.mark.slow
def test_teachable_machine_import_matches_keras2_predictions(tm_import: ImportedModel, tm_expected) -> None:
    """Raw 0..255 pixels into the import == Keras 2's own predictions on x/127.5-1, within 1e-4."""
    assert tm_import.source == "teachable-machine"
    assert tm_import.class_names == ["rock", "paper", "scissors"]
    assert (tm_import.image_size, tm_import.channels, tm_import.preprocessing) == (224, 3, "symmetric")
    probs = _predict(tm_import.model, tm_expected["inputs"].astype(np.float32))
    assert probs.shape == tm_expected["probs"].shape
    assert np.max(np.abs(probs - tm_expected["probs"])) < 1e-4
    # The fixture is not degenerate: the images get different winning classes.
    assert len(set(np.argmax(tm_expected["probs"], axis=1))) == 3


def test_teachable_machine_import_gives_a_predictor(tm_import: ImportedModel, tm_expected) -> None:
    predictor = tm_import.predictor()
    top = predictor.top_k(tm_expected["inputs"][0], k=2)
    assert top[0][0] == tm_import.class_names[int(np.argmax(tm_expected["probs"][0]))]
    assert len(top) == 2


def test_older_teachable_machine_zip_imports(tmp_path: Path, tm_expected) -> None:
    """converted_keras.zip as downloaded, with the older config style, imports with its labels."""
    old = tmp_path / "keras_model.h5"
    shutil.copy(TM / "keras_model.h5", old)
    _rewrite_config(old, _strip_keras3_keys)
    archive = tmp_path / "converted_keras.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(old, "keras_model.h5")
        zf.write(TM / "labels.txt", "labels.txt")
    imported = load_user_model(archive.read_bytes(), "converted_keras.zip")
    assert imported.source == "teachable-machine"
    assert imported.class_names == ["rock", "paper", "scissors"]
    probs = _predict(imported.model, tm_expected["inputs"].astype(np.float32))
    assert np.max(np.abs(probs - tm_expected["probs"])) < 1e-4


# ---------------------------------------------------------------- loading our own kinds


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_files_load_with_equal_predictions(tmp_path: Path, suffix: str) -> None:
    model = _tiny_model()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    imported = load_user_model(path, labels=["cat", "dog", "bird"])
    assert imported.source == ("keras" if suffix == ".keras" else "keras-h5")
    assert imported.preprocessing == "raw"
    assert imported.class_names == ["cat", "dog", "bird"]
    x = _pixels()
    assert np.max(np.abs(_predict(imported.model, x) - _predict(model, x))) < 1e-6


def test_a_model_without_rescaling_gets_pixels_divided_by_255(tmp_path: Path) -> None:
    model = _tiny_model(rescale=False)
    path = tmp_path / "plain.keras"
    model.save(path)
    imported = load_user_model(path)
    assert imported.preprocessing == "unit" and imported.notes
    x = _pixels()
    assert np.allclose(_predict(imported.model, x), _predict(model, x / 255.0), atol=1e-6)
    forced = load_user_model(path, preprocessing="raw")
    assert np.allclose(_predict(forced.model, x), _predict(model, x), atol=1e-6)


def test_logits_get_a_softmax_and_a_sigmoid_becomes_two_classes(tmp_path: Path) -> None:
    x = _pixels()
    logits = _tiny_model(activation="linear")
    logits.save(tmp_path / "logits.keras")
    imported = load_user_model(tmp_path / "logits.keras")
    probs = _predict(imported.model, x)
    ref = _predict(logits, x)
    assert np.allclose(probs, np.exp(ref) / np.exp(ref).sum(axis=1, keepdims=True), atol=1e-5)

    binary = _tiny_model(activation="sigmoid", units=1)
    binary.save(tmp_path / "binary.keras")
    imported = load_user_model(tmp_path / "binary.keras", labels="no\nyes\n")
    probs = _predict(imported.model, x)
    p = _predict(binary, x)[:, 0]
    assert imported.class_names == ["no", "yes"]
    assert np.allclose(probs, np.stack([1 - p, p], axis=1), atol=1e-6)


def test_labels_must_match_the_model_outputs(tmp_path: Path) -> None:
    _tiny_model().save(tmp_path / "m.keras")
    with pytest.raises(UserError, match="labels list 2 classes but the model outputs 3"):
        load_user_model(tmp_path / "m.keras", labels="0 a\n1 b\n")


def test_unknown_preprocessing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Unknown preprocessing"):
        load_user_model(b"x", "m.keras", preprocessing="imagenet")
    assert set(PREPROCESSING) == {"raw", "unit", "symmetric"}


# ---------------------------------------------------------------- refused model kinds


def test_lambda_layer_in_keras_file_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="'double' is a Lambda layer"):
        load_user_model(tmp_path / "lambda.keras")


def test_custom_layer_in_keras_file_is_refused(tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="cnnlab_test")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(Twice(name="twice")(inputs)))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "custom.keras")
    with pytest.raises(UserError, match="'twice' .*custom code"):
        load_user_model(tmp_path / "custom.keras")
    model.save(tmp_path / "custom.h5")  # and the same custom object in an HDF5 file
    with pytest.raises(UserError, match="custom code"):
        load_user_model(tmp_path / "custom.h5")


def test_keras2_lambda_h5_is_refused() -> None:
    """A real Keras 2 (tf-keras) file with a Lambda layer, whose Python bytecode is inside the file."""
    with pytest.raises(UserError, match="'double' is a Lambda layer"):
        load_user_model(FIXTURES / "lambda_model.h5")


def test_code_in_an_h5_lambda_never_runs(tmp_path: Path) -> None:
    """Bytecode that would write a file when run: the import refuses it and the file never appears."""
    sentinel = tmp_path / "code-ran.txt"
    source = f"def payload(x):\n    open({str(sentinel)!r}, 'w').write('ran')\n    return x\n"
    code = next(c for c in compile(source, "<payload>", "exec").co_consts if hasattr(c, "co_code"))
    path = tmp_path / "evil.h5"
    shutil.copy(FIXTURES / "lambda_model.h5", path)

    def plant(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["config"]["function"] = [base64.b64encode(marshal.dumps(code)).decode(), None, None]
        return config

    _rewrite_config(path, plant)
    with pytest.raises(UserError, match="Lambda"):
        load_user_model(path)
    assert not sentinel.exists()


def test_custom_class_in_keras2_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "renamed.h5"
    shutil.copy(TM / "keras_model.h5", path)

    def rename(config):
        config["config"]["layers"][-1]["config"]["layers"][-1]["class_name"] = "EvilDense"
        return config

    _rewrite_config(path, rename)
    with pytest.raises(UserError, match="EvilDense.*custom code"):
        load_user_model(path)


def test_oversized_files_are_refused_before_loading(tmp_path: Path) -> None:
    _tiny_model().save(tmp_path / "m.keras")
    size = (tmp_path / "m.keras").stat().st_size
    with pytest.raises(UserError, match="more than the 1 KB limit"):
        load_user_model(tmp_path / "m.keras", max_bytes=1024)
    with pytest.raises(UserError, match="limit"):
        load_user_model((tmp_path / "m.keras").read_bytes(), "m.keras", max_bytes=size - 1)
    with pytest.raises(UserError, match="limit"):
        load_user_model(io.BytesIO((tmp_path / "m.keras").read_bytes()), "m.keras", max_bytes=size - 1)


def test_zip_that_unpacks_too_large_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("keras_model.h5", b"\0" * 5_000_000)  # compresses to a few KB
    data = buf.getvalue()
    assert len(data) < 100_000
    with pytest.raises(UserError, match="unpacks to"):
        load_user_model(data, "bomb.zip", max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "photo.keras", "not a model file"),
        (b"just some text", "notes.h5", "not a model file"),
        (b"", "empty.keras", "empty"),
        (b"\x1c\0\0\0TFL3" + b"\0" * 64, "model.tflite", "TFLite"),
    ],
)
def test_files_that_are_not_models_are_refused(data: bytes, name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_user_model(data, name)


def test_weights_only_and_model_less_files_are_refused(tmp_path: Path) -> None:
    model = _tiny_model()
    model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(UserError, match="only weights"):
        load_user_model(tmp_path / "m.weights.h5")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="no .keras or .h5 model"):
        load_user_model(buf.getvalue(), "bundle.zip")
    with pytest.raises(UserError, match="There is no model file"):
        load_user_model(tmp_path / "missing.keras")
