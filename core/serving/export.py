"""Export a run's model for use outside CNN Lab, and prove the export predicts what the run's model does.

Formats: ``keras`` (``model.keras``), ``savedmodel`` (a TensorFlow SavedModel folder ``saved_model/``),
``tflite`` (float32 ``model.tflite``) and ``tflite-int8`` (``model_int8.tflite``: dynamic-range
quantisation, weights stored as int8). Every export also carries ``labels.txt`` (one class name a line,
in output order) and ``preprocessing.json`` (input size, channels, pixel range, class names, CNN Lab
version): the model takes raw RGB/gray pixels 0..255 as float32 ``[N, S, S, C]`` and rescales them itself.

Where it goes: ``out`` ending in ``.zip`` gives one zip file holding those files; any other ``out`` is a
folder (created, or replaced if it holds an earlier CNN Lab export). The export is written to a temporary
place first, reloaded from there (``keras.saving.load_model`` / ``tf.saved_model.load`` / the TFLite
interpreter), and its predictions on a few images are compared with the run's model; only an export
within tolerance is moved to ``out``.

TFLite: the converter is ``keras.Model.export(format="litert")`` (TensorFlow's own converter behind
it). The interpreter is ``ai_edge_litert`` when that package is installed, else ``tf.lite.Interpreter``,
which TensorFlow 2.21 still ships but marks as deprecated in favour of ``ai_edge_litert``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.data.pixels import to_model_pixels
from core.errors import UserError, short_error
from core.models.runtime import keras_lock, load_model_file
from core.training.checkpoint import kept_model_file

FORMATS: tuple[str, ...] = ("keras", "savedmodel", "tflite", "tflite-int8")
MODEL_FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite",
               "tflite-int8": "model_int8.tflite"}
# Largest allowed difference in probability between the export and the run's model. Float exports
# agree to ~1e-6; int8 weights move probabilities a few hundredths (0.064 measured on a MobileNetV2-0.35
# transfer run), while a broken export (wrong scaling, shuffled outputs) is off by far more than 0.2.
TOLERANCE = {"keras": 1e-5, "savedmodel": 1e-4, "tflite": 1e-4, "tflite-int8": 0.2}
CHECK_IMAGES = 8  # the run's test images still on disk, topped up with generated ones (at least 2)
_MODEL_SUFFIXES = (".keras", ".h5", ".tflite", ".pb", ".onnx")


class ExportCheckError(UserError):
    """The reloaded export disagreed with the run's model: nothing was written."""


# ---------------------------------------------------------------- public API


def export_run(store: Any, run_id: str, fmt: str, out: Path | str) -> dict[str, Any]:
    """Export ``run_id``'s model as ``fmt`` to ``out`` (a folder, or a ``.zip``), reload it and check it.

    Returns ``{path, format, max_abs_diff, checked_images, bytes, top1_agreement, tolerance, files,
    model_file, class_names, image_sources, runtime}``. Raises ``UserError`` for an unknown format, a run
    without a model, or an export that does not reproduce the run's predictions.
    """
    fmt = _check_format(fmt)
    out = Path(out).expanduser()
    if out.suffix.lower() in _MODEL_SUFFIXES:
        raise UserError(f"Give --out a folder or a .zip file name, not '{out.name}': the export always holds "
                        "the model, labels.txt and preprocessing.json.")
    run = _load_run(store, run_id)
    images, sources = _check_images(store, run_id, run)
    expected = _predict_keras(run["model"], images)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cnnlab-export-", dir=out.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        _write_bundle(run, fmt, staging)
        if out.suffix.lower() == ".zip":
            written = Path(tmp) / "export.zip"
            _zip_folder(staging, written)
            check_dir = Path(tmp) / "unzipped"
            _safe_unzip(written, check_dir)
        else:
            written = check_dir = staging
        got, runtime = _predict_export(fmt, check_dir / MODEL_FILES[fmt], images)
        report = _compare(fmt, expected, got, run_id)
        size = written.stat().st_size if written.is_file() else _folder_bytes(written)
        files = sorted(p.name for p in staging.iterdir())
        _publish(written, out)
    return {
        "path": str(out), "format": fmt, "bytes": size, "files": files, "model_file": MODEL_FILES[fmt],
        "class_names": run["class_names"], "image_sources": sources, "runtime": runtime, **report,
    }


def export_bytes(store: Any, run_id: str, fmt: str) -> tuple[str, bytes, dict[str, Any]]:
    """The export as a zip in memory, for a download button: ``(file name, zip bytes, report)``."""
    fmt = _check_format(fmt)
    filename = f"cnnlab-{run_id}-{fmt}.zip"
    with tempfile.TemporaryDirectory(prefix="cnnlab-download-") as tmp:
        report = export_run(store, run_id, fmt, Path(tmp) / filename)
        data = Path(report["path"]).read_bytes()
    report["path"] = filename
    return filename, data, report


