"""Reading a run's saved predictions and comparing runs: fair-comparison checks, disagreements, speed.

Plain numpy on the artifacts the trainer writes (``predictions.npz``, ``epoch_predictions.npz``);
the Evaluate, Compare and Classify pages, and the tests, use the same functions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.naming import source_label
from core.errors import UserError

# ---------------------------------------------------------------- saved predictions


@dataclass(frozen=True)
class Predictions:
    """Class probabilities for one split of one run, with the true labels and the images' names."""

    probs: np.ndarray  # [N, C] float
    labels: np.ndarray  # [N] int
    files: list[str]  # [N] image identifiers (Split.describe(i) or a file path)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def confidences(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self) else np.zeros(0)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    @property
    def losses(self) -> np.ndarray:
        """Cross-entropy of each image: how surprised the model is by the true label."""
        if not len(self):
            return np.zeros(0)
        p = self.probs[np.arange(len(self)), self.labels]
        return -np.log(np.clip(p, 1e-12, 1.0))


@dataclass(frozen=True)
class EpochPredictions:
    """Validation probabilities after every epoch (``probs [E, N, C]``) for the epoch-rewind slider."""

    probs: np.ndarray
    labels: np.ndarray
    files: list[str]

    @property
    def epochs(self) -> int:
        return int(self.probs.shape[0])

    def at(self, epoch: int) -> Predictions:
        """The validation predictions after ``epoch`` (1-based)."""
        if not 1 <= epoch <= self.epochs:
            raise UserError(f"This run kept predictions for epochs 1 to {self.epochs}, not epoch {epoch}.")
        return Predictions(self.probs[epoch - 1], self.labels, self.files)


def _artifact(store: Any, run_id: str, name: str, what: str) -> Path:
    """The path of one artifact of a run, or a UserError saying what is missing."""
    if store.get(run_id) is None:
        raise UserError(f"There is no run '{run_id}' any more: it may have been deleted.")
    folder = Path(store.run_dir(run_id))
    if not folder.is_dir():
        raise UserError(f"The folder of run {run_id} is gone ({folder}), so its {what} cannot be shown.")
    path = folder / name
    if not path.is_file():
        raise UserError(f"Run {run_id} has no saved {what}: it may have stopped before the end of training.")
    return path


