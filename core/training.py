"""Training runs: a manager with a queue, one worker thread per run, live metrics from a Keras callback.

The worker owns its run's live state behind a lock; readers get ``snapshot()``, an immutable copy.
Everything a run produces goes to the run store (SQLite + the run folder) as it happens, so a crash
loses at most the epoch in progress. The worker never touches a UI.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core import checkpoint
from core.config import TrainConfig
from core.errors import UserError
from core.store import ACTIVE_STATUSES, RunRecord, RunStore, atomic_path, atomic_write_json

STATUSES = ("queued", "running", "stopping", "finished", "stopped", "failed", "interrupted")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
BATCH_THROTTLE_SECONDS = 1.0
SAVE_TIME_SHARE = 0.1  # during training, rewriting model.keras may take at most this share of the time

ProgressCallback = Callable[["RunSnapshot"], None]


# ---------------------------------------------------------------- snapshots


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


class _LiveRun:
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
        self.resume: checkpoint.ResumePlan | None = None  # set when this run continues from its checkpoint

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
            )


def snapshot_from_record(store: RunStore, record: RunRecord) -> RunSnapshot:
    """A snapshot of a run that is not live in this process, rebuilt from the store."""
    epochs = store.epochs(record.run_id)
    history = {k: [_nan_if_none(e.get(k)) for e in epochs] for k in HISTORY_KEYS}
    batches = [{k: v for k, v in b.items() if k not in ("epoch", "batch")} for b in store.batches(record.run_id)]
    return RunSnapshot(
        run_id=record.run_id, name=record.name, status=record.status, message=record.message, config=record.config,
        epoch=len(epochs), epochs_total=epochs_total(record.config), history=history, batch_history=batches,
        result=record.result, created=record.created, started=record.started, finished=record.finished,
        group=record.group, resume_epoch=checkpoint.resume_point(store, record.run_id, record.status, record.message),
    )


def _nan_if_none(v: Any) -> float:
    return float("nan") if v is None else float(v)


# ---------------------------------------------------------------- process-wide TensorFlow state

_TF_STATE_LOCK = threading.Lock()  # guards Keras' global naming state and the counters below
_active_fits = 0


@contextlib.contextmanager
def _tensorflow_session(config: TrainConfig):
    """Seed, optional op determinism, and a Keras session cleared when the last run in the process ends.

    ``clear_session`` and ``enable_op_determinism`` act on the whole process, so they only happen
    when no other run trains here; the manager runs deterministic runs alone for the same reason.
    """
    global _active_fits
    import keras
    import tensorflow as tf

    with _TF_STATE_LOCK:
        _active_fits += 1
        keras.utils.set_random_seed(int(config.seed))
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        with _TF_STATE_LOCK:
            _active_fits -= 1
            if config.deterministic:
                _disable_op_determinism()
            if _active_fits == 0:
                keras.utils.clear_session(free_memory=False)
        gc.collect()  # outside the lock: it can take a second after a big model
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise; measured ~30 MB less RSS after 8 runs)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _disable_op_determinism() -> None:
    """Turn op determinism back off (private TF API: left on if it is missing)."""
    with contextlib.suppress(ImportError, AttributeError):
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


# ---------------------------------------------------------------- the Keras side


class _Diverged(Exception):
    """The loss became NaN or infinite."""


def _optimizer(config: TrainConfig, learning_rate: float):
    """The Keras optimizer named by the config."""
    import keras

    lr = float(learning_rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=float(config.momentum))
    cls = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam, "rmsprop": keras.optimizers.RMSprop}
    return cls[config.optimizer](learning_rate=lr)


def _compile(model: Any, config: TrainConfig, learning_rate: float) -> None:
    with model.distribute_strategy.scope():  # optimizer and metric variables live where the model does
        model.compile(optimizer=_optimizer(config, learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])


def class_weights_from_counts(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (classes x count)`` per class ("balanced"), so rare classes weigh as much as common ones."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts > 0
    total, k = counts.sum(), int(present.sum())
    return {i: float(total / (k * counts[i])) if counts[i] else 1.0 for i in range(n_classes)}


def _fit_model(model: Any, train_ds: Any, val_ds: Any | None, *, epochs: int, initial_epoch: int,
               callbacks: list[Any], class_weight: dict[int, float] | None, cached: Any = None) -> Any:
    """The one place where weights are fitted (cached transfer features may replace it)."""
    if cached is not None:
        from core.features import fit_on_cached_features, wants_cached_features

        if wants_cached_features(model, cached.config):  # frozen backbone: train the head on cached features
            return fit_on_cached_features(model, val_ds, epochs=epochs, initial_epoch=initial_epoch,
                                          callbacks=callbacks, class_weight=class_weight, context=cached)
    # No validation_data: the run's callback predicts the validation split once per epoch (kept for the
    # epoch rewind) and derives val_loss / val_accuracy from those predictions, so it is not scored twice.
    del val_ds
    return model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                     class_weight=class_weight, shuffle=False, verbose=0)  # the pipeline already shuffles


def _predict(model: Any, ds: Any, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Class probabilities for a (non-shuffled) dataset; ``should_stop`` ends it after the current batch."""
    callbacks = [_stop_predicting_callback(should_stop)] if should_stop is not None else None
    return np.asarray(model.predict(ds, verbose=0, callbacks=callbacks), dtype=np.float32)


