"""A predictor loaded from a saved run (or an uploaded ``.keras`` file): thread-safe, raw pixels in.

Models take raw 0..255 pixels and preprocess inside themselves, so all we do here is match the
channels and the size the model was trained with. Caching predictors per run is the UI's job.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.data.pixels import as_uint8, to_model_pixels
from core.errors import UserError
from core.models.runtime import load_model_file, predict_function
from core.training.checkpoint import kept_model_file

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
        """The kept (best) model of a run with its class names (an unfinished run's from its checkpoint)."""
        record = store.get(run_id)
        if record is None:
            raise UserError(f"There is no run '{run_id}': `python -m core runs` lists them.")
        folder = store.run_dir(run_id)
        path = kept_model_file(store, run_id)  # an interrupted run's model comes from its checkpoint
        if not path.is_file():
            raise UserError(f"Run {run_id} has no saved model (its status is {record.status}): "
                            "a model is kept once the first epoch finishes.")
        names = _read_labels(folder / "labels.json", run_id)
        return cls(load_model_file(path), names, image_size=record.config.image_size)

    @classmethod
    def from_file(cls, path: Path | str, class_names: Sequence[str]) -> Predictor:
        """A model file chosen by the user (only ``.keras``, loaded in safe mode)."""
        return cls(load_model_file(Path(path)), class_names)

    # ------------------------------------------------------------ predicting

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """uint8 HxW(xC) -> uint8 ``S x S x C`` with the model's channels and size (``core.data.pixels``)."""
        try:
            return to_model_pixels(as_uint8(img), self.image_size, self.channels)
        except ValueError as err:
            raise UserError(str(err)) from None

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, C]`` for raw uint8 images of any size."""
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        batch = np.stack([self.preprocess(im) for im in images]).astype(np.float32)
        run = predict_function(self.model)  # traced once per model: ~40x faster than an eager call
        with self._lock:
            outs = [run(batch[start:start + PREDICT_CHUNK]) for start in range(0, len(batch), PREDICT_CHUNK)]
        return np.concatenate(outs).astype(np.float32)

    def top_k(self, img: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely classes with their probabilities, most likely first."""
        probs = self.predict([img])[0]
        order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(probs)))]
        return [(self.class_names[i], float(probs[i])) for i in order]


def _read_labels(path: Path, run_id: str) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"The class list of run {run_id} is missing or damaged ({path.name}).") from err
    if not isinstance(names, list) or not names:
        raise UserError(f"The class list of run {run_id} is damaged ({path.name}).")
    return [str(n) for n in names]
