"""Exports of a run (keras, SavedModel, TFLite float32 and int8): written, reloaded and checked."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import core.serving.export as export_mod
from core.config import TrainConfig
from core.errors import UserError
from core.serving.export import FORMATS, MODEL_FILES, TOLERANCE, ExportCheckError, export_bytes, export_run
from core.store.files import atomic_write_json
from core.store.runs import RunStore

CLASSES = ["circle", "square", "star"]
SIZE = 16


def _model() -> "keras.Model":
    """Raw 0..255 input, rescaling inside, and a Dense layer big enough for int8 quantisation to bite."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def run_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-home")


@pytest.fixture(scope="module")
def run(run_home: Path) -> tuple[RunStore, str, "keras.Model"]:
    """A finished-looking run made by hand (shared by this module): model.keras and labels.json."""
    store = RunStore(run_home)
    run_id = store.create_run(TrainConfig(data="builtin:shapes", image_size=SIZE), name="hand-made")
    model = _model()
    model.save(store.run_dir(run_id) / "model.keras")
    atomic_write_json(store.run_dir(run_id) / "labels.json", CLASSES)
    store.set_status(run_id, "finished")
    return store, run_id, model


def _pixels(n: int = 5, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _reload_and_predict(fmt: str, folder: Path, x: np.ndarray) -> np.ndarray:
    """Independent of core.serving.export: load the exported file the way a user of that format would."""
    path = folder / MODEL_FILES[fmt]
    if fmt == "keras":
        return np.asarray(keras.saving.load_model(path, compile=False)(x, training=False))
    if fmt == "savedmodel":
        out = tf.saved_model.load(str(path)).signatures["serving_default"](tf.constant(x))
        return next(iter(out.values())).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter announces its deprecation
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def zips(run, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each format exported once to a zip: (path, report)."""
    store, run_id, _ = run
    folder = tmp_path_factory.mktemp("zips")
    return {fmt: (folder / f"export-{fmt}.zip", export_run(store, run_id, fmt, folder / f"export-{fmt}.zip"))
            for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.slow
def test_export_zip_round_trip(run, zips, tmp_path: Path, fmt: str) -> None:
    _, _, model = run
    out, report = zips[fmt]

    assert report["path"] == str(out) and report["format"] == fmt
    assert report["bytes"] == out.stat().st_size > 0
    assert report["checked_images"] >= 8
    assert 0.0 <= report["max_abs_diff"] <= TOLERANCE[fmt]
    assert report["top1_agreement"] == 1.0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "labels.txt" in names and "preprocessing.json" in names
        assert any(n == MODEL_FILES[fmt] or n.startswith(MODEL_FILES[fmt] + "/") for n in names)
        assert zf.read("labels.txt").decode().splitlines() == CLASSES
        meta = json.loads(zf.read("preprocessing.json"))
        zf.extractall(tmp_path / "unzipped")
    assert meta["input"]["height"] == meta["input"]["width"] == SIZE
    assert meta["input"]["channels"] == 3 and meta["input"]["pixel_range"] == [0, 255]
    assert meta["class_names"] == CLASSES and meta["model_format"] == fmt
    assert meta["cnnlab_version"]

    x = _pixels()
    got = _reload_and_predict(fmt, tmp_path / "unzipped", x)
    assert np.max(np.abs(got - np.asarray(model(x)))) <= TOLERANCE[fmt]


def test_export_to_a_folder_and_again_over_it(run, tmp_path: Path) -> None:
    store, run_id, _ = run
    out = tmp_path / "deploy"
    first = export_run(store, run_id, "savedmodel", out)
    assert sorted(p.name for p in out.iterdir()) == sorted(first["files"]) == \
        ["labels.txt", "preprocessing.json", "saved_model"]
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert first["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    second = export_run(store, run_id, "keras", out)  # replaces the earlier CNN Lab export
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "model.keras", "preprocessing.json"]
    assert second["max_abs_diff"] <= TOLERANCE["keras"]


def test_export_refuses_a_foreign_non_empty_folder_and_model_suffixes(run, tmp_path: Path) -> None:
    store, run_id, _ = run
    folder = tmp_path / "my-documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        export_run(store, run_id, "keras", folder)
    assert (folder / "thesis.txt").read_text() == "precious"
    with pytest.raises(UserError, match="folder or a .zip"):
        export_run(store, run_id, "tflite", tmp_path / "model.tflite")


def test_int8_export_is_smaller_than_float32(zips) -> None:
    sizes = {}
    for fmt in ("tflite", "tflite-int8"):
        with zipfile.ZipFile(zips[fmt][0]) as zf:
            sizes[fmt] = zf.getinfo(MODEL_FILES[fmt]).file_size
    assert sizes["tflite-int8"] < 0.5 * sizes["tflite"]


def test_export_checks_the_runs_test_images(run, tmp_path: Path) -> None:
    """Test images still on disk are used for the check; missing ones are skipped, generated ones fill up."""
    from PIL import Image

    store, run_id, _ = run
    files = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8)).save(path)
        files.append(str(path))
    files.append(str(tmp_path / "deleted-since.png"))
    predictions = store.run_dir(run_id) / "predictions.npz"
    np.savez(predictions, probs=np.zeros((4, 3), np.float32), labels=np.zeros(4, np.int64),
             files=np.array(files, dtype=str))
    try:
        report = export_run(store, run_id, "keras", tmp_path / "k.zip")
    finally:
        predictions.unlink()
    assert report["image_sources"] == {"test_files": 3, "generated": 5}
    assert report["checked_images"] == 8


def test_a_disagreeing_export_is_not_written(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is a gate: predictions off by more than the tolerance stop the export."""
    store, run_id, _ = run
    real = export_mod._predict_export

    def off_by_a_bit(fmt, path, images):
        probs, runtime = real(fmt, path, images)
        return probs + 0.01, runtime

    monkeypatch.setattr(export_mod, "_predict_export", off_by_a_bit)
    out = tmp_path / "bad.zip"
    with pytest.raises(ExportCheckError, match="differs from the run's model by up to 0.01"):
        export_run(store, run_id, "keras", out)
    assert not out.exists()
    assert not any(p.name.startswith(".cnnlab-export-") for p in tmp_path.iterdir())


def test_export_errors_are_sentences(run, tmp_path: Path) -> None:
    store, run_id, _ = run
    with pytest.raises(UserError, match="Unknown export format 'onnx'"):
        export_run(store, run_id, "onnx", tmp_path / "x.zip")
    with pytest.raises(UserError, match="There is no run 'nope'"):
        export_run(store, "nope", "keras", tmp_path / "x.zip")
    empty = store.create_run(TrainConfig(data="builtin:shapes"))
    with pytest.raises(UserError, match="has no saved model"):
        export_run(store, empty, "keras", tmp_path / "x.zip")


def test_export_bytes_imports_back_as_a_cnnlab_bundle(run) -> None:
    """The download-button zip holds the export, and CNN Lab's own import reads it back."""
    from core.serving.model_import import load_user_model

    store, run_id, model = run
    filename, data, report = export_bytes(store, run_id, "keras")
    assert filename == f"cnnlab-{run_id}-keras.zip" == report["path"]
    assert report["bytes"] == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["labels.txt", "model.keras", "preprocessing.json"]
    imported = load_user_model(data, filename)
    assert imported.source == "cnnlab-export"
    assert imported.class_names == CLASSES
    assert (imported.image_size, imported.channels, imported.preprocessing) == (SIZE, 3, "raw")
    x = _pixels()
    assert np.max(np.abs(np.asarray(imported.model(x)) - np.asarray(model(x)))) < 1e-6


def test_cli_export_prints_the_report(run, run_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.cli import main

    _, run_id, _ = run
    out = tmp_path / "cli.zip"
    code = main(["export", run_id, "--format", "keras", "--out", str(out), "--home", str(run_home), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and out.is_file()
    assert report["format"] == "keras" and report["max_abs_diff"] <= TOLERANCE["keras"]
    assert main(["export", run_id, "--format", "keras", "--out", str(out), "--home", str(run_home)]) == 0
    assert "reloaded and checked: max abs difference" in capsys.readouterr().out
    assert main(["export", "missing-run", "--format", "keras", "--out", str(out), "--home", str(run_home)]) == 2
    assert "There is no run" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_then_export(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The headless path end to end: a real (one-epoch) run, exported through the CLI."""
    from core.cli import main

    code = main(["train", "--data", "builtin:shapes?per_class=6&size=16", "--model", "tiny", "--epochs", "1",
                 "--image-size", "16", "--batch-size", "8", "--home", str(home), "--json", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    out = tmp_path / "trained.zip"
    assert main(["export", summary["run_id"], "--format", "savedmodel", "--out", str(out), "--home", str(home),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == summary["classes"]
    assert report["max_abs_diff"] <= TOLERANCE["savedmodel"]
    assert report["image_sources"]["test_files"] == 0  # builtin:shapes lives in memory: generated images