def _stop_predicting_callback(should_stop: Callable[[], bool]) -> Any:
    import keras

    class StopPredicting(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if should_stop():
                self.model.stop_predicting = True

    return StopPredicting()


def validation_scores(probs: np.ndarray, labels: np.ndarray, model: Any = None) -> tuple[float, float]:
    """``(val_loss, val_accuracy)`` as Keras computes them: clipped cross-entropy plus the model's penalties."""
    p = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-7, 1.0)
    loss = float(-np.log(p).mean())
    if model is not None:
        loss += _regularisation(model)
    return loss, float((probs.argmax(axis=1) == labels).mean())


def _regularisation(model: Any) -> float:
    """The model's weight penalties (L2...), which Keras adds to every reported loss."""
    import keras

    with contextlib.suppress(Exception):
        return float(sum(float(keras.ops.convert_to_numpy(x)) for x in model.losses))
    return 0.0


def _make_callback_classes():
    """Define the Keras callbacks lazily so importing this module does not import TensorFlow."""
    import keras

    class LiveCallback(keras.callbacks.Callback):
        """Live metrics, stop within one batch, NaN guard; epoch bookkeeping is delegated to the job."""

        def __init__(self, job: _Job) -> None:
            super().__init__()
            self.job = job

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.job.epoch_began(epoch)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.job.batch_ended(batch, logs or {}):
                self.model.stop_training = True

        def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.job.stop_requested:
                self.model.stop_evaluating = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.job.epoch_ended(epoch, logs or {}, self.model)
            if self.job.stop_requested:
                self.model.stop_training = True

    class EpochDecay(keras.callbacks.Callback):
        """Multiply the learning rate by ``1 - rate`` at the start of every epoch after the first."""

        def __init__(self, rate: float) -> None:
            super().__init__()
            self.rate, self.first = rate, True

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self.first:
                self.first = False
                return
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = lr * (1.0 - self.rate)

    return LiveCallback, EpochDecay


# ---------------------------------------------------------------- one run


