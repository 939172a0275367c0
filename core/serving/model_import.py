"""Load a model someone made elsewhere: a ``.keras`` file, an older Keras ``.h5``, Teachable Machine's
Keras export, or a zip bundle from CNN Lab's own export - safely, with no code from the file ever run.

Every loaded model is returned wrapped so it takes *raw* pixels (float32 0..255, ``S x S x C``) and
outputs class probabilities, like CNN Lab's own models (see docs/engine.md).

Safety: before Keras sees a file, its model description (JSON) is scanned; ``Lambda`` layers (Python
code stored in the file), layers that load code or other files (``TFSMLayer``, ``TorchModuleWrapper``,
``JaxLayer``) and any class that is not a built-in Keras one are refused with a sentence. Keras itself
then loads with ``safe_mode=True``.

Teachable Machine's "Keras" export (``keras_model.h5`` + ``labels.txt``, saved by tf.keras 2.x) does not
load in Keras 3, so older Keras ``.h5`` files are rebuilt from built-in layers (``core.serving.keras2_rebuild``).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import UserError, short_error
from core.models.runtime import keras_lock
from core.serving.keras2_rebuild import attr_text, layer_name, leaf_layers, rebuild_keras2, walk_objects

MAX_MODEL_BYTES = 200 * 1024 * 1024
MAX_ZIP_MEMBERS = 2000
DEFAULT_IMAGE_SIZE = 224  # for models whose input size is not fixed
TM_IMAGE_SIZE = 224

# How raw 0..255 pixels are scaled before they reach the imported network.
PREPROCESSING: dict[str, str] = {
    "raw": "raw pixels 0..255 (the model rescales them itself)",
    "unit": "pixels divided by 255 (0..1)",
    "symmetric": "pixels scaled to [-1, 1] (x / 127.5 - 1, as Teachable Machine does)",
}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
# Layers that carry code or open other files: never loaded, whatever safe_mode would say.
_CODE_LAYERS = frozenset({
    "Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "TFSMLayer", "TorchModuleWrapper", "JaxLayer",
    "FlaxLayer",
})
_TFJS_NAMES = re.compile(r"^(dense_Dense|global_average_pooling2d_GlobalAveragePooling2D)\d+$")
_TM_LABEL_LINE = re.compile(r"^(\d+)\s+(.*\S)\s*$")


@dataclass
class ImportedModel:
    """A model from elsewhere, wrapped to take raw 0..255 pixels and output class probabilities."""

    model: Any  # keras.Model: input float32 [N, S, S, C] 0..255, output probabilities [N, classes]
    class_names: list[str]
    image_size: int
    channels: int
    preprocessing: str  # a key of PREPROCESSING: what the wrapper does before the original network
    source: str  # "keras", "keras-h5", "teachable-machine" or "cnnlab-export"
    notes: list[str] = field(default_factory=list)  # plain sentences worth showing (guesses made)

    def predictor(self) -> Any:
        """A thread-safe ``core.serving.predictor.Predictor`` over this model (resizing, channels, top-k)."""
        from core.serving.predictor import Predictor

        return Predictor(self.model, self.class_names, image_size=self.image_size, channels=self.channels)

    def describe(self) -> str:
        """One line for the UI: where the model comes from and what it expects."""
        return (f"{self.source} model, {len(self.class_names)} classes, {self.image_size}x{self.image_size}x"
                f"{self.channels} input, {PREPROCESSING[self.preprocessing]}")


# ---------------------------------------------------------------- entry point


def load_user_model(
    path_or_bytes: bytes | str | Path | BinaryIO,
    filename: str | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
    *,
    labels: str | bytes | list[str] | None = None,
    preprocessing: str | None = None,
) -> ImportedModel:
    """Load a ``.keras``, ``.h5`` or ``.zip`` model file a user gave us, refusing anything unsafe.

    ``labels``: the text of a ``labels.txt`` (Teachable Machine's ``0 rock`` lines or one name a line) or a
    list of names; a bundle's own labels win. ``preprocessing``: a key of ``PREPROCESSING`` to override the
    guess (Teachable Machine and CNN Lab exports are recognised; other models are inspected).
    """
    if preprocessing is not None and preprocessing not in PREPROCESSING:
        raise UserError(f"Unknown preprocessing '{preprocessing}': choose one of {', '.join(PREPROCESSING)}.")
    data, name = _read_limited(path_or_bytes, filename, max_bytes)
    label_names = _parse_labels(labels) if labels is not None else None
    with keras_lock():  # loading, rebuilding and wrapping create layers: Keras' global naming
        return _load_any(data, name, max_bytes, label_names, preprocessing)


def _load_any(data: bytes, name: str, max_bytes: int, labels: list[str] | None,
              preprocessing: str | None) -> ImportedModel:
    """Dispatch on the file's content (not only its extension)."""
    if data.startswith(_HDF5_MAGIC):
        return _load_h5(data, name, labels, preprocessing)
    if data.startswith(_ZIP_MAGIC):
        with _open_zip(data, name, max_bytes) as zf:
            members = set(zf.namelist())
            if {"config.json", "model.weights.h5"} <= members:
                return _load_keras(data, name, labels, preprocessing)
            return _load_bundle(zf, name, max_bytes, labels, preprocessing)
    suffix = Path(name).suffix.lower()
    if suffix == ".tflite" or data[4:8] == b"TFL3":
        raise UserError(f"'{name}' is a TFLite model, which is for phones and small devices; "
                        "load its .keras version instead.")
    raise UserError(f"'{name}' is not a model file CNN Lab can load: give a .keras file, an .h5 file from "
                    "Keras or a .zip from Teachable Machine or CNN Lab.")


def _read_limited(src: bytes | str | Path | BinaryIO, filename: str | None, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and a display name, refusing files over ``max_bytes`` before reading them."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        name = filename or "the uploaded file"
    elif isinstance(src, (str, Path)):
        path = Path(src)
        name = filename or path.name
        if not path.is_file():
            raise UserError(f"There is no model file at {path}.")
        _check_size(path.stat().st_size, name, max_bytes)
        data = path.read_bytes()
    else:
        name = filename or getattr(src, "name", None) or "the uploaded file"
        size = getattr(src, "size", None)
        if isinstance(size, int):
            _check_size(size, name, max_bytes)
        data = src.read(max_bytes + 1)
    _check_size(len(data), name, max_bytes)
    if not data:
        raise UserError(f"'{name}' is empty.")
    return data, str(name)


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise UserError(f"'{name}' is {_mb(size)}, more than the {_mb(max_bytes)} limit for a model file.")


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


# ---------------------------------------------------------------- labels


def _parse_labels(labels: str | bytes | list[str]) -> list[str]:
    """Class names from a labels.txt (``0 rock`` lines as Teachable Machine writes, or one name a line)."""
    if isinstance(labels, list):
        names = [str(x).strip() for x in labels]
    else:
        text = labels.decode("utf-8-sig", errors="replace") if isinstance(labels, bytes) else labels
        names = [line.strip() for line in text.splitlines() if line.strip()]
        numbered = [_TM_LABEL_LINE.match(line) for line in names]
        if names and all(numbered) and [int(m.group(1)) for m in numbered] == list(range(len(names))):
            names = [m.group(2) for m in numbered]
    if not names or any(not n for n in names):
        raise UserError("The labels file has no class names (one name a line, e.g. '0 rock').")
    return names


# ---------------------------------------------------------------- safety scan


def _keras_builtin_names() -> frozenset[str]:
    """Class names Keras 3 itself provides (layers, initializers, regularizers...), minus code carriers."""
    import keras

    names: set[str] = {"Functional", "Sequential", "Model", "DTypePolicy", "Policy", "FloatDTypePolicy",
                       "QuantizedDTypePolicy", "__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                       "__typespec__", "__ellipsis__", "__slice__", "TensorShape"}
    for module in (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.optimizers,
                   keras.optimizers.schedules, keras.losses, keras.metrics, keras.dtype_policies):
        names.update(n for n in dir(module) if not n.startswith("_"))
    return frozenset(names - _CODE_LAYERS)


def _scan_config(config: Any, name: str, *, check_modules: bool) -> None:
    """Refuse a model description holding code (Lambda) or classes that are not built into Keras."""
    import keras

    known = _keras_builtin_names()
    # compile_config is never deserialised (we load with compile=False): a custom loss there is harmless.
    for obj in walk_objects(config, skip=frozenset({"compile_config"})):
        cls = str(obj.get("class_name"))
        layer = layer_name(obj)
        if cls in _CODE_LAYERS:
            raise UserError(f"'{name}' was refused: its layer '{layer or cls}' is a {cls} layer, which stores "
                            "Python code in the file, and CNN Lab never runs code from a model file.")
        module = obj.get("module")
        registered = obj.get("registered_name")
        custom_module = check_modules and module is not None and not str(module).startswith("keras")
        custom_name = check_modules and registered not in (None, cls)
        if cls == "function" and not custom_module and isinstance(obj.get("config"), str) \
                and hasattr(keras.activations, obj["config"]):
            continue  # a built-in activation referenced by name
        if cls not in known or custom_module or custom_name:
            what = f"layer '{layer}' ({cls})" if layer else f"object '{cls}'"
            raise UserError(f"'{name}' was refused: its {what} is custom code that is not part of Keras; "
                            "CNN Lab only loads models made of built-in Keras layers.")


# ---------------------------------------------------------------- .keras files


def _load_keras(data: bytes, name: str, labels: list[str] | None, preprocessing: str | None,
                source: str = "keras") -> ImportedModel:
    """A Keras 3 ``.keras`` archive: scan its config.json, then load with ``safe_mode=True``."""
    import keras

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError):
        raise UserError(f"'{name}' is not a valid .keras file (its model description cannot be read).") from None
    _scan_config(config, name, check_modules=True)
    with tempfile.TemporaryDirectory(prefix="cnnlab-import-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # noqa: BLE001 - any failure here is a file Keras cannot load
            raise UserError(f"'{name}' could not be loaded as a Keras model ({short_error(err)}).") from None
    return _finish(model, name, labels, preprocessing, source, tm=False)


# ---------------------------------------------------------------- .h5 files (Keras 2, Teachable Machine)


def _load_h5(data: bytes, name: str, labels: list[str] | None, preprocessing: str | None) -> ImportedModel:
    """An HDF5 model from Keras 2 (rebuilt safely here) or Keras 3 (scanned, then Keras's own loader)."""
    import h5py

    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError:
        raise UserError(f"'{name}' is not a readable HDF5 model file.") from None
    with h5:
        raw_config = h5.attrs.get("model_config")
        if raw_config is None:
            raise UserError(f"'{name}' holds only weights, not a model: save the whole model "
                            "(model.save) and upload that file.")
        if isinstance(raw_config, bytes):
            raw_config = raw_config.decode("utf-8")
        try:
            config = json.loads(raw_config)
        except (ValueError, TypeError):  # TypeError: a binary attribute (e.g. a pickle), never unpickled
            raise UserError(f"'{name}' has a damaged model description.") from None
        _scan_config(config, name, check_modules=False)
        version = attr_text(h5.attrs.get("keras_version")) or "2"
        tm = _looks_like_tm(config)
        if version.startswith("3"):
            model = _keras3_h5(data, name)
        else:
            if "model_weights" not in h5:
                raise UserError(f"'{name}' has a model description but no weights.")
            try:
                model = rebuild_keras2(config, h5["model_weights"], name)
            except UserError as rebuild_error:
                model = _fallback_legacy_loader(data, name, rebuild_error)
    source = "teachable-machine" if tm else "keras-h5"
    return _finish(model, name, labels, preprocessing, source, tm=tm)


def _keras3_h5(data: bytes, name: str) -> Any:
    """An .h5 written by Keras 3 loads with Keras's legacy loader (already scanned, safe_mode on)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="cnnlab-import-") as tmp:
        path = Path(tmp) / "model.h5"
        path.write_bytes(data)
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"'{name}' could not be loaded as a Keras model ({short_error(err)}).") from None


def _fallback_legacy_loader(data: bytes, name: str, rebuild_error: UserError) -> Any:
    """Keras's own legacy loader for Keras 2 files our rebuild cannot handle (config already scanned)."""
    try:
        return _keras3_h5(data, name)
    except UserError:
        raise rebuild_error from None


def _looks_like_tm(config: Any) -> bool:
    """Teachable Machine's Keras export is converted from TensorFlow.js and keeps its layer names."""
    names = {layer_name(o) for o in walk_objects(config)}
    return any(n and _TFJS_NAMES.match(n) for n in names)



# ---------------------------------------------------------------- zip bundles


class _open_zip:
    """A ZipFile over bytes, refusing zip bombs (too many members or too large once unpacked)."""

    def __init__(self, data: bytes, name: str, max_bytes: int) -> None:
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise UserError(f"'{name}' is not a valid zip file.") from None
        infos = self.zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise UserError(f"'{name}' holds {len(infos)} files, too many for a model bundle.")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise UserError(f"'{name}' unpacks to {_mb(total)}, more than the {_mb(max_bytes)} limit.")

    def __enter__(self) -> zipfile.ZipFile:
        return self.zf

    def __exit__(self, *exc: Any) -> None:
        self.zf.close()


def _load_bundle(zf: zipfile.ZipFile, name: str, max_bytes: int, labels: list[str] | None,
                 preprocessing: str | None) -> ImportedModel:
    """A zip holding one model plus labels.txt (Teachable Machine) and maybe preprocessing.json (CNN Lab)."""
    files = [n for n in zf.namelist() if not n.endswith("/") and not Path(n).name.startswith(".")
             and "__MACOSX" not in n]
    models = [n for n in files if Path(n).suffix.lower() in (".keras", ".h5", ".hdf5")]
    if not models:
        if any(Path(n).suffix.lower() == ".tflite" for n in files) or any(n.endswith("saved_model.pb") for n in files):
            raise UserError(f"'{name}' holds a TFLite or SavedModel export, which is for deployment; load the "
                            ".keras export or Teachable Machine's Keras export instead.")
        raise UserError(f"'{name}' holds no .keras or .h5 model file.")
    if len(models) > 1:
        raise UserError(f"'{name}' holds several models ({', '.join(models[:3])}): put one model in a zip.")
    model_name = models[0]
    folder = str(Path(model_name).parent)
    sibling = {Path(n).name.lower(): n for n in files if str(Path(n).parent) == folder}
    labels_text = zf.read(sibling["labels.txt"]).decode("utf-8-sig", errors="replace") \
        if "labels.txt" in sibling else None
    meta = _read_meta(zf, sibling.get("preprocessing.json"), name)
    if labels_text is not None:
        labels = _parse_labels(labels_text)
    elif meta.get("class_names"):
        labels = _parse_labels(list(meta["class_names"]))
    if preprocessing is None and meta:
        key = meta.get("preprocessing_key")
        preprocessing = key if key in PREPROCESSING else "raw"
    data = zf.read(model_name)
    if data.startswith(_HDF5_MAGIC):
        imported = _load_h5(data, Path(model_name).name, labels, preprocessing)
    else:
        imported = _load_keras(data, Path(model_name).name, labels, preprocessing,
                               source="cnnlab-export" if meta else "keras")
    if meta:
        imported.source = "cnnlab-export"
    return imported


def _read_meta(zf: zipfile.ZipFile, member: str | None, name: str) -> dict:
    if member is None:
        return {}
    try:
        meta = json.loads(zf.read(member))
    except ValueError:
        raise UserError(f"The preprocessing.json inside '{name}' is damaged.") from None
    return meta if isinstance(meta, dict) and meta.get("format") == "cnnlab-export" else {}


# ---------------------------------------------------------------- wrapping


def _finish(model: Any, name: str, labels: list[str] | None, preprocessing: str | None, source: str,
            *, tm: bool) -> ImportedModel:
    """Check the model classifies images, then wrap it to take raw pixels and output probabilities."""
    notes: list[str] = []
    shape = model.input_shape
    if isinstance(shape, list):
        raise UserError(f"'{name}' has several inputs; CNN Lab loads image classifiers with one image input.")
    if len(shape) != 4 or shape[-1] not in (1, 3, None):
        raise UserError(f"'{name}' does not take images (its input shape is {tuple(shape)[1:]}).")
    out_shape = model.output_shape
    if isinstance(out_shape, list) or len(out_shape) != 2 or not out_shape[-1]:
        raise UserError(f"'{name}' does not output one score per class (its output shape is {out_shape}).")
    channels = int(shape[-1] or 3)
    size = int(shape[1] or (TM_IMAGE_SIZE if tm else DEFAULT_IMAGE_SIZE))
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise UserError(f"'{name}' expects {shape[1]}x{shape[2]} images; CNN Lab works with square inputs.")
    if shape[1] is None:
        notes.append(f"The model accepts any image size; CNN Lab feeds it {size}x{size} images.")
    if preprocessing is None:
        preprocessing = "symmetric" if tm else _guess_preprocessing(model, notes)
    n_out = int(out_shape[-1])
    activation = _final_activation(model)
    n_classes = 2 if (n_out == 1 and activation == "sigmoid") else n_out
    if n_out == 1 and activation != "sigmoid":
        raise UserError(f"'{name}' has a single output that is not a probability, so it is not a classifier.")
    class_names = labels or [f"class {i}" for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise UserError(f"The labels list {len(class_names)} classes but the model outputs {n_classes} scores.")
    if labels is None:
        notes.append("No labels were given, so the classes are numbered.")
    wrapped = _wrap(model, size, channels, preprocessing, activation, n_out, notes)
    return ImportedModel(wrapped, class_names, size, channels, preprocessing, source, notes)


def _guess_preprocessing(model: Any, notes: list[str]) -> str:
    """Models that rescale inside take raw pixels; without such a layer the 0..1 convention is likelier."""
    kinds = {type(layer).__name__ for layer in leaf_layers(model)}
    if kinds & {"Rescaling", "Normalization"}:
        return "raw"
    notes.append("The model has no rescaling layer, so pixels are divided by 255 before it; choose another "
                 "preprocessing if its predictions look wrong.")
    return "unit"


def _final_activation(model: Any) -> str:
    """The activation of the layer producing the output ('softmax', 'sigmoid', 'linear', ...)."""
    import keras

    layer = model.layers[-1] if model.layers else None
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    if layer is None:
        return "linear"
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = layer.get_config().get("activation")
    if isinstance(act, dict):
        act = act.get("config")
    return str(act or "linear")


def _wrap(model: Any, size: int, channels: int, preprocessing: str, activation: str, n_out: int,
          notes: list[str]) -> Any:
    """The model behind a raw-pixel input (rescaled as needed) and ending in probabilities."""
    import keras

    if preprocessing == "raw" and activation == "softmax" and model.input_shape[1] is not None:
        return model
    inputs = keras.Input(shape=(size, size, channels), name="pixels")
    x = inputs
    if preprocessing == "symmetric":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus_one_one")(x)
    elif preprocessing == "unit":
        x = keras.layers.Rescaling(1.0 / 255.0, name="to_zero_one")(x)
    y = model(x)
    if activation == "sigmoid" and n_out == 1:
        y = keras.layers.Concatenate(name="two_class")([keras.layers.Rescaling(-1.0, offset=1.0)(y), y])
    elif activation not in ("softmax", "sigmoid"):
        y = keras.layers.Softmax(name="probabilities")(y)
        notes.append("The model outputs raw scores, so a softmax turns them into probabilities.")
    return keras.Model(inputs, y, name=f"imported_{model.name}")
