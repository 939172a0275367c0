"""Evaluation numbers against hand-computed values and sklearn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from core.errors import UserError
from core.explain.metrics import (
    classification_metrics,
    confusion_matrix,
    load_predictions,
    metrics_at_epoch,
    most_confused,
    top_losses,
)

NAMES = ["cat", "dog", "fox"]


def _probs(pred: list[int], n: int = 3, conf: float = 0.8) -> np.ndarray:
    p = np.full((len(pred), n), (1 - conf) / (n - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_classification_metrics_match_hand_and_sklearn() -> None:
    y = [0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 2, 0, 2]
    r = classification_metrics(y, _probs(pred), NAMES)
    assert r["accuracy"] == pytest.approx(6 / 8)
    assert r["f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert r["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    dog = r["per_class"][1]
    assert dog == {"label": "dog", "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                   "support": 2}
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert r["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.1, 0.8, 0.8, 0.8, 0.8, 0.1, 0.8])))
    assert r["n_images"] == 8


def test_a_class_never_seen_counts_zero_not_error() -> None:
    r = classification_metrics([0, 0], _probs([0, 0]), NAMES)
    assert r["per_class"][2]["support"] == 0 and r["per_class"][2]["f1"] == 0.0


def test_empty_split_is_a_sentence() -> None:
    with pytest.raises(UserError):
        classification_metrics([], np.zeros((0, 3)), NAMES)


def test_top_losses_sorted_and_limited() -> None:
    y = [0, 1, 2]
    p = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    rows = top_losses(y, p)
    assert [r["index"] for r in rows] == [1, 2, 0]
    assert rows[0] == {"index": 1, "true": 1, "pred": 0, "confidence": pytest.approx(0.7),
                       "loss": pytest.approx(-np.log(0.2))}
    assert len(top_losses(y, p, k=2)) == 2


def test_most_confused_pairs() -> None:
    cm = np.array([[5, 3, 0], [1, 4, 0], [2, 0, 7]])
    assert most_confused(cm, NAMES) == [("cat", "dog", 3), ("fox", "cat", 2), ("dog", "cat", 1)]
    assert most_confused(cm, NAMES, min_count=2) == [("cat", "dog", 3), ("fox", "cat", 2)]


def test_metrics_at_epoch_rewinds(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 2])
    early, late = _probs([0, 0, 0, 1]), _probs([0, 1, 2, 2])
    path = tmp_path / "epoch_predictions.npz"
    np.savez(path, probs=np.stack([early, late]).astype(np.float16), labels=labels, files=np.array(["a"] * 4))
    ep = load_predictions(path)
    first, last = metrics_at_epoch(ep, 0, NAMES), metrics_at_epoch(ep, -1, NAMES)
    assert first["accuracy"] == 0.25 and last["accuracy"] == 1.0
    assert first["confusion_matrix"] != last["confusion_matrix"]
    with pytest.raises(UserError):
        metrics_at_epoch(ep, 5, NAMES)


def test_load_predictions_absent_or_damaged(tmp_path: Path) -> None:
    assert load_predictions(tmp_path / "missing.npz") is None
    bad = tmp_path / "predictions.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="damaged"):
        load_predictions(bad)