def _read(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a predictions file (``core.explain.metrics.load_predictions``); damage -> UserError."""
    from core.explain.metrics import load_predictions as read_npz

    data = read_npz(path)
    missing = [k for k in ("probs", "labels", "files") if data is None or k not in data]
    if missing:
        raise UserError(f"The saved predictions {path.name} are incomplete (no {', '.join(missing)}); "
                        "re-run the training.")
    return data


def load_predictions(store: Any, run_id: str) -> Predictions:
    """The test-set predictions of a finished run (``predictions.npz``)."""
    data = _read(_artifact(store, run_id, "predictions.npz", "test predictions"))
    return Predictions(np.asarray(data["probs"], dtype=np.float64), np.asarray(data["labels"]).astype(np.int64),
                       [str(f) for f in np.asarray(data["files"]).tolist()])


def load_epoch_predictions(store: Any, run_id: str) -> EpochPredictions | None:
    """Per-epoch validation predictions (``epoch_predictions.npz``), or None when the run kept none."""
    path = Path(store.run_dir(run_id)) / "epoch_predictions.npz"
    if not path.is_file():
        return None
    data = _read(path)
    probs = np.asarray(data["probs"], dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] == 0:
        return None
    return EpochPredictions(probs, np.asarray(data["labels"]).astype(np.int64),
                            [str(f) for f in np.asarray(data["files"]).tolist()])


def _suffixes(name: str) -> list[str]:
    """'a/b/c.png' -> ['a/b/c.png', 'b/c.png', 'c.png'] (longest first; backslashes count as slashes)."""
    parts = name.replace("\\", "/").split("/")
    return ["/".join(parts[i:]) for i in range(len(parts)) if parts[i]]


def file_index(entries: Sequence[str], names: Sequence[str]) -> list[int | None]:
    """For each prediction's file entry, the row of that image among a split's ``names`` (None when absent).

    ``names`` are the split's file paths (or ``describe(i)``: a file name or ``#i``). An entry matches a
    name exactly, else by the longest path tail the two share that no other image of the split has.
    """
    exact: dict[str, int] = {}
    tails: dict[str, int | None] = {}
    for i, name in enumerate(names):
        exact.setdefault(str(name), i)
        for tail in _suffixes(str(name)):
            tails[tail] = None if tail in tails and tails[tail] != i else i  # None marks an ambiguous tail
    out: list[int | None] = []
    for entry in entries:
        entry = str(entry)
        hit = exact.get(entry)
        if hit is None:
            hit = next((tails[t] for t in _suffixes(entry) if tails.get(t) is not None), None)
        if hit is None and entry.startswith("#") and entry[1:].isdigit() and int(entry[1:]) < len(names):
            hit = int(entry[1:])
        out.append(hit)
    return out


def display_names(files: Sequence[str]) -> list[str]:
    """File entries without the folder they all share ('/data/signs/9/a.jpg' -> '9/a.jpg'), for tables."""
    paths = [str(f).replace("\\", "/") for f in files]
    if len(paths) < 2 or not all("/" in p for p in paths):
        return [p.rsplit("/", 1)[-1] if "/" in p else p for p in paths]
    absolute = {p.startswith("/") for p in paths}
    prefix = os.path.commonpath(paths) if len(absolute) == 1 else ""
    if not prefix or prefix in paths:
        return paths
    return [p[len(prefix):].lstrip("/") for p in paths]


# ---------------------------------------------------------------- fair comparison


def comparability_warnings(records: Sequence[Any], label: Callable[[str], str] | None = None) -> list[str]:
    """Sentences saying why the runs' test scores are not measured on the same images, if they are not.

    ``label`` names a dataset source in words (default: ``core.data.naming.source_label``).
    """
    if len(records) < 2:
        return []
    warnings: list[str] = []
    datasets = sorted({r.config.data for r in records})
    if len(datasets) > 1:
        name = label or source_label
        warnings.append(
            f"These runs used different datasets ({', '.join(name(d) for d in datasets)}): their scores come from "
            "different test images and cannot be compared directly."
        )
        return warnings
    hashes = [(r.result or {}).get("split_hash") for r in records]
    splits = {r.config.split.to_json() for r in records}
    if len(set(hashes) - {None}) > 1 or (None in hashes and len(splits) > 1):
        warnings.append(
            "These runs split the dataset differently (other seed, ratios or limit per class), so they were "
            "tested on different images: small differences in their scores may be luck."
        )
    classes = {tuple((r.result or {}).get("classes") or ()) for r in records} - {()}
    if len(classes) > 1:
        warnings.append("These runs do not share the same class list, so their confusion matrices do not line up.")
    return warnings


def align(predictions: Sequence[Predictions]) -> tuple[list[str], list[np.ndarray]]:
    """The images every run predicted, in the first run's order, and each run's row index for them."""
    if not predictions:
        return [], []
    first = predictions[0]
    usable = all(len(set(p.files)) == len(p) and len(p) for p in predictions)
    if not usable:
        if len({len(p) for p in predictions}) == 1:
            order = np.arange(len(first))
            return list(first.files), [order for _ in predictions]
        return [], [np.zeros(0, dtype=np.int64) for _ in predictions]
    positions = [{f: i for i, f in enumerate(p.files)} for p in predictions]
    common = [f for f in first.files if all(f in pos for pos in positions[1:])]
    return common, [np.array([pos[f] for f in common], dtype=np.int64) for pos in positions]


@dataclass(frozen=True)
class Disagreement:
    """One image on which the runs do not all give the same answer."""

    file: str
    label: int
    preds: tuple[int, ...]
    confidences: tuple[float, ...]
    rows: tuple[int, ...]  # the image's row in each run's predictions

    @property
    def right(self) -> tuple[bool, ...]:
        return tuple(p == self.label for p in self.preds)


def disagreements(predictions: Sequence[Predictions]) -> list[Disagreement]:
    """Images on which the runs predict different classes; those only some runs got right come first."""
    files, rows = align(predictions)
    if len(predictions) < 2 or not files:
        return []
    preds = np.stack([p.preds[r] for p, r in zip(predictions, rows)])
    confs = np.stack([p.confidences[r] for p, r in zip(predictions, rows)])
    labels = predictions[0].labels[rows[0]]
    differ = np.flatnonzero((preds != preds[0]).any(axis=0))
    found = [
        Disagreement(
            file=files[i],
            label=int(labels[i]),
            preds=tuple(int(v) for v in preds[:, i]),
            confidences=tuple(float(v) for v in confs[:, i]),
            rows=tuple(int(r[i]) for r in rows),
        )
        for i in differ
    ]
    # Mixed right/wrong answers teach the most; then the most confident disagreements.
    return sorted(found, key=lambda d: (not (any(d.right) and not all(d.right)), -max(d.confidences)))


def agreement_rate(predictions: Sequence[Predictions]) -> float | None:
    """Share of the shared test images on which all runs give the same answer."""
    files, rows = align(predictions)
    if len(predictions) < 2 or not files:
        return None
    preds = np.stack([p.preds[r] for p, r in zip(predictions, rows)])
    return float((preds == preds[0]).all(axis=0).mean())


# ---------------------------------------------------------------- picking runs and reading their numbers


def default_selection(records: Sequence[Any]) -> list[str]:
    """Run ids to compare first: the latest scratch and latest transfer run on one dataset, else the latest two."""
    finished = [r for r in records if r.status == "finished"]  # newest first, as RunStore.list returns them
    for transfer in (r for r in finished if r.config.model.is_transfer):
        scratch = next((r for r in finished
                        if not r.config.model.is_transfer and r.config.data == transfer.config.data), None)
        if scratch is not None:
            return [scratch.run_id, transfer.run_id]
    if finished:
        same = [r for r in finished if r.config.data == finished[0].config.data]
        if len(same) >= 2:
            return [same[0].run_id, same[1].run_id]
    return [r.run_id for r in finished[:2]]


def param_count(result: dict[str, Any] | None) -> int | None:
    """Total parameters from a run's result (``params`` may be a number or ``{total, ...}``)."""
    params = (result or {}).get("params")
    if isinstance(params, dict):
        params = params.get("total")
    return int(params) if isinstance(params, (int, float)) else None


def summary_row(record: Any, speed: Speed | None = None) -> dict[str, Any]:
    """The comparison-table numbers of one run (None where the run did not record them)."""
    result = record.result or {}
    timing = result.get("timing") or {}
    return {
        "run_id": record.run_id,
        "name": record.name or record.run_id,
        "model": record.config.model.name,
        "dataset": record.config.data,
        "accuracy": result.get("accuracy"),
        "macro_f1": result.get("macro_f1"),
        "f1": result.get("f1"),
        "params": param_count(result),
        "fit_seconds": timing.get("fit_seconds"),
        "train_images_per_second": timing.get("train_images_per_second"),
        "latency_ms": speed.latency_ms if speed else None,
        "predict_images_per_second": speed.images_per_second if speed else None,
    }


# ---------------------------------------------------------------- speed


@dataclass(frozen=True)
class Speed:
    """How fast a model answers: one image at a time (latency) and in a batch (throughput)."""

    latency_ms: float  # median time to classify one image, end to end through the predictor
    latency_p90_ms: float
    images_per_second: float  # batch throughput
    repeats: int


def measure_speed(
    predict: Callable[[list[np.ndarray]], Any],
    image: np.ndarray,
    *,
    repeats: int = 15,
    warmup: int = 2,
    batch: int = 32,
    clock: Callable[[], float] = time.perf_counter,
) -> Speed:
    """Time ``predict([image])`` ``repeats`` times (after ``warmup``) and one batch of ``batch`` copies."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(max(0, warmup)):
        predict([image])
    times = []
    for _ in range(repeats):
        start = clock()
        predict([image])
        times.append((clock() - start) * 1000.0)
    images = [image] * batch
    predict(images)  # a batch shape the model has not seen yet compiles once
    start = clock()
    predict(images)
    elapsed = max(clock() - start, 1e-9)
    return Speed(
        latency_ms=float(np.median(times)),
        latency_p90_ms=float(np.percentile(times, 90)),
        images_per_second=batch / elapsed,
        repeats=repeats,
    )