class _Job:
    """Everything one run does, from loading data to the final status; runs in one thread."""

    def __init__(self, store: RunStore, live: _LiveRun, on_progress: ProgressCallback | None = None) -> None:
        self.store, self.live, self.on_progress = store, live, on_progress
        self.config = live.config
        self.run_id = live.run_id
        self.folder = store.run_dir(self.run_id)
        self.class_names: list[str] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.kept_weights: list[tuple[Any, np.ndarray]] | None = None
        self.kept_epoch: int | None = None  # the epoch whose weights kept_weights holds
        self.saved_epoch: int | None = None  # the epoch whose weights model.keras holds
        self.save_seconds: float | None = None  # what the last model.keras write took
        self.last_save_end = time.perf_counter()
        self.nan_epoch: int | None = None
        self.nan_kind = "NaN"
        self.epoch_probs: list[np.ndarray] = []
        self.val_labels: np.ndarray | None = None
        self.val_files: list[str] = []
        self.val_ds: Any = None
        self.cached_context: Any = None  # core.features.CachedFitContext for the feature-cache path
        self.n_train = 0
        self.steps = 1
        self.epoch_index = 0
        self.batches_seen = 0
        self.epoch_t0 = 0.0
        self.last_batch_t = 0.0
        self.last_emit = 0.0
        self.train_seconds = 0.0
        self.train_images = 0
        self.fit_seconds = 0.0
        self.last_epoch_overhead = 1.0
        self.monitor, self.mode = "val_loss", "min"
        self.keep = "best"
        # Checkpoints (core.checkpoint): the phase being fitted, what the last one wrote, what a resume restores.
        self.resume: checkpoint.ResumePlan | None = live.resume
        self.phase, self.fine_tune_start = "main", None
        self.split_hash = ""
        self.checkpoint_state: checkpoint.CheckpointState | None = None
        self.resumed_callbacks: list | None = None
        self.checkpoint_seconds, self.checkpoints = 0.0, 0
        self.fit_t0, self.fit_seconds_before = time.perf_counter(), 0.0

    # ------------------------------------------------------------ state

    @property
    def stop_requested(self) -> bool:
        return self.live.stop_event.is_set()

    def log(self, kind: str, text: str) -> None:
        """Append to the run's event log; a failing store must not kill the run here."""
        with contextlib.suppress(Exception):
            self.store.add_event(self.run_id, kind, text)

    def _progress(self) -> None:
        if self.on_progress is not None:
            with contextlib.suppress(Exception):
                self.on_progress(self.live.snapshot())

    # ------------------------------------------------------------ callback hooks

    def epoch_began(self, epoch: int) -> None:
        self.epoch_index = epoch
        self.epoch_t0 = self.last_batch_t = time.perf_counter()
        self.batches_seen = 0
        self.live.update(batch=0)

    def batch_ended(self, batch: int, logs: dict[str, Any]) -> bool:
        """Record throughput and throttled metrics; True when training must stop now."""
        now = time.perf_counter()
        done = batch + 1  # with steps_per_execution > 1, Keras reports once for several batches
        bs = self.config.batch_size
        self.train_images += max(min(done * bs, self.n_train) - min(self.batches_seen * bs, self.n_train), 0)
        self.batches_seen = done
        self.train_seconds += now - self.last_batch_t
        self.last_batch_t = now
        loss = _as_float(logs.get("loss"))
        if loss is not None and not math.isfinite(loss):
            self.nan_epoch = self.epoch_index + 1
            self.nan_kind = "NaN" if math.isnan(loss) else "infinite"
            return True
        ips = self.train_images / self.train_seconds if self.train_seconds > 0 else None
        self.live.update(batch=done, images_per_second=ips, eta_seconds=self._eta(done))
        if now - self.last_emit >= BATCH_THROTTLE_SECONDS:
            self.last_emit = now
            point = {"x": self.epoch_index + done / self.steps, "loss": loss,
                     "accuracy": _as_float(logs.get("accuracy"))}
            with self.live.lock:
                self.live.batch_history.append(point)
            self.store.add_batch(self.run_id, self.epoch_index + 1, done, point)
        return self.stop_requested

    def _eta(self, batches_done: int) -> float | None:
        """Seconds left: batches left at this epoch's rate, stretched by the last epoch's validation share."""
        if self.train_images == 0 or self.train_seconds <= 0:
            return None
        per_batch = self.train_seconds / max(self.train_images / self.config.batch_size, 1e-9)
        left = (self.live.epochs_total - self.epoch_index - 1) * self.steps + (self.steps - batches_done)
        return max(left, 0) * per_batch * self.last_epoch_overhead

    def epoch_ended(self, epoch: int, logs: dict[str, Any], model: Any) -> None:
        """Keep the epoch's metrics, validation predictions and (if better) the model - unless it was cut short."""
        if self.stop_requested or self.nan_epoch is not None:
            return  # an unfinished epoch: its numbers would mislead, the kept model is from earlier epochs
        train_part = self.last_batch_t - self.epoch_t0
        probs = None
        if self.val_ds is not None:
            probs = _predict(model, self.val_ds, should_stop=lambda: self.stop_requested)
            if self.stop_requested or len(probs) != len(self.val_labels):
                return
            # Written into Keras' shared logs so EarlyStopping / ReduceLROnPlateau (after us) see them.
            logs["val_loss"], logs["val_accuracy"] = validation_scores(probs, self.val_labels, model)
        seconds = time.perf_counter() - self.epoch_t0
        self.last_epoch_overhead = max(seconds / train_part, 1.0) if train_part > 0 else 1.0
        metrics = {
            "loss": _as_float(logs.get("loss")),
            "accuracy": _as_float(logs.get("accuracy")),
            "val_loss": _as_float(logs.get("val_loss")),
            "val_accuracy": _as_float(logs.get("val_accuracy")),
            "lr": _current_lr(model),
            "seconds": seconds,
        }
        self.store.add_epoch(self.run_id, epoch + 1, metrics)
        if probs is not None and self.epoch_probs is not None:  # None: a resume could not recover them
            self.epoch_probs.append(probs.astype(np.float16))
            self._save_epoch_predictions()
        self._keep_if_better(epoch + 1, metrics, model)
        with self.live.lock:
            for k in HISTORY_KEYS:
                self.live.history[k].append(_nan_if_none(metrics[k]))
            self.live.epoch = epoch + 1
            self.live.eta_seconds = self._eta(self.steps)
        self._progress()

    def _keep_if_better(self, epoch: int, metrics: dict[str, Any], model: Any) -> None:
        """Save ``model.keras`` (atomically) when the monitored metric improves, or every epoch if keeping the last."""
        value = metrics.get(self.monitor)
        if value is None or not math.isfinite(value):
            value = metrics.get("loss")
        improved = (
            self.best_value is None
            or (self.mode == "min" and value < self.best_value)
            or (self.mode == "max" and value > self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch = value, epoch
        if improved or self.keep == "last":
            self.kept_weights = _copy_weights(model)
            self.kept_epoch = epoch
            self._save_kept_model(model)

    def _save_kept_model(self, model: Any, *, final: bool = False) -> None:
        """Write ``model.keras`` (atomically) for the kept weights, which ``model`` must hold right now.

        A 150-layer transfer model takes 0.5-2 s to save, longer than a cached-feature epoch, so during
        training the file is rewritten only while saving stays under ``SAVE_TIME_SHARE`` of the time
        trained since the last save; ``final=True`` (end of training) always writes the kept weights.
        """
        if self.kept_epoch is None or self.saved_epoch == self.kept_epoch:
            return
        now = time.perf_counter()
        cost = self.save_seconds if self.save_seconds is not None else _estimated_save_seconds(model)
        if not final and (now - self.last_save_end) * SAVE_TIME_SHARE < cost:
            return
        with atomic_path(self.folder / "model.keras") as tmp:
            model.save(tmp)
        self.last_save_end = time.perf_counter()
        self.save_seconds = self.last_save_end - now
        self.saved_epoch = self.kept_epoch

    def _keep_best_model(self, model: Any) -> None:
        """Put the kept weights back into ``model`` and make sure ``model.keras`` holds them."""
        if self.kept_weights is None:
            return
        _restore_weights(model, self.kept_weights)
        self._save_kept_model(model, final=True)

    def _save_epoch_predictions(self) -> None:
        with atomic_path(self.folder / "epoch_predictions.npz") as tmp:
            np.savez(tmp, probs=np.stack(self.epoch_probs), labels=self.val_labels,
                     files=np.array(self.val_files, dtype=str))

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        """Train, evaluate and record; ``finally`` always writes the final status."""
        status, message = "failed", "The run ended before it could report why."
        self.live.update(status="running", started=time.time())
        try:
            self.store.set_status(self.run_id, "running")
            with _tensorflow_session(self.config):
                try:
                    status, message = self._train_and_evaluate()
                finally:
                    self._release()
        except _Diverged as err:
            status, message = "failed", str(err)
            self.log("error", message)
        except UserError as err:
            status, message = "failed", str(err)
            self.log("error", message)
        except KeyboardInterrupt:
            status, message = "stopped", "Stopped from the keyboard."
            raise
        except Exception as err:  # noqa: BLE001 - recorded on the run, never lost in a thread
            status, message = "failed", _unexpected_sentence(err)
            self.log("error", message)
            self.log("traceback", traceback.format_exc())
        finally:
            self._finish(status, message)

    def _release(self) -> None:
        """Drop references to the model and data so the session clean-up can free them."""
        self.kept_weights = None
        self.val_ds = None
        self.cached_context = None
        self.epoch_probs = []
        self.resume = self.live.resume = None  # the checkpoint's arrays and the dataset

    def _finish(self, status: str, message: str | None) -> None:
        self.live.update(status=status, message=message, finished=time.time(), eta_seconds=None)
        try:
            self.store.set_status(self.run_id, status, message)
            if status == "finished":
                checkpoint.remove_checkpoint(self.folder)  # only an unfinished run resumes
        except Exception as err:  # noqa: BLE001 - the live record still shows the outcome
            self.live.update(message=f"{message or ''} (could not save the final status: {err})".strip())
        self.live.done.set()

    def _train_and_evaluate(self) -> tuple[str, str | None]:
        from core.datasets import load_dataset
        from core.models import build_model, count_params

        cfg = self.config
        ds = self.resume.dataset if self.resume is not None else load_dataset(cfg.data, cfg.split, home=self.store.home)
        self.split_hash = ds.split_hash
        train, val, test = ds.splits["train"], ds.splits.get("val"), ds.splits.get("test")
        if len(train) == 0:
            raise UserError("The training split has no images: add images or lower the validation and test shares.")
        if len(ds.class_names) < 2:
            raise UserError("A classifier needs at least two classes; this dataset has "
                            f"{len(ds.class_names)}.")
        self.class_names = list(ds.class_names)
        atomic_write_json(self.folder / "labels.json", self.class_names)
        with contextlib.suppress(Exception):  # versions + machine for the reproducibility card (core.repro)
            from core.repro import record_environment

            record_environment(self.folder)
        self.log("info", f"Data {ds.name}: {len(train)} training, {len(val or [])} validation, "
                         f"{len(test or [])} test images in {len(ds.class_names)} classes.")

        shape = (cfg.image_size, cfg.image_size, ds.channels)
        from core.features import CachedFitContext
        from core.strategy import get_strategy

        with _TF_STATE_LOCK, get_strategy().scope():  # Keras names layers from process-wide counters
            model = build_model(cfg.model, shape, len(ds.class_names))
        _compile(model, cfg, cfg.learning_rate)
        params = count_params(model)
        self.log("info", f"Model {cfg.model.name}: {params['total']:,} parameters ({params['trainable']:,} trainable).")
        check_training_memory(model, cfg.batch_size)  # refuse with a sentence rather than take the server down

        from core.features import wants_cached_features

        # A frozen backbone that is never fine-tuned never sees the images again (the head trains on
        # cached features), so the image pipelines are not built: on a warm cache that saves their decoding.
        head_only = wants_cached_features(model, cfg) and not self._fine_tune_configured()
        train_ds = None if head_only else self._dataset(train, ds.channels, training=True)
        has_val = val is not None and len(val) > 0
        val_fit = (_CachedImages("val") if head_only else self._dataset(val, ds.channels, training=False)) \
            if has_val else None
        if has_val:
            self.val_ds = val_fit
            self.val_labels = np.asarray(val.labels, dtype=np.int64)
            self.val_files = _file_names(val)
        self.cached_context = CachedFitContext(config=cfg, home=self.store.home, train=train,
                                               val=val if has_val else None, channels=ds.channels,
                                               should_stop=lambda: self.stop_requested, log=self.log,
                                               naming_lock=_TF_STATE_LOCK)
        self.n_train = len(train)
        self.steps = max(math.ceil(len(train) / cfg.batch_size), 1)
        self.live.update(batches_per_epoch=self.steps)
        self.monitor = cfg.early_stopping_monitor if has_val or not cfg.early_stopping_monitor.startswith("val_") \
            else cfg.early_stopping_monitor[4:]
        self.mode = "max" if "acc" in self.monitor else "min"
        self.keep = "best" if cfg.restore_best else "last"
        weights = class_weights_from_counts(train.labels, len(ds.class_names)) if cfg.class_weights else None

        t0 = self.fit_t0 = time.perf_counter()
        try:
            resumed = self._resume_from_checkpoint(model) if self.resume is not None else None
            if resumed is None or (resumed.phase == "main" and not resumed.phase_done and resumed.epoch < cfg.epochs):
                self._fit_phase(model, train_ds, val_fit, weights, first=resumed.epoch if resumed else 0,
                                last=cfg.epochs)
            elif resumed.phase == "main":
                self.resumed_callbacks = None  # the main phase is over: fine-tuning starts with fresh callbacks
            if self._fine_tune_wanted() and not (resumed and resumed.phase == "fine_tune" and resumed.phase_done):
                self._fine_tune(model, train_ds, val_fit, weights)
        except BaseException:
            with contextlib.suppress(Exception):  # keep what was learnt; the original error is what gets reported
                self._keep_best_model(model)
            raise
        self.fit_seconds = time.perf_counter() - t0 + self.fit_seconds_before
        self._keep_best_model(model)
        if self.checkpoints:
            self.log("info", f"Checkpoints: {self.checkpoints} written, "
                             f"{1000 * self.checkpoint_seconds / self.checkpoints:.0f} ms each on average.")
        if self.nan_epoch is not None:
            lower = cfg.learning_rate / 10
            raise _Diverged(f"The loss became {self.nan_kind} at epoch {self.nan_epoch}: "
                            f"try a learning rate 10x lower ({lower:g}).")
        if self.kept_weights is None:
            return "stopped", "Stopped before the first epoch finished, so there is no model to keep."

        if test is not None and len(test):
            self._evaluate(model, test, "test", ds, params)
        elif has_val:
            self._evaluate(model, val, "validation", ds, params)
        else:
            self.log("warning", "There are no validation or test images, so the model was not evaluated.")
        if self.stop_requested:
            return "stopped", f"Stopped after epoch {self.live.epoch}; the best model so far (epoch {self.best_epoch}) was kept."
        return "finished", None

    def _dataset(self, split: Any, channels: int, *, training: bool) -> Any:
        from core.pipeline import make_tf_dataset

        cfg = self.config
        return make_tf_dataset(split, image_size=cfg.image_size, channels=channels, batch_size=cfg.batch_size,
                               training=training, augment=cfg.augment if training and cfg.augment.enabled else None,
                               seed=cfg.seed, cache_dir=None)

    def _callbacks(self) -> list[Any]:
        import keras

        live_cb, decay_cb = _make_callback_classes()
        cfg = self.config
        cbs: list[Any] = [live_cb(self)]
        if cfg.early_stopping_patience > 0:
            cbs.append(keras.callbacks.EarlyStopping(monitor=self.monitor, patience=cfg.early_stopping_patience,
                                                     mode=self.mode, restore_best_weights=False))
        if cfg.reduce_lr_patience > 0:
            cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=self.monitor, mode=self.mode, factor=0.5,
                                                         patience=cfg.reduce_lr_patience, min_lr=1e-7))
        if cfg.lr_decay_rate > 0:
            cbs.append(decay_cb(min(cfg.lr_decay_rate, 0.99)))
        others = cbs[1:]  # last: the checkpoint sees the epoch after early stopping and the LR callbacks did
        cbs.append(checkpoint.checkpoint_callback(lambda: self._apply_resumed_callbacks(others),
                                                  lambda epoch, model: self._write_checkpoint(epoch, model, others)))
        return cbs

    def _fit_phase(self, model: Any, train_ds: Any, val_ds: Any, weights: dict[int, float] | None, *, first: int,
                   last: int) -> None:
        _fit_model(model, train_ds, val_ds, epochs=last, initial_epoch=first, callbacks=self._callbacks(),
                   cached=self.cached_context,
                   class_weight=weights)
        if model.stop_training and not self.stop_requested and self.nan_epoch is None and self.live.epoch < last:
            self.log("info", f"Early stopping after epoch {self.live.epoch}: {self.monitor} stopped improving "
                             f"(best at epoch {self.best_epoch}).")

    def _fine_tune_configured(self) -> bool:
        spec = self.config.model
        return spec.is_transfer and spec.fine_tune_layers > 0 and spec.fine_tune_epochs > 0

    def _fine_tune_wanted(self) -> bool:
        return (self._fine_tune_configured() and not self.stop_requested and self.nan_epoch is None and self.kept_weights is not None)

    def _fine_tune(self, model: Any, train_ds: Any, val_ds: Any, weights: dict[int, float] | None) -> None:
        """Second phase: unfreeze the top backbone layers and continue at a lower learning rate."""
        from core.models import unfreeze_top

        spec, cfg = self.config.model, self.config
        resuming = self.resume is not None and self.resume.state.phase == "fine_tune"
        if self.keep == "best" and not resuming:
            _restore_weights(model, self.kept_weights)
        unfreeze_top(model, spec.fine_tune_layers)
        self.kept_weights = _copy_weights(model)  # now with the backbone, which phase 1 left unchanged
        lr = cfg.learning_rate * spec.fine_tune_lr_factor
        _compile(model, cfg, lr)
        self.log("info", f"Fine-tuning the top {spec.fine_tune_layers} backbone layers for {spec.fine_tune_epochs} "
                         f"epochs at learning rate {lr:g}.")
        start = self.resume.state.fine_tune_start if resuming else self.live.epoch
        if resuming:
            checkpoint.restore_training_state(model, self.resume.weights, self.resume.optimizer)
        self.phase, self.fine_tune_start = "fine_tune", start
        self._fit_phase(model, train_ds, val_ds, weights, first=self.live.epoch, last=start + spec.fine_tune_epochs)

    def _evaluate(self, model: Any, split: Any, split_name: str, ds: Any, params: dict[str, int]) -> None:
        """Score the kept model on the test split (validation if none) and write the result artifacts."""
        from core.evaluation import classification_metrics

        labels = np.asarray(split.labels, dtype=np.int64)
        probs = None
        if self.cached_context is not None:  # a frozen backbone: the head on the split's cached features
            from core.features import predict_from_cached_features

            probs = predict_from_cached_features(model, split, context=self.cached_context,
                                                 split_name="val" if split_name == "validation" else split_name)
        if probs is None:
            probs = _predict(model, self._dataset(split, ds.channels, training=False))
        with atomic_path(self.folder / "predictions.npz") as tmp:
            np.savez(tmp, probs=probs.astype(np.float32), labels=labels, files=np.array(_file_names(split), dtype=str))
        metrics = classification_metrics(labels, probs, self.class_names)
        result = {
            **metrics,
            "evaluated_on": split_name,
            "best_epoch": self.best_epoch,
            "epochs_completed": self.live.epoch,
            "timing": {
                "fit_seconds": round(self.fit_seconds, 3),
                "train_images_per_second": round(self.train_images / self.train_seconds, 1)
                if self.train_seconds > 0 else None,
            },
            "params": params,
            "classes": self.class_names,
            "split_hash": ds.split_hash,
        }
        atomic_write_json(self.folder / "result.json", result)
        self.store.set_result(self.run_id, result)
        self.live.update(result=result)
        self.log("info", f"{split_name.capitalize()} accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}"
                         f" (model from epoch {self.best_epoch}).")

    # ------------------------------------------------------------ checkpoints (core.checkpoint)

    def _write_checkpoint(self, epoch: int, model: Any, others: list[Any]) -> None:
        """After a recorded epoch: weights + optimizer + the job's state, atomically (a full disk fails the run)."""
        if self.live.epoch != epoch + 1 or self.nan_epoch is not None:
            return  # the epoch was cut short and not recorded: the previous checkpoint stays the last one
        t = time.perf_counter()
        self.checkpoint_state = checkpoint.write_checkpoint(
            self.folder, model, epoch=epoch + 1, previous=self.checkpoint_state,
            kept_epoch=epoch + 1 if self.keep == "last" else self.best_epoch,
            kept_weights=_indexed(model, self.kept_weights) if self.kept_weights else None,
            model_epoch=self.saved_epoch,
            best_epoch=self.best_epoch, best_value=self.best_value, phase=self.phase,
            fine_tune_start=self.fine_tune_start,
            phase_done=bool(getattr(model, "stop_training", False)) and not self.stop_requested,
            callbacks=checkpoint.callback_state(others), split_hash=self.split_hash,
            train_seconds=self.train_seconds, train_images=self.train_images,
            fit_seconds=self.fit_seconds_before + (time.perf_counter() - self.fit_t0))
        self.checkpoint_seconds += time.perf_counter() - t
        self.checkpoints += 1

    def _apply_resumed_callbacks(self, others: list[Any]) -> None:
        """On the first fit after a resume: early-stopping / LR counters as they were after the checkpoint."""
        if self.resumed_callbacks:
            checkpoint.apply_callback_state(others, self.resumed_callbacks)
        self.resumed_callbacks = None

    def _resume_from_checkpoint(self, model: Any) -> checkpoint.CheckpointState:
        """Put the job and the model back where the checkpoint left them; returns the checkpoint's state."""
        plan = self.resume
        state = plan.state
        self.best_value, self.best_epoch = state.best_value, state.best_epoch
        self.train_seconds, self.train_images = state.train_seconds, state.train_images
        self.fit_seconds_before = state.fit_seconds
        self.checkpoint_state, self.resumed_callbacks = state, state.callbacks
        self.phase, self.fine_tune_start = state.phase, state.fine_tune_start
        if self.val_ds is not None and plan.epoch_probs is None:
            self.log("warning", "The validation predictions of the earlier epochs could not be read back, so this "
                                "run has no epoch rewind.")
            self.epoch_probs = None
            with contextlib.suppress(OSError):
                (self.folder / "epoch_predictions.npz").unlink()
        elif self.val_ds is not None:
            self.epoch_probs = list(plan.epoch_probs)
        checkpoint.assign(model.weights, plan.kept, "weight")
        self.kept_weights = _copy_weights(model)
        self.kept_epoch = self.saved_epoch = state.kept_epoch
        if plan.rewrite_model:  # model.keras is not the kept epoch's (saved after the checkpoint, or not yet)
            with atomic_path(self.folder / "model.keras") as tmp:
                model.save(tmp)
        if state.phase == "main":
            checkpoint.restore_training_state(model, plan.weights, plan.optimizer)
        self.log("info", f"Resumed from the checkpoint after epoch {state.epoch} (kept model: epoch "
                         f"{state.kept_epoch}).")
        return state


