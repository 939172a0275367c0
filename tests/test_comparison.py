"""Comparing runs: saved-prediction loading, fair-comparison warnings, alignment, disagreements, speed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import ModelSpec, SplitConfig, TrainConfig
from core.errors import UserError
from core.explain.comparison import (
    Predictions,
    agreement_rate,
    align,
    comparability_warnings,
    default_selection,
    disagreements,
    file_index,
    load_epoch_predictions,
    load_predictions,
    measure_speed,
    param_count,
    summary_row,
)


@dataclass
class Rec:
    run_id: str
    config: TrainConfig
    status: str = "finished"
    name: str = ""
    result: dict[str, Any] | None = field(default_factory=dict)


def rec(run_id: str, data: str = "builtin:digits", model: str = "tiny", seed: int = 0, **result: Any) -> Rec:
    return Rec(run_id, TrainConfig(data=data, model=ModelSpec(name=model), split=SplitConfig(seed=seed)), result=result)


class FakeStore:
    def __init__(self, root: Path, ids: list[str]) -> None:
        self.root, self.ids = root, ids

    def get(self, run_id: str) -> object | None:
        return object() if run_id in self.ids else None

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id


def preds(probs: list[list[float]], labels: list[int], files: list[str]) -> Predictions:
    return Predictions(np.array(probs, dtype=float), np.array(labels), files)


# ---------------------------------------------------------------- loading


def test_load_predictions_reads_the_trainers_npz(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    np.savez(tmp_path / "r1" / "predictions.npz", probs=np.array([[0.2, 0.8], [0.9, 0.1]], np.float32),
             labels=np.array([1, 1]), files=np.array(["a.png", "#1"]))
    p = load_predictions(FakeStore(tmp_path, ["r1"]), "r1")
    assert p.files == ["a.png", "#1"]
    assert p.preds.tolist() == [1, 0] and p.correct.tolist() == [True, False]
    assert p.losses[1] == pytest.approx(-np.log(0.1), rel=1e-5)
    assert p.confidences.tolist() == pytest.approx([0.8, 0.9])


@pytest.mark.parametrize("case, words", [
    ("unknown run", "no run"),
    ("folder deleted", "folder"),
    ("no predictions", "no saved test predictions"),
    ("damaged file", "damaged"),
])
def test_missing_or_broken_artifacts_are_one_sentence(tmp_path: Path, case: str, words: str) -> None:
    store = FakeStore(tmp_path, [] if case == "unknown run" else ["r1"])
    if case in ("no predictions", "damaged file"):
        (tmp_path / "r1").mkdir()
    if case == "damaged file":
        (tmp_path / "r1" / "predictions.npz").write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match=words):
        load_predictions(store, "r1")


def test_epoch_predictions_rewind_to_any_epoch(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    probs = np.stack([np.full((3, 2), 0.5), np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]])])
    np.savez(tmp_path / "r1" / "epoch_predictions.npz", probs=probs, labels=np.array([0, 1, 1]),
             files=np.array(["a", "b", "c"]))
    store = FakeStore(tmp_path, ["r1"])
    ep = load_epoch_predictions(store, "r1")
    assert ep.epochs == 2
    assert ep.at(2).preds.tolist() == [0, 1, 0]
    assert not np.array_equal(ep.at(1).probs, ep.at(2).probs)
    with pytest.raises(UserError, match="epochs 1 to 2"):
        ep.at(3)
    assert load_epoch_predictions(FakeStore(tmp_path, ["r2"]), "r2") is None


def test_file_index_matches_paths_names_and_in_memory_indices() -> None:
    names = ["/d/cat/1.png", "/d/dog/1.png", "/d/dog/2.png"]
    assert file_index(["/d/dog/1.png", "/d/cat/1.png"], names) == [1, 0]
    # The data moved to another folder: the unique tail still finds each image; a bare '1.png' is ambiguous.
    assert file_index(["/new/dog/2.png", "/new/cat/1.png", "1.png", "x.png"], names) == [2, 0, None, None]
    assert file_index(["#2", "#0", "#9"], ["#0", "#1", "#2"]) == [2, 0, None]


# ---------------------------------------------------------------- fair comparison


def test_warns_when_datasets_differ() -> None:
    warnings = comparability_warnings([rec("a"), rec("b", data="builtin:shapes")])
    assert len(warnings) == 1 and "different datasets" in warnings[0]


def test_warns_when_split_hashes_differ_and_not_when_they_match() -> None:
    same = [rec("a", split_hash="x"), rec("b", model="transfer:mobilenet_v2", split_hash="x")]
    assert comparability_warnings(same) == []
    assert "split" in comparability_warnings([rec("a", split_hash="x"), rec("b", split_hash="y")])[0]
    # No hash recorded: fall back to the split settings.
    assert "split" in comparability_warnings([rec("a"), rec("b", seed=3)])[0]
    assert comparability_warnings([rec("a")]) == []


def test_default_selection_prefers_scratch_against_transfer_on_one_dataset() -> None:
    newest_first = [
        rec("t2", data="builtin:shapes", model="transfer:mobilenet_v2"),
        rec("s2", data="builtin:shapes"),
        rec("s1"),
        rec("t1", model="transfer:mobilenet_v2"),
    ]
    assert default_selection(newest_first) == ["s2", "t2"]
    assert default_selection([rec("t2", data="builtin:shapes", model="transfer:mobilenet_v2"), rec("s1"),
                              rec("t1", model="transfer:mobilenet_v2")]) == ["s1", "t1"]
    # No transfer run: the two newest on the newest run's dataset.
    assert default_selection([rec("c"), rec("b", data="builtin:shapes"), rec("a")]) == ["c", "a"]
    failed = rec("f")
    failed.status = "failed"
    assert default_selection([failed, rec("x")]) == ["x"]


def test_summary_row_reads_result_timing_and_params() -> None:
    r = rec("a", accuracy=0.9, macro_f1=0.8, f1=0.85, params={"total": 1234, "trainable": 1000},
            timing={"fit_seconds": 12.5, "train_images_per_second": 300.0})
    row = summary_row(r)
    assert (row["accuracy"], row["macro_f1"], row["params"], row["fit_seconds"]) == (0.9, 0.8, 1234, 12.5)
    assert row["latency_ms"] is None
    assert param_count({"params": 77}) == 77 and param_count(None) is None


# ---------------------------------------------------------------- disagreements


def test_align_uses_shared_files_in_the_first_runs_order() -> None:
    a = preds([[1, 0]] * 3, [0, 0, 0], ["x", "y", "z"])
    b = preds([[1, 0]] * 3, [0, 0, 0], ["z", "x", "w"])
    files, rows = align([a, b])
    assert files == ["x", "z"]
    assert rows[0].tolist() == [0, 2] and rows[1].tolist() == [1, 0]


def test_disagreements_put_right_versus_wrong_first() -> None:
    labels = [0, 1, 1, 0]
    files = ["a", "b", "c", "d"]
    one = preds([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], labels, files)
    two = preds([[0.8, 0.2], [0.99, 0.01], [0.45, 0.55], [0.6, 0.4]], labels, files)
    found = disagreements([one, two])
    assert [d.file for d in found] == ["b", "d", "c"]  # b and d: one right one wrong (b more confident)
    assert found[0].preds == (1, 0) and found[0].right == (True, False)
    assert agreement_rate([one, two]) == pytest.approx(0.25)
    assert disagreements([one, one]) == []
    assert agreement_rate([one, preds([[1, 0]], [0], ["zz"])]) is None


# ---------------------------------------------------------------- speed


def test_measure_speed_times_single_images_and_a_batch() -> None:
    calls: list[int] = []
    ticks = itertools.count()

    def predict(images: list[np.ndarray]) -> np.ndarray:
        calls.append(len(images))
        return np.zeros((len(images), 2))

    # A fake clock: every reading advances 1 ms, so each timed call lasts exactly 1 ms.
    speed = measure_speed(predict, np.zeros((8, 8, 3), np.uint8), repeats=5, warmup=2, batch=4,
                          clock=lambda: next(ticks) / 1000.0)
    assert calls == [1, 1, 1, 1, 1, 1, 1, 4, 4]
    assert speed.latency_ms == pytest.approx(1.0) and speed.latency_p90_ms == pytest.approx(1.0)
    assert speed.images_per_second == pytest.approx(4000.0)
    with pytest.raises(ValueError):
        measure_speed(predict, np.zeros((2, 2, 3)), repeats=0)
