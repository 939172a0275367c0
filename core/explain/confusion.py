"""The numbers behind a confusion matrix: row and column rates, the images in a cell, the cells worth opening."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_rates(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row rates (share of each true class) and column rates (share of each predicted class)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    cols = cm.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_rates = np.where(rows > 0, cm / np.where(rows > 0, rows, 1), 0.0)
        col_rates = np.where(cols > 0, cm / np.where(cols > 0, cols, 1), 0.0)
    return row_rates, col_rates


def cell_members(y_true: np.ndarray, probs: np.ndarray, true_index: int, pred_index: int) -> np.ndarray:
    """Indices of the images in one confusion cell, the highest loss (most surprising) first."""
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(y_true) != len(probs):
        return np.zeros(0, dtype=np.int64)
    preds = probs.argmax(axis=1)
    idx = np.flatnonzero((y_true == true_index) & (preds == pred_index))
    if idx.size == 0:
        return idx.astype(np.int64)
    losses = -np.log(np.clip(probs[idx, y_true[idx]], 1e-12, 1.0))
    return idx[np.argsort(-losses, kind="stable")].astype(np.int64)


def cell_options(cm: np.ndarray, class_names: Sequence[str], include_diagonal: bool = True) -> list[tuple[int, int]]:
    """The non-empty cells, mistakes first (largest count first), for the 'true -> predicted' picker."""
    cm = np.asarray(cm)
    cells = [(int(t), int(p)) for t, p in zip(*np.nonzero(cm)) if include_diagonal or t != p]
    return sorted(cells, key=lambda c: (c[0] == c[1], -int(cm[c]), c))


def cell_label(cell: tuple[int, int], class_names: Sequence[str], count: int | None = None) -> str:
    """'true 3 -> predicted 8 (4 images)' for the cell picker."""
    t, p = cell
    text = f"true {class_names[t]} → predicted {class_names[p]}"
    return text + (f" ({count} image{'s' if count != 1 else ''})" if count is not None else "")