def _estimated_save_seconds(model: Any) -> float:
    """Before the first save: about 10 ms a layer (Keras walks every layer's state), measured on 2 cores."""
    return 0.01 * sum(1 for _ in _all_layers(model))


def _copy_weights(model: Any) -> list[tuple[Any, np.ndarray]]:
    """A copy of every weight that training can change, paired with its variable (order-proof).

    Frozen layers run in inference mode and keep their weights (``checkpoint.frozen_indices``, the same
    rule the checkpoint uses), so they are not copied: for a frozen MobileNetV2 that is 99 % of the copy.
    Unfreezing must copy again.
    """
    variables = list(model.weights)
    fixed = set(checkpoint.frozen_indices(model, variables))
    return [(v, np.array(v.numpy())) for i, v in enumerate(variables) if i not in fixed]


def _indexed(model: Any, weights: list[tuple[Any, np.ndarray]]) -> dict[int, np.ndarray]:
    """``_copy_weights`` pairs as ``{position in model.weights: value}`` (what a checkpoint stores)."""
    position = {id(v): i for i, v in enumerate(model.weights)}
    return {position[id(v)]: value for v, value in weights if id(v) in position}


class _CachedImages:
    """Stands for a split's images on the cached-feature path, where only the split's features are read."""

    def __init__(self, split_name: str) -> None:
        self.split_name = split_name


