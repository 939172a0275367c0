"""The training manager: a queue of runs, one worker thread per run, snapshots for readers; no TensorFlow here.

Pages, the CLI and the tests start, stop, resume, list and wait for runs through ``TrainingManager``;
each run is a ``core.training.job.Job`` in its own thread. Readers get ``RunSnapshot``s, immutable copies:
live runs from memory, the rest rebuilt from the run store. ``train_to_completion`` is the synchronous
form the CLI uses.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.config import TrainConfig, env_limit
from core.errors import UserError
from core.store.runs import RunStore
from core.training import checkpoint
from core.training.job import Job
from core.training.verdicts import run_verdicts
from core.training.snapshot import (
    HISTORY_KEYS,
    LiveRun,
    ProgressCallback,
    RunSnapshot,
    nan_if_none,
    snapshot_from_record,
)


class TrainingManager:
    """Starts runs in background threads, at most ``max_concurrent`` at once; the rest wait queued."""

    def __init__(self, store: RunStore, max_concurrent: int = 1, *, max_queued: int | None = None,
                 max_queued_per_owner: int | None = None, disk_cap_bytes: int | None = None) -> None:
        self.store = store
        self.max_concurrent = max(int(max_concurrent), 1)
        # Classroom limits (None = the environment's CNNLAB_MAX_QUEUED / _PER_SESSION / CNNLAB_DISK_CAP_MB, else off).
        self.max_queued = env_limit(max_queued, "CNNLAB_MAX_QUEUED")
        self.max_queued_per_owner = env_limit(max_queued_per_owner, "CNNLAB_MAX_QUEUED_PER_SESSION")
        cap_mb = env_limit(None, "CNNLAB_DISK_CAP_MB")
        self.disk_cap_bytes = disk_cap_bytes if disk_cap_bytes is not None else (cap_mb * 1024**2 if cap_mb else None)
        self._lock = threading.RLock()
        self._runs: dict[str, LiveRun] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._owners: dict[str, str] = {}
        self.recovered: list[str] = store.mark_interrupted()

    def start(self, config: TrainConfig, name: str = "", owner: str | None = None) -> str:
        """Queue a run; it starts as soon as a slot is free. Returns its id.

        ``owner`` (e.g. a browser session id) counts towards ``max_queued_per_owner``; a full queue raises UserError.
        """
        with self._lock:
            self._check_queue_limits(owner)
            run_id = self.store.create_run(config, name or config.name)
            record = self.store.get(run_id)
            self._enqueue(LiveRun(run_id, record.name if record else name, config,
                                   record.created if record else time.time()), owner)
        return run_id

    def resume(self, run_id: str, owner: str | None = None) -> str:
        """Queue an interrupted or stopped run again under its id: it continues after its last checkpoint.

        Its epochs so far stay, later ones are appended, and it ends with the usual evaluation. A run
        that cannot resume (no checkpoint, folder deleted, damaged checkpoint, changed dataset, not
        interrupted or stopped) raises UserError with a sentence that says to use Run again instead.
        """
        with self._lock:
            self._refuse_if_live(run_id)
            self._check_queue_limits(owner)
        plan = checkpoint.plan_resume(self.store, run_id)  # reads the checkpoint and the dataset: not under the lock
        with self._lock:
            self._refuse_if_live(run_id)
            self._check_queue_limits(owner)
            self._enqueue(_resumed_live(self.store, plan), owner)
        return run_id

    def _enqueue(self, live: LiveRun, owner: str | None) -> None:
        """Put a run in the queue (under ``self._lock``) and start it if a slot is free."""
        self._runs[live.run_id] = live
        if owner:
            self._owners[live.run_id] = owner
        self._queue.append(live.run_id)
        self._schedule()

    def _refuse_if_live(self, run_id: str) -> None:
        live = self._runs.get(run_id)
        if live is not None and not live.done.is_set():
            doing = "waiting in the queue" if live.status == "queued" else "training"
            raise UserError(f"Run {run_id} is still {doing}, so there is nothing to resume yet.")

    def _check_queue_limits(self, owner: str | None) -> None:
        """Refuse a new run with a sentence when the queue (or this session's share of it) is full."""
        if self.max_queued is not None and len(self._queue) >= self.max_queued:
            raise UserError(f"The training queue is full ({len(self._queue)} runs waiting): wait for a run to "
                            "finish or stop one, then start again.")
        if owner and self.max_queued_per_owner is not None:
            mine = sum(1 for rid in self._queue if self._owners.get(rid) == owner)
            if mine >= self.max_queued_per_owner:
                raise UserError(f"You already have {mine} runs waiting in the queue (the limit is "
                                f"{self.max_queued_per_owner}): wait for one to start or stop one.")

    def _running(self) -> list[LiveRun]:
        return [r for r in self._runs.values() if r.thread is not None and not r.done.is_set()]

    def _schedule(self) -> None:
        """Start queued runs in order while slots are free (a deterministic run trains alone)."""
        with self._lock:
            while self._queue:
                running = self._running()
                head = self._runs[self._queue[0]]
                exclusive = head.config.deterministic or any(r.config.deterministic for r in running)
                if len(running) >= self.max_concurrent or (exclusive and running):
                    return
                self._queue.popleft()
                head.thread = threading.Thread(target=self._work, args=(head,), name=f"run-{head.run_id}",
                                               daemon=True)
                head.thread.start()

    def _work(self, live: LiveRun) -> None:
        try:
            Job(self.store, live).run()
        except BaseException:  # noqa: BLE001 - _Job.run records everything; never kill the scheduler
            live.update(status="failed", message=live.message or "The run's thread ended unexpectedly.")
            live.done.set()
        finally:
            if self.disk_cap_bytes is not None:
                with contextlib.suppress(Exception):  # a clean-up problem must not block the queue
                    self.store.enforce_disk_cap(self.disk_cap_bytes)
            self._schedule()

    def stop(self, run_id: str) -> None:
        """Stop a run: a queued one at once, a running one within one batch (the best model so far is kept)."""
        with self._lock:
            live = self._runs.get(run_id)
            if live is None or live.done.is_set():
                return
            if run_id in self._queue:
                self._queue.remove(run_id)
                message = "Stopped before it started."
                live.update(status="stopped", message=message, finished=time.time())
                self.store.set_status(run_id, "stopped", message)
                live.done.set()
                return
            live.stop_event.set()
            if live.status == "running":
                live.update(status="stopping")
                with contextlib.suppress(UserError):
                    self.store.set_status(run_id, "stopping")

    def get(self, run_id: str) -> _RunHandle | None:
        """A live view of the run with ``snapshot()`` and ``stop()``, or None for an unknown run."""
        if self.snapshot(run_id) is None:
            return None
        return _RunHandle(self, run_id)

    def snapshot(self, run_id: str) -> RunSnapshot | None:
        """Live runs from memory, others from the store."""
        with self._lock:
            live = self._runs.get(run_id)
        if live is not None:
            return self._with_resume_point(live.snapshot())
        record = self.store.get(run_id)
        return snapshot_from_record(self.store, record) if record is not None else None

    def list(self) -> list[RunSnapshot]:
        """Every run in the store (live ones from memory), newest first."""
        with self._lock:
            live = dict(self._runs)
        out = []
        for record in self.store.list():
            run = live.get(record.run_id)
            out.append(self._with_resume_point(run.snapshot()) if run is not None
                       else snapshot_from_record(self.store, record))
        return out

    def _with_resume_point(self, snap: RunSnapshot) -> RunSnapshot:
        """A live run that ended here (stopped, out of space) may resume: say from where."""
        if snap.active:
            return snap
        point = checkpoint.resume_point(self.store, snap.run_id, snap.status, snap.message)
        return dataclasses.replace(snap, resume_epoch=point) if point is not None else snap

    def delete(self, run_id: str, timeout: float = 60.0) -> None:
        """Stop the run if it is active, wait for its thread, then remove it and its files."""
        with self._lock:
            live = self._runs.get(run_id)
        if live is not None:
            self.stop(run_id)
            if live.thread is not None:
                live.thread.join(timeout)
            with self._lock:
                self._runs.pop(run_id, None)
        self.store.delete(run_id)

    def wait(self, run_id: str, timeout: float | None = None) -> RunSnapshot:
        """Block until the run ends (or ``timeout`` seconds pass); return its snapshot."""
        with self._lock:
            live = self._runs.get(run_id)
        if live is not None:
            live.done.wait(timeout)
            if live.thread is not None and live.done.is_set():
                live.thread.join(timeout)
        snap = self.snapshot(run_id)
        if snap is None:
            raise UserError(f"There is no run '{run_id}'.")
        return snap

    def active(self) -> list[RunSnapshot]:
        """Queued, running and stopping runs of this process, oldest first."""
        with self._lock:
            runs = [r for r in self._runs.values() if not r.done.is_set()]
        return sorted((r.snapshot() for r in runs), key=lambda s: s.created or 0)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every active run and wait for the threads (app exit, tests)."""
        with self._lock:
            runs = list(self._runs.values())
        for r in runs:
            self.stop(r.run_id)
        for r in runs:
            if r.thread is not None:
                r.thread.join(timeout)




@dataclass(frozen=True)
class _RunHandle:
    """What ``TrainingManager.get`` returns: a live view with ``snapshot()`` and ``stop()``."""

    manager: TrainingManager
    run_id: str

    def snapshot(self) -> RunSnapshot | None:
        return self.manager.snapshot(self.run_id)

    def stop(self) -> None:
        self.manager.stop(self.run_id)


# ---------------------------------------------------------------- synchronous (CLI)


def train_to_completion(config: TrainConfig, store: RunStore, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Create a run and train it in this thread; return the summary ``python -m core train --json`` prints."""
    store.mark_interrupted()
    run_id = store.create_run(config, config.name)
    record = store.get(run_id)
    live = LiveRun(run_id, config.name, config, record.created if record else time.time())
    Job(store, live, on_progress).run()
    return run_summary(live.snapshot())


def resume_to_completion(run_id: str, store: RunStore, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Resume an interrupted or stopped run in this thread (``python -m core resume``); returns its summary."""
    store.mark_interrupted()
    live = _resumed_live(store, checkpoint.plan_resume(store, run_id))
    Job(store, live, on_progress).run()
    return run_summary(live.snapshot())


def _resumed_live(store: RunStore, plan: checkpoint.ResumePlan) -> LiveRun:
    """Queue the run again in the store; its live state starts with the epochs the checkpoint keeps."""
    record, kept = plan.record, plan.state.epoch
    store.reopen(record.run_id, kept)
    for stale in ("predictions.npz", "result.json"):  # an evaluation of the unfinished run, if one was made
        with contextlib.suppress(OSError):
            (store.run_dir(record.run_id) / stale).unlink()
    store.add_event(record.run_id, "info", f"Resuming: training continues after epoch {kept}.")
    live = LiveRun(record.run_id, record.name, record.config, record.created)
    epochs = store.epochs(record.run_id)
    live.history = {k: [nan_if_none(e.get(k)) for e in epochs] for k in HISTORY_KEYS}
    live.batch_history = [{k: v for k, v in b.items() if k not in ("epoch", "batch")} for b in store.batches(record.run_id)]
    live.epoch = len(epochs)
    live.resume = plan
    return live


def run_summary(snap: RunSnapshot) -> dict[str, Any]:
    """``{run_id, status, message, classes, history, test, timing, params, best_epoch, split, verdicts}``.

    ``split`` is the dataset split the run used (``core.data.splits.split_facts``), ``verdicts`` what
    ``core.training.verdicts.run_verdicts`` says about the run (``{kind, epoch, sentence, advice}`` each).
    """
    result = snap.result or {}
    split = result.get("split") or snap.split
    test_keys = ("accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1", "loss",
                 "n_images", "evaluated_on", "per_class", "confusion_matrix")
    return {
        "run_id": snap.run_id,
        "status": snap.status,
        "message": snap.message,
        "classes": result.get("classes", []),
        "history": {k: [None if v != v else v for v in vals] for k, vals in snap.history.items()},
        "test": {k: result[k] for k in test_keys if k in result} or None,
        "timing": result.get("timing", {}),
        "params": result.get("params", {}),
        "best_epoch": result.get("best_epoch"),
        "split": split,
        "verdicts": [v.to_dict() for v in run_verdicts(snap.history, split, result)],
    }