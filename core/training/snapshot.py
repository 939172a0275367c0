"""A run's live state (owned by its worker thread, behind a lock) and the immutable snapshot every reader gets."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from core.config import TrainConfig
from core.store.runs import ACTIVE_STATUSES, RunRecord, RunStore
from core.training.checkpoint import resume_point

STATUSES = ("queued", "running", "stopping", "finished", "stopped", "failed", "interrupted")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")

ProgressCallback = Callable[["RunSnapshot"], None]


@dataclass(frozen=True)
class RunSnapshot:
    """An immutable copy of a run's state for readers (UI, CLI, tests)."""

    run_id: str
    name: str
    status: str
    message: str | None
    config: TrainConfig
    epoch: int = 0  # completed epochs (1-based count)
    epochs_total: int = 0
    batch: int = 0  # batches done in the current epoch
    batches_per_epoch: int = 0
    images_per_second: float | None = None
    eta_seconds: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    batch_history: list[dict[str, float]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    group: str = ""
    resume_epoch: int | None = None  # epochs in the run's checkpoint: Resume continues after them (None: cannot)
    split: dict[str, Any] | None = None  # core.data.splits.split_facts of the run's dataset, once it is loaded

    @property
    def active(self) -> bool:
        """Queued, running or stopping: the run may still change."""
        return self.status in ACTIVE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        return d


def epochs_total(config: TrainConfig) -> int:
    """Epochs of both phases: the main fit plus a transfer model's fine-tuning phase."""
    spec = config.model
    extra = spec.fine_tune_epochs if spec.is_transfer and spec.fine_tune_layers > 0 else 0
    return config.epochs + max(extra, 0)


class LiveRun:
    """The mutable state of one run; every access goes through ``lock``."""

    def __init__(self, run_id: str, name: str, config: TrainConfig, created: float) -> None:
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.run_id, self.name, self.config = run_id, name, config
        self.status, self.message = "queued", None
        self.created, self.started, self.finished = created, None, None
        self.epoch, self.epochs_total = 0, epochs_total(config)
        self.batch, self.batches_per_epoch = 0, 0
        self.images_per_second: float | None = None
        self.eta_seconds: float | None = None
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.batch_history: list[dict[str, float]] = []
        self.result: dict[str, Any] | None = None
        self.split: dict[str, Any] | None = None
        self.resume: Any = None  # core.training.checkpoint.ResumePlan  # set when this run continues from its checkpoint

    def update(self, **changes: Any) -> None:
        """Set fields atomically."""
        with self.lock:
            for key, value in changes.items():
                setattr(self, key, value)

    def snapshot(self) -> RunSnapshot:
        """A deep-enough copy built under the lock."""
        with self.lock:
            return RunSnapshot(
                run_id=self.run_id, name=self.name, status=self.status, message=self.message, config=self.config,
                epoch=self.epoch, epochs_total=self.epochs_total, batch=self.batch,
                batches_per_epoch=self.batches_per_epoch, images_per_second=self.images_per_second,
                eta_seconds=self.eta_seconds, history={k: list(v) for k, v in self.history.items()},
                batch_history=[dict(b) for b in self.batch_history],
                result=dict(self.result) if self.result is not None else None,
                created=self.created, started=self.started, finished=self.finished, group=self.config.group,
                split=dict(self.split) if self.split is not None else None,
            )


def snapshot_from_record(store: RunStore, record: RunRecord) -> RunSnapshot:
    """A snapshot of a run that is not live in this process, rebuilt from the store."""
    epochs = store.epochs(record.run_id)
    history = {k: [nan_if_none(e.get(k)) for e in epochs] for k in HISTORY_KEYS}
    batches = [{k: v for k, v in b.items() if k not in ("epoch", "batch")} for b in store.batches(record.run_id)]
    return RunSnapshot(
        run_id=record.run_id, name=record.name, status=record.status, message=record.message, config=record.config,
        epoch=len(epochs), epochs_total=epochs_total(record.config), history=history, batch_history=batches,
        result=record.result, created=record.created, started=record.started, finished=record.finished,
        group=record.group, resume_epoch=resume_point(store, record.run_id, record.status, record.message),
        split=(record.result or {}).get("split"),
    )


def nan_if_none(v: Any) -> float:
    return float("nan") if v is None else float(v)