def _restore_weights(model: Any, weights: list[tuple[Any, np.ndarray]]) -> None:
    """Put back weights saved by ``_copy_weights``."""
    del model  # the variables themselves know where they belong
    for variable, value in weights:
        variable.assign(value)


def _as_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(np.asarray(v))
    except (TypeError, ValueError):
        return None


def _current_lr(model: Any) -> float | None:
    import keras

    with contextlib.suppress(Exception):
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return None


def _file_names(split: Any) -> list[str]:
    """One label per image for the predictions files: the file path, or ``#index`` for in-memory data."""
    if getattr(split, "files", None) is not None:
        return [str(f) for f in split.files]
    return [split.describe(i) for i in range(len(split))]


def _unexpected_sentence(err: BaseException) -> str:
    """A sentence for an error we did not foresee (memory gets its own advice)."""
    name = type(err).__name__
    if name == "ResourceExhaustedError" or isinstance(err, MemoryError):
        return "Training ran out of memory: try a smaller batch size, a smaller image size or a smaller model."
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"Training failed with an unexpected error ({name}: {text[:300]})." if text else \
        f"Training failed with an unexpected error ({name})."


# ---------------------------------------------------------------- the manager


class TrainingManager:
    """Starts runs in background threads, at most ``max_concurrent`` at once; the rest wait queued."""

    def __init__(self, store: RunStore, max_concurrent: int = 1, *, max_queued: int | None = None,
                 max_queued_per_owner: int | None = None, disk_cap_bytes: int | None = None) -> None:
        self.store = store
        self.max_concurrent = max(int(max_concurrent), 1)
        # Classroom limits (None = the environment's CNNLAB_MAX_QUEUED / _PER_SESSION / CNNLAB_DISK_CAP_MB, else off).
        self.max_queued = _limit(max_queued, "CNNLAB_MAX_QUEUED")
        self.max_queued_per_owner = _limit(max_queued_per_owner, "CNNLAB_MAX_QUEUED_PER_SESSION")
        cap_mb = _limit(None, "CNNLAB_DISK_CAP_MB")
        self.disk_cap_bytes = disk_cap_bytes if disk_cap_bytes is not None else (cap_mb * 1024**2 if cap_mb else None)
        self._lock = threading.RLock()
        self._runs: dict[str, _LiveRun] = {}
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
            self._enqueue(_LiveRun(run_id, record.name if record else name, config,
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

    def _enqueue(self, live: _LiveRun, owner: str | None) -> None:
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

    def _running(self) -> list[_LiveRun]:
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

    def _work(self, live: _LiveRun) -> None:
        try:
            _Job(self.store, live).run()
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
        """A handle with ``snapshot()`` (the issue's ``get(run_id).snapshot()``), or None for an unknown run."""
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


MEMORY_SHARE = 0.8  # of the memory the OS reports available, that one training run may plan to use


def estimate_training_memory(model: Any, batch_size: int) -> int:
    """Rough bytes a training step needs: weights x4 (weights, gradients, two optimizer slots) + activations x2."""
    return 4 * (4 * int(model.count_params()) + 2 * int(batch_size) * _activation_values(model))


def _activation_values(model: Any) -> int:
    """Values per image kept for backpropagation; a frozen nested model (backbone) keeps none, only its peak."""
    total = 0
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None) and not layer.trainable:
            total += max((_output_values(inner) for inner in _all_layers(layer)), default=0)
        elif getattr(layer, "layers", None):
            total += _activation_values(layer)
        else:
            total += _output_values(layer)
    return total


def _output_values(layer: Any) -> int:
    with contextlib.suppress(Exception):  # layers without a single symbolic output
        return int(np.prod([d or 1 for d in layer.output.shape[1:]]))
    return 0


def available_memory() -> int | None:
    """Bytes the OS can give without swapping (``MemAvailable``), or None where unknown; CNNLAB_MEMORY_MB overrides."""
    override = _limit(None, "CNNLAB_MEMORY_MB")
    if override:
        return override * 1024**2
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_training_memory(model: Any, batch_size: int, available: int | None = None) -> int:
    """The estimate in bytes; UserError with a smaller batch size to try when it would not fit in memory."""
    need = estimate_training_memory(model, batch_size)
    free = available if available is not None else available_memory()
    if free is not None and need > MEMORY_SHARE * free:
        per_image = max(need - estimate_training_memory(model, 0), 1) / max(batch_size, 1)
        fits = int((MEMORY_SHARE * free - estimate_training_memory(model, 0)) // per_image)
        advice = (f"try a batch size of {max(2 ** int(math.log2(fits)), 1)}, a smaller image size or a smaller model"
                  if fits >= 1 else "choose a smaller image size or a smaller model")
        raise UserError(f"This run would need about {need / 1024**3:.1f} GB of memory but only "
                        f"{free / 1024**3:.1f} GB is free: {advice}.")
    return need


def _all_layers(model: Any) -> Any:
    """Every layer, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _limit(value: int | None, env: str) -> int | None:
    """An explicit limit, else a positive integer from the environment variable ``env``, else None (off)."""
    if value is not None:
        return max(int(value), 0)
    text = os.environ.get(env, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


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
    live = _LiveRun(run_id, config.name, config, record.created if record else time.time())
    _Job(store, live, on_progress).run()
    return run_summary(live.snapshot())


def resume_to_completion(run_id: str, store: RunStore, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Resume an interrupted or stopped run in this thread (``python -m core resume``); returns its summary."""
    store.mark_interrupted()
    live = _resumed_live(store, checkpoint.plan_resume(store, run_id))
    _Job(store, live, on_progress).run()
    return run_summary(live.snapshot())


def _resumed_live(store: RunStore, plan: checkpoint.ResumePlan) -> _LiveRun:
    """Queue the run again in the store; its live state starts with the epochs the checkpoint keeps."""
    record, kept = plan.record, plan.state.epoch
    store.reopen(record.run_id, kept)
    store.add_event(record.run_id, "info", f"Resuming: training continues after epoch {kept}.")
    live = _LiveRun(record.run_id, record.name, record.config, record.created)
    epochs = store.epochs(record.run_id)
    live.history = {k: [_nan_if_none(e.get(k)) for e in epochs] for k in HISTORY_KEYS}
    live.batch_history = [{k: v for k, v in b.items() if k not in ("epoch", "batch")} for b in store.batches(record.run_id)]
    live.epoch = len(epochs)
    live.resume = plan
    return live


def run_summary(snap: RunSnapshot) -> dict[str, Any]:
    """``{run_id, status, message, classes, history, test, timing, params}`` for a finished snapshot."""
    result = snap.result or {}
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
    }
