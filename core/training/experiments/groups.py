"""Experiments as groups of ordinary runs: queue them, remember what each varies, read their status and results.

An experiment is a group of ordinary runs (``TrainConfig.group``) queued on the ``TrainingManager``;
they train one after another like any other run and land in the run store. A small manifest
(``<home>/experiments/<group>.json``, written atomically) remembers what each run varies, so the
tables, charts and captions can name them. Status, stop and results read the runs back through the
manager. Pure Python: no TensorFlow, no streamlit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.config import TrainConfig
from core.errors import UserError
from core.store.files import atomic_write_json

END_EPOCHS = 3  # "final" accuracy = mean of the last epochs, so one lucky epoch does not decide
KINDS = ("lab", "grid")


def percent(x: float) -> str:
    """A share as people say it: ``0.25`` -> ``25 %``."""
    return f"{x * 100:.0f} %"

# ---------------------------------------------------------------- the experiment model


@dataclass(frozen=True)
class ExperimentRun:
    """One run of an experiment: what it shows and the config that trains it."""

    key: str                      # stable id inside the experiment, e.g. "data-10", "reg-dropout", "grid-3"
    label: str                    # what a person reads: "10 % of the training data"
    series: tuple[str, ...]       # "learning_curve", "label_noise", "regularisers", "grid"
    values: dict[str, Any]        # what this run varies, e.g. {"train_fraction": 0.1}
    config: TrainConfig


@dataclass(frozen=True)
class Experiment:
    """A named series of runs queued together as one group."""

    kind: str                     # "lab" | "grid"
    title: str
    runs: tuple[ExperimentRun, ...]
    params: tuple[str, ...] = ()  # the varied parameters (grid), in order

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown experiment kind {self.kind!r}")
        keys = [r.key for r in self.runs]
        if len(set(keys)) != len(keys):
            raise ValueError("experiment run keys must be unique")


# ---------------------------------------------------------------- queuing and manifests


@dataclass(frozen=True)
class Manifest:
    """What a queued experiment is: its runs (by id) and what each one varies."""

    group: str
    kind: str
    title: str
    created: float
    params: tuple[str, ...]
    entries: tuple[dict[str, Any], ...]   # {run_id, key, label, series, values}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"], d["entries"] = list(self.params), [dict(e) for e in self.entries]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        return cls(group=str(d["group"]), kind=str(d["kind"]), title=str(d.get("title", "")),
                   created=float(d.get("created", 0.0)), params=tuple(d.get("params", ())),
                   entries=tuple(dict(e) for e in d.get("entries", ())))

    def entry(self, key: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["key"] == key), None)


def experiments_dir(home: Path | str) -> Path:
    """Where experiment manifests live under a CNN Lab home."""
    return Path(home) / "experiments"


def _manifest_path(home: Path | str, group: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", group):
        raise UserError(f"'{group}' is not an experiment name.")
    return experiments_dir(home) / f"{group}.json"


def new_group_id(kind: str, now: float | None = None) -> str:
    """``lab-20250101-120000-123`` style ids: sortable, readable, unique per millisecond."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{kind}-{stamp}-{int(now * 1000) % 1000:03d}"


def queue_experiment(manager: Any, experiment: Experiment) -> str:
    """Queue every run of the experiment as one group on the manager; returns the group id."""
    store = manager.store
    group = new_group_id(experiment.kind)
    while _manifest_path(store.home, group).exists():  # two clicks in one millisecond
        group = new_group_id(experiment.kind, time.time() + 0.001)
    configs = [run.config.replace(group=group) for run in experiment.runs]
    entries = [{"key": run.key, "label": run.label, "series": list(run.series), "values": dict(run.values),
                "run_id": None} for run in experiment.runs]
    manifest = Manifest(group, experiment.kind, experiment.title, time.time(), experiment.params, tuple(entries))
    # The manifest goes first: a page polling between two starts still knows every run that is coming.
    atomic_write_json(_manifest_path(store.home, group), manifest.to_dict())
    for entry, config in zip(entries, configs):
        entry["run_id"] = manager.start(config, name=config.name)
        atomic_write_json(_manifest_path(store.home, group), manifest.to_dict())
    return group


def load_manifest(home: Path | str, group: str) -> Manifest | None:
    """The manifest of a group, or None when it is missing or unreadable."""
    path = _manifest_path(home, group)
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_experiments(home: Path | str, kind: str | None = None) -> list[Manifest]:
    """Every experiment under ``home`` (optionally of one kind), newest first."""
    folder = experiments_dir(home)
    out = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        m = load_manifest(home, path.stem)
        if m is not None and (kind is None or m.kind == kind):
            out.append(m)
    return sorted(out, key=lambda m: m.created, reverse=True)


# ---------------------------------------------------------------- status, stop


@dataclass(frozen=True)
class MemberRun:
    """One run of a group as the UI shows it: its manifest entry plus its current snapshot."""

    key: str
    label: str
    series: tuple[str, ...]
    values: dict[str, Any]
    run_id: str | None
    snapshot: Any | None          # core.training.RunSnapshot; None when not queued yet or deleted

    @property
    def status(self) -> str:
        if self.snapshot is not None:
            return self.snapshot.status
        return "deleted" if self.run_id else "queued"