def tflite_runtime() -> str:
    """Which TFLite interpreter this installation uses: 'ai_edge_litert' or 'tf.lite'."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "tf.lite"
    return "ai_edge_litert"


# ---------------------------------------------------------------- the run


def _check_format(fmt: str) -> str:
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format '{fmt}': choose one of {', '.join(FORMATS)}.")
    return fmt


def _load_run(store: Any, run_id: str) -> dict[str, Any]:
    """The run's saved model, class names and a few facts for preprocessing.json."""
    record = store.get(run_id)
    if record is None:
        raise UserError(f"There is no run '{run_id}': `python -m core runs` lists them.")
    folder = Path(store.run_dir(run_id))
    model_path = kept_model_file(store, run_id)  # an interrupted run's model comes from its checkpoint
    if not model_path.is_file():
        raise UserError(f"Run {run_id} has no saved model to export (its status is {record.status}).")
    try:
        model = load_model_file(model_path)
    except UserError as err:
        raise UserError(f"The saved model of run {run_id} could not be read: {err}") from None
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[1] is None:
        raise UserError(f"Run {run_id}'s model does not take fixed-size images, so it cannot be exported.")
    n_classes = int(model.output_shape[-1])
    class_names = _class_names(folder, record, n_classes)
    return {"run_id": run_id, "record": record, "model": model, "model_path": model_path,
            "class_names": class_names, "size": int(shape[1]), "channels": int(shape[3])}


def _class_names(folder: Path, record: Any, n_classes: int) -> list[str]:
    names: list[str] | None = None
    labels = folder / "labels.json"
    if labels.is_file():
        data = json.loads(labels.read_text(encoding="utf-8"))
        names = data.get("class_names") if isinstance(data, dict) else data
    if not names and record.result:
        names = record.result.get("classes")
    names = [str(n) for n in (names or [])]
    if len(names) != n_classes:
        names = [f"class {i}" for i in range(n_classes)]
    return names


# ---------------------------------------------------------------- check images


def _check_images(store: Any, run_id: str, run: dict[str, Any]) -> tuple[np.ndarray, dict[str, int]]:
    """Up to CHECK_IMAGES images at the model's input size: the run's test images first, then generated."""
    size, channels = run["size"], run["channels"]
    images = _test_images(Path(store.run_dir(run_id)), size, channels, CHECK_IMAGES)
    n_test = len(images)
    images += _generated_images(max(CHECK_IMAGES - n_test, 2), size, channels)
    return np.stack(images).astype(np.float32), {"test_files": n_test, "generated": len(images) - n_test}


def _test_images(folder: Path, size: int, channels: int, limit: int) -> list[np.ndarray]:
    """Images of the run's test split that are still on disk (built-in datasets have no files)."""
    path = folder / "predictions.npz"
    if not path.is_file():
        return []
    try:
        with np.load(path, allow_pickle=False) as data:
            files = [str(f) for f in data["files"]] if "files" in data.files else []
    except (OSError, ValueError):
        return []
    images: list[np.ndarray] = []
    for name in files:
        if len(images) >= limit:
            break
        if not Path(name).is_file():
            continue
        try:
            images.append(to_model_pixels(Path(name), size, channels))
        except UserError:
            continue
    return images


def _generated_images(n: int, size: int, channels: int) -> list[np.ndarray]:
    """Fixed images spanning the pixel range: gradients, a disc, checkerboards and noise (seeded)."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    patterns = [
        xx * 255, yy * 255, (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.1) * 255.0,
        ((np.floor(xx * 8) + np.floor(yy * 8)) % 2) * 255.0,
    ]
    out = []
    for i in range(n):
        if i < len(patterns):
            img = np.repeat(patterns[i][..., None], channels, axis=-1)
            img = img * rng.uniform(0.5, 1.0, channels) if channels > 1 else img
        else:
            img = rng.uniform(0, 255, (size, size, channels))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------- writing


def _write_bundle(run: dict[str, Any], fmt: str, folder: Path) -> None:
    """The model file in ``fmt`` plus labels.txt and preprocessing.json, into ``folder``."""
    target = folder / MODEL_FILES[fmt]
    model = run["model"]
    if fmt == "keras":
        shutil.copyfile(run["model_path"], target)
    elif fmt == "savedmodel":
        _quiet(lambda: model.export(str(target), format="tf_saved_model", verbose=False), "SavedModel")
    else:
        _write_tflite(model, target, quantise=fmt == "tflite-int8")
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in run["class_names"]), encoding="utf-8")
    meta = _preprocessing_json(run, fmt)
    (folder / "preprocessing.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_tflite(model: Any, target: Path, quantise: bool) -> None:
    """Convert with Keras's LiteRT exporter; dynamic-range quantisation stores weights as int8."""
    import tensorflow as tf

    kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantise else {}
    _quiet(lambda: model.export(str(target), format="litert", verbose=False, **kwargs), "TFLite")


