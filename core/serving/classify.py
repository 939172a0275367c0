"""Classifying people's own photos: decode anything, predict, a verdict with a 'not sure' threshold, a table.

Used by the Classify page (uploads and camera snapshots) and testable without Streamlit. A predictor
is anything with ``class_names``, ``preprocess(img)`` and ``predict(list_of_images) -> probs``
(``core.serving.predictor.Predictor`` or a model a user uploaded).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.data.images import decode_image, resize_image
from core.errors import UserError

KEEP_SIDE = 512  # photos are kept at most this big for display (a phone photo is 12 M pixels)
# Class names that mean "none of the classes" when a run was trained with a background class.
NONE_CLASSES = frozenset({"background", "_background_", "none", "none of these", "nothing", "other", "unknown"})


class Answer:
    """What a classified photo or video frame says: top classes, label, confidence, verdict ("not sure" below a threshold).

    Subclasses are frozen dataclasses with ``class_names`` and ``probs`` (None when classification failed).
    """

    class_names: Sequence[str]
    probs: np.ndarray | None

    @property
    def ok(self) -> bool:
        return self.probs is not None and getattr(self, "error", None) is None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely classes with their probabilities, most likely first."""
        if not self.ok:
            return []
        order = np.argsort(-self.probs, kind="stable")[: max(1, k)]
        return [(self.class_names[int(i)], float(self.probs[int(i)])) for i in order]

    @property
    def label(self) -> str | None:
        return self.top(1)[0][0] if self.ok else None

    @property
    def confidence(self) -> float | None:
        return self.top(1)[0][1] if self.ok else None

    @property
    def class_index(self) -> int | None:
        return int(np.argmax(self.probs)) if self.ok else None

    def sure(self, threshold: float) -> bool:
        """Whether the top probability reaches the user's threshold."""
        return self.ok and self.confidence >= threshold

    def verdict(self, threshold: float) -> str:
        """'cat', 'not sure (maybe cat)', 'none of these' (a background class), or the error sentence."""
        if not self.ok:
            return getattr(self, "error", None) or "not classified"
        label = "none of these" if self.label.strip().lower() in NONE_CLASSES else self.label
        return label if self.sure(threshold) else f"not sure (maybe {label})"


@dataclass(frozen=True)
class PhotoResult(Answer):
    """One classified photo: what it looked like, what the model saw, and its probabilities (or the error)."""

    name: str
    class_names: list[str]
    probs: np.ndarray | None = None  # [C]
    image: np.ndarray | None = None  # the photo, upright, at most KEEP_SIDE pixels
    model_input: np.ndarray | None = None  # the resized pixels the model received
    error: str | None = None
    original_size: tuple[int, int] | None = field(default=None)  # (height, width) before shrinking


def _keep(img: np.ndarray) -> np.ndarray:
    """The photo shrunk (keeping its shape) so its longer side is at most KEEP_SIDE."""
    h, w = img.shape[:2]
    if max(h, w) <= KEEP_SIDE:
        return img
    scale = KEEP_SIDE / max(h, w)
    return resize_image(img, (max(1, round(h * scale)), max(1, round(w * scale))))


def read_photo(name: str, data: bytes) -> np.ndarray:
    """Any photo (JPEG, PNG, WebP, HEIC, EXIF-rotated, transparent, gray), upright, at its full size."""
    if not data:
        raise UserError(f"'{name}' is empty: upload the photo again.")
    named = io.BytesIO(data)
    named.name = name  # so a decoding error names the user's file
    return decode_image(named, channels=None)


def decode_photo(name: str, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """A photo's display copy (at most ``KEEP_SIDE``) and its original (height, width); not model input."""
    img = read_photo(name, data)
    return _keep(img), (int(img.shape[0]), int(img.shape[1]))


def classify_photos(predictor: Any, photos: Iterable[tuple[str, bytes]], batch_size: int = 16) -> list[PhotoResult]:
    """Classify (name, bytes) photos in batches; a photo that cannot be read gets its error, the rest still run.

    The model input is made from the full-size photo, as training makes it from the full-size file (a copy
    shrunk for display first would give other pixels).
    """
    names = list(predictor.class_names)
    results: list[PhotoResult | None] = []
    pending: list[tuple[int, str, np.ndarray, np.ndarray, tuple[int, int]]] = []
    for name, data in photos:
        try:
            img = read_photo(name, data)
            pending.append((len(results), name, _keep(img), predictor.preprocess(img), (img.shape[0], img.shape[1])))
            results.append(None)
        except UserError as err:
            results.append(PhotoResult(name, names, error=str(err)))
    for start in range(0, len(pending), max(1, batch_size)):
        chunk = pending[start : start + batch_size]
        probs = np.asarray(predictor.predict([c[3] for c in chunk]), dtype=np.float64)
        for (slot, name, img, seen, size), p in zip(chunk, probs):
            results[slot] = PhotoResult(name, names, p, img, seen, None, (int(size[0]), int(size[1])))
    return [r for r in results if r is not None]


def results_rows(results: Sequence[PhotoResult], threshold: float, k: int = 3) -> list[dict[str, Any]]:
    """One plain row per photo for the batch table and its CSV: verdict, top-k classes and probabilities."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"file": r.name, "verdict": r.verdict(threshold)}
        top = r.top(k)
        for i in range(k):
            row[f"class {i + 1}"] = top[i][0] if i < len(top) else None
            row[f"probability {i + 1}"] = round(top[i][1], 6) if i < len(top) else None
        row["sure"] = r.sure(threshold) if r.ok else None
        row["error"] = r.error
        rows.append(row)
    return rows


def results_csv(results: Sequence[PhotoResult], threshold: float, k: int = 3) -> bytes:
    """The batch table as UTF-8 CSV (opens in a spreadsheet)."""
    rows = results_rows(results, threshold, k)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode("utf-8")