@dataclass(frozen=True)
class GroupStatus:
    """The state of a whole experiment."""

    group: str
    kind: str
    title: str
    params: tuple[str, ...]
    members: tuple[MemberRun, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.members)

    @property
    def done(self) -> int:
        return sum(1 for m in self.members if m.status not in ("queued", "running", "stopping"))

    @property
    def active(self) -> bool:
        return self.done < self.total

    @property
    def progress(self) -> float:
        """Share of all planned epochs completed, 0..1 (ended runs count as complete)."""
        planned = done = 0.0
        for m in self.members:
            snap = m.snapshot
            total = max(int(getattr(snap, "epochs_total", 0) or 0), 1) if snap is not None else 1
            planned += total
            if m.status in ("queued", "running", "stopping") and snap is not None:
                within = snap.batch / snap.batches_per_epoch if snap.batches_per_epoch and m.status != "queued" else 0
                done += min(snap.epoch + within, total)
            elif m.status not in ("queued", "running", "stopping"):
                done += total
        return done / planned if planned else 0.0

    def member(self, key: str) -> MemberRun | None:
        return next((m for m in self.members if m.key == key), None)

    def eta_seconds(self) -> float | None:
        """Time left for the whole group from the mean time of the runs that finished."""
        times = [m.snapshot.finished - m.snapshot.started for m in self.members
                 if m.status == "finished" and m.snapshot.started and m.snapshot.finished]
        if not times or not self.active:
            return None
        per_run = sum(times) / len(times)
        left = 0.0
        for m in self.members:
            if m.status == "queued":
                left += per_run
            elif m.status in ("running", "stopping"):
                left += per_run * (1 - _run_fraction(m.snapshot))
        return left


def _run_fraction(snap: Any) -> float:
    total = max(int(snap.epochs_total or 0), 1)
    within = snap.batch / snap.batches_per_epoch if snap.batches_per_epoch else 0.0
    return max(0.0, min(1.0, (snap.epoch + within) / total))


def group_status(manager: Any, group: str) -> GroupStatus | None:
    """Every run of the group with its live snapshot; None for an unknown group."""
    manifest = load_manifest(manager.store.home, group)
    if manifest is None:
        return None
    members = []
    for e in manifest.entries:
        run_id = e.get("run_id")
        snap = manager.snapshot(run_id) if run_id else None
        members.append(MemberRun(e["key"], e["label"], tuple(e.get("series", ())), dict(e.get("values", {})),
                                 run_id, snap))
    counts: dict[str, int] = {}
    for m in members:
        counts[m.status] = counts.get(m.status, 0) + 1
    return GroupStatus(group, manifest.kind, manifest.title, manifest.params, tuple(members), counts)


def stop_group(manager: Any, group: str) -> int:
    """Stop the whole group: queued runs are cancelled, the running one stops within a batch. Returns how many."""
    status = group_status(manager, group)
    if status is None:
        raise UserError(f"There is no experiment '{group}'.")
    # Queued ones first (newest first), so none of them starts when the running one ends.
    queued = [m for m in status.members if m.status == "queued" and m.run_id]
    running = [m for m in status.members if m.status in ("running", "stopping") and m.run_id]
    for m in [*reversed(queued), *running]:
        manager.stop(m.run_id)
    # A queued run may have started while the others were being stopped: stop whatever is still going.
    for m in status.members:
        snap = manager.snapshot(m.run_id) if m.run_id else None
        if snap is not None and snap.status in ("queued", "running"):
            manager.stop(m.run_id)
    stopped = len(queued) + len(running)
    return stopped


def wait_group(manager: Any, group: str, timeout: float | None = None) -> GroupStatus:
    """Block until every run of the group has ended (or ``timeout`` passes); for the CLI, tests, benchmarks."""
    deadline = None if timeout is None else time.monotonic() + timeout
    manifest = load_manifest(manager.store.home, group)
    if manifest is None:
        raise UserError(f"There is no experiment '{group}'.")
    for e in manifest.entries:
        if e.get("run_id"):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            manager.wait(e["run_id"], timeout=left)
    status = group_status(manager, group)
    assert status is not None
    return status


# ---------------------------------------------------------------- results


def end_value(values: Sequence[float] | None, n: int = END_EPOCHS) -> float | None:
    """Mean of the last ``n`` finite values (NaN gaps skipped); None when there are none."""
    finite = [float(v) for v in (values or []) if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    tail = finite[-n:]
    return sum(tail) / len(tail)


def run_row(member: MemberRun, params: Sequence[str] = ()) -> dict[str, Any]:
    """One results-table row: what varied, the status and the accuracies (fractions 0..1 or None)."""
    snap = member.snapshot
    history = snap.history if snap is not None else {}
    result = (snap.result or {}) if snap is not None else {}
    val = [v for v in history.get("val_accuracy", []) if v == v]
    row: dict[str, Any] = {"run": member.label, "key": member.key}
    for p in params:
        row[p] = member.values.get(p)
    row.update({
        "status": member.status,
        "epochs": snap.epoch if snap is not None else 0,
        "train_accuracy": end_value(history.get("accuracy")),
        "val_accuracy": end_value(history.get("val_accuracy")),
        "best_val_accuracy": max(val) if val else None,
        "test_accuracy": result.get("accuracy"),
        "fit_seconds": (result.get("timing") or {}).get("fit_seconds"),
        "run_id": member.run_id,
    })
    return row


def results_table(status: GroupStatus, sort_by: str | None = "val_accuracy") -> list[dict[str, Any]]:
    """A row per run; sorted by ``sort_by`` (highest first, unknown values last), else in queue order."""
    rows = [run_row(m, status.params) for m in status.members]
    if sort_by:
        rows.sort(key=lambda r: (r.get(sort_by) is None, -(r.get(sort_by) or 0.0)))
    return rows


def best_run(status: GroupStatus, metric: str = "val_accuracy") -> str | None:
    """The finished run with the highest ``metric`` (final validation accuracy by default)."""
    rows = [r for r in results_table(status, metric) if r["status"] == "finished" and r.get(metric) is not None]
    return rows[0]["run_id"] if rows else None