def _quiet(action: Callable[[], Any], what: str) -> None:
    """Run a converter, turning its failure into one sentence."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action()
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - converter failures are many and deep
        raise UserError(f"Converting this model to {what} failed ({short_error(err)}).") from None


def _preprocessing_json(run: dict[str, Any], fmt: str) -> dict[str, Any]:
    """What a program outside CNN Lab needs to feed the exported model correctly."""
    record = run["record"]
    config = record.config
    size, channels = run["size"], run["channels"]
    return {
        "format": "cnnlab-export",
        "format_version": 1,
        "cnnlab_version": _cnnlab_version(),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run["run_id"],
        "run_name": record.name,
        "architecture": getattr(getattr(config, "model", None), "name", None),
        "dataset": getattr(config, "data", None),
        "model_file": MODEL_FILES[fmt],
        "model_format": fmt,
        "input": {
            "shape": [None, size, size, channels],
            "height": size,
            "width": size,
            "channels": channels,
            "color": "RGB" if channels == 3 else "grayscale",
            "dtype": "float32",
            "layout": "NHWC",
            "pixel_range": [0, 255],
            "scaling": "none: feed raw pixel values 0..255; the model rescales them itself",
        },
        "preprocessing_key": "raw",
        "resize": f"resize the whole image to {size}x{size} (no crop): area averaging when shrinking, "
                  "bilinear when enlarging; EXIF rotation applied, transparency over white",
        "output": {"kind": "probabilities", "activation": "softmax", "classes": len(run["class_names"])},
        "class_names": run["class_names"],
        "labels_file": "labels.txt",
        "quantisation": "dynamic-range int8 weights, float32 activations" if fmt == "tflite-int8" else "none",
    }


def _cnnlab_version() -> str:
    import core

    return str(getattr(core, "__version__", "unversioned"))


def _zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())


def _safe_unzip(archive: Path, target: Path) -> None:
    """Unpack our own zip for the check (member names are ours, still kept inside ``target``)."""
    target.mkdir()
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            dest = (target / info.filename).resolve()
            if root not in dest.parents:
                raise UserError("The export zip holds a file outside its folder.")
        zf.extractall(target)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _publish(written: Path, out: Path) -> None:
    """Move the checked export to ``out`` atomically (a zip file, or a folder replacing an older export)."""
    if written.is_file():
        if out.is_dir():
            raise UserError(f"{out} is a folder; give a .zip file name or another path.")
        os.replace(written, out)
        return
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} is a file; give a folder name or a .zip file name.")
        if any(out.iterdir()) and not (out / "preprocessing.json").is_file():
            raise UserError(f"The folder {out} is not empty; give a new or empty folder for the export.")
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
        os.replace(out, old)
        try:
            os.replace(written, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(written, out)


# ---------------------------------------------------------------- checking


def _predict_keras(model: Any, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False), dtype=np.float32)


def _predict_export(fmt: str, path: Path, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Reload the written export with the runtime its users will use, and predict ``images``."""
    if fmt == "keras":
        import keras

        with keras_lock():
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return _predict_keras(model, images), f"keras {keras.__version__}"
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
        outputs = serve(tf.constant(images))
        return np.asarray(next(iter(outputs.values())), dtype=np.float32), f"tensorflow {tf.__version__}"
    return _predict_tflite(path, images)


def _tflite_interpreter(path: Path) -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(path)), "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            return tf.lite.Interpreter(model_path=str(path)), "tf.lite"


def _predict_tflite(path: Path, images: np.ndarray) -> tuple[np.ndarray, str]:
    interpreter, runtime = _tflite_interpreter(path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return np.array(interpreter.get_tensor(out["index"]), dtype=np.float32), runtime


def _compare(fmt: str, expected: np.ndarray, got: np.ndarray, run_id: str) -> dict[str, Any]:
    """Max abs difference and top-1 agreement; an export outside tolerance raises ExportCheckError."""
    if got.shape != expected.shape:
        raise ExportCheckError(f"The {fmt} export of run {run_id} outputs shape {got.shape} instead of "
                               f"{expected.shape}, so it was not saved.")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    agree = float(np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)))
    tol = TOLERANCE[fmt]
    if not np.isfinite(diff) or diff > tol:
        raise ExportCheckError(f"The {fmt} export of run {run_id} differs from the run's model by up to "
                               f"{diff:.3g} in probability (allowed {tol:g}), so it was not saved.")
    return {"max_abs_diff": diff, "checked_images": int(len(expected)), "top1_agreement": agree, "tolerance": tol}
