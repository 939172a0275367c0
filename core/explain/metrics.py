"""Evaluation numbers: metrics, confusion matrix, top losses, most confused pairs, validation scores, epoch rewind.

Numbers only, like fastai's ``ClassificationInterpretation``; figures live in ``core.plots``.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from core.errors import UserError

_EPS = 1e-7


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of true class ``i`` predicted as ``j`` (int64, ``n x n``)."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def classification_metrics(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted and macro precision/recall/F1, a per-class table, the confusion matrix and the loss."""
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[1] != n_classes:
        raise ValueError(f"probs must be [{y.size}, {n_classes}], got {list(p.shape)}")
    if y.size == 0:
        raise UserError("There are no images to evaluate: the evaluation split is empty.")
    pred = p.argmax(axis=1)
    labels = list(range(n_classes))
    w = precision_recall_fscore_support(y, pred, labels=labels, average="weighted", zero_division=0)
    m = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    pc = precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    per_class = [
        {"label": str(class_names[i]), "precision": float(pc[0][i]), "recall": float(pc[1][i]),
         "f1": float(pc[2][i]), "support": int(pc[3][i])}
        for i in range(n_classes)
    ]
    return {
        "accuracy": float((pred == y).mean()),
        "precision": float(w[0]),
        "recall": float(w[1]),
        "f1": float(w[2]),
        "macro_precision": float(m[0]),
        "macro_recall": float(m[1]),
        "macro_f1": float(m[2]),
        "loss": float(_per_image_loss(y, p).mean()),
        "n_images": int(y.size),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, n_classes).tolist(),
    }


def validation_scores(probs: np.ndarray, labels: np.ndarray, model: Any = None) -> tuple[float, float]:
    """``(val_loss, val_accuracy)`` as Keras computes them: clipped cross-entropy plus the model's penalties."""
    p = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), _EPS, 1.0)
    loss = float(-np.log(p).mean())
    if model is not None:
        loss += _regularisation(model)
    return loss, float((probs.argmax(axis=1) == labels).mean())


def _regularisation(model: Any) -> float:
    """The model's weight penalties (L2...), which Keras adds to every reported loss."""
    with contextlib.suppress(Exception):
        return float(sum(float(np.asarray(x)) for x in model.losses))
    return 0.0


def _per_image_loss(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image's true class."""
    return -np.log(np.clip(probs[np.arange(y.size), y], _EPS, 1.0))


def top_losses(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, k: int | None = None) -> list[dict[str, Any]]:
    """The images the model got most wrong: index, true, pred, confidence (of pred), loss; highest loss first."""
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    losses = _per_image_loss(y, p)
    pred = p.argmax(axis=1)
    order = np.argsort(-losses, kind="stable")
    if k is not None:
        order = order[: max(k, 0)]
    return [
        {"index": int(i), "true": int(y[i]), "pred": int(pred[i]), "confidence": float(p[i, pred[i]]),
         "loss": float(losses[i])}
        for i in order
    ]


def most_confused(cm: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], min_count: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal ``(true, predicted, count)`` pairs with at least ``min_count`` images, most frequent first."""
    m = np.asarray(cm, dtype=np.int64)
    pairs = [
        (str(class_names[i]), str(class_names[j]), int(m[i, j]))
        for i in range(m.shape[0])
        for j in range(m.shape[1])
        if i != j and m[i, j] >= min_count
    ]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def metrics_at_epoch(epoch_predictions: dict[str, Any], epoch_index: int, class_names: Sequence[str]) -> dict[str, Any]:
    """Validation metrics as they were after epoch ``epoch_index`` (0-based; negative counts from the end)."""
    probs = np.asarray(epoch_predictions["probs"])
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise UserError("This run kept no per-epoch validation predictions.")
    if not -probs.shape[0] <= epoch_index < probs.shape[0]:
        raise UserError(f"Epoch {epoch_index + 1} is out of range: the run kept {probs.shape[0]} epochs.")
    return classification_metrics(epoch_predictions["labels"], probs[epoch_index].astype(np.float32), class_names)


def load_predictions(path: Path | str) -> dict[str, np.ndarray] | None:
    """Read a ``predictions.npz`` / ``epoch_predictions.npz`` as a dict (None if absent); damage -> UserError."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"The saved predictions {path.name} are damaged ({err}); re-run the training to rebuild them.") from err


def run_predictions(store: Any, run_id: str, which: str = "test") -> dict[str, np.ndarray] | None:
    """A run's test predictions (``which="test"``) or per-epoch validation predictions (``"epochs"``)."""
    name = {"test": "predictions.npz", "epochs": "epoch_predictions.npz"}[which]
    return load_predictions(store.run_dir(run_id) / name)
