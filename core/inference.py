"""A predictor loaded from a saved run (or an uploaded ``.keras`` file): thread-safe, raw pixels in.

Models take raw 0..255 pixels and preprocess inside themselves, so all we do here is match the
channels and the size the model was trained with. Caching predictors per run is the UI's job.
"""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import UserError
from core.images import resize_image

PREDICT_CHUNK = 64


class Predictor:
    """Wraps a Keras model; ``predict`` holds a lock because a TF model is not safe for concurrent calls."""

    def __init__(self, model: Any, class_names: Sequence[str], image_size: int | None = None,
                 channels: int | None = None) -> None:
        shape = tuple(model.input_shape)
        self.model = model
        self.class_names = [str(c) for c in class_names]
        self.image_size = int(shape[1] or image_size or 0) or int(image_size or 32)
        self.channels = int(shape[3] or channels or 3)
        self._lock = threading.Lock()
        n_out = int(model.output_shape[-1])
        if n_out != len(self.class_names):
            raise UserError(f"The model predicts {n_out} classes but {len(self.class_names)} class names were given.")

    # ------------------------------------------------------------ loading

    @classmethod
    def from_run(cls, store: Any, run_id: str) -> Predictor:
        """The kept (best) model of a run with its class names."""
        record = store.get(run_id)
        if record is None:
            raise UserError(f"There is no run '{run_id}': `python -m core runs` lists them.")
        folder = store.run_dir(run_id)
        path = folder / "model.keras"
        if not path.is_file():
            raise UserError(f"Run {run_id} has no saved model (its status is {record.status}): "
                            "a model is kept once the first epoch finishes.")
        names = _read_labels(folder / "labels.json", run_id)
        return cls(load_model_safely(path), names, image_size=record.config.image_size)

    @classmethod
    def from_file(cls, path: Path | str, class_names: Sequence[str]) -> Predictor:
        """A model file chosen by the user (only ``.keras``, loaded in safe mode)."""
        return cls(load_model_safely(Path(path)), class_names)

    # ------------------------------------------------------------ predicting

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """uint8 HxW(xC) -> uint8 ``S x S x C`` with the model's channels and size."""
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise UserError(f"Expected an image array of height x width x channels, got shape {list(a.shape)}.")
        if a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        a = _match_channels(a, self.channels)
        out = resize_image(a, self.image_size)
        return out if out.ndim == 3 else out[:, :, None]

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, C]`` for raw uint8 images of any size."""
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        batch = np.stack([self.preprocess(im) for im in images]).astype(np.float32)
        outs = []
        with self._lock:
            if getattr(self, "_graph", None) is None:
                from core.features import predict_function  # traced once: ~40x faster than an eager call

                self._graph = predict_function(self.model)
            for start in range(0, len(batch), PREDICT_CHUNK):
                outs.append(self._graph(batch[start:start + PREDICT_CHUNK]))
        return np.concatenate(outs).astype(np.float32)

    def top_k(self, img: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely classes with their probabilities, most likely first."""
        probs = self.predict([img])[0]
        order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(probs)))]
        return [(self.class_names[i], float(probs[i])) for i in order]


def _match_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """Drop alpha, and convert gray <-> RGB (ITU-R 601 luma) to what the model expects."""
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.shape[2] == channels:
        return a
    if channels == 3:
        return np.repeat(a, 3, axis=2)
    luma = a[:, :, 0] * 0.299 + a[:, :, 1] * 0.587 + a[:, :, 2] * 0.114
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]


def _read_labels(path: Path, run_id: str) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"The class list of run {run_id} is missing or damaged ({path.name}).") from err
    if not isinstance(names, list) or not names:
        raise UserError(f"The class list of run {run_id} is damaged ({path.name}).")
    return [str(n) for n in names]


def load_model_safely(path: Path) -> Any:
    """Load a ``.keras`` file with ``safe_mode=True`` (no Lambda code); problems become one sentence."""
    import keras

    if path.suffix.lower() != ".keras":
        raise UserError(f"{path.name}: CNN Lab only loads .keras model files (older .h5 files can run "
                        "arbitrary code when loaded, so they are refused).")
    if not path.is_file():
        raise UserError(f"The model file {path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise UserError(f"The model file {path.name} is damaged or not a Keras model.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - any failure to load a user's file is the file's fault
        text = str(err)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise UserError(f"The model file {path.name} contains custom code (a Lambda layer); "
                            "CNN Lab refuses to run it for safety.") from err
        first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
        raise UserError(f"The model file {path.name} could not be loaded ({first}).") from err
