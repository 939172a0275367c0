"""One run from start to end, in one thread: load data, build, fit (and fine-tune), keep the best model, evaluate.

``Job.run`` always writes a final status (``finally``). Everything the run produces goes to the run store
(SQLite + the run folder) as it happens, so a crash loses at most the epoch in progress. The job never
touches a UI; the manager (``core.training.manager``) queues jobs and readers see snapshots.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from typing import Any

import numpy as np

from core.data.splits import split_facts
from core.errors import UserError
from core.models.runtime import fit_session
from core.store.files import atomic_path, atomic_write_json
from core.store.runs import RunStore
from core.training import checkpoint, fitting
from core.training.memory import check_training_memory
from core.training.results import evaluation_split, record_result
from core.training.verdicts import kept_val_accuracy
from core.training.snapshot import HISTORY_KEYS, LiveRun, ProgressCallback, nan_if_none

BATCH_THROTTLE_SECONDS = 1.0
SAVE_TIME_SHARE = 0.1  # during training, rewriting model.keras may take at most this share of the time


class Job:
    """Everything one run does, from loading data to the final status; runs in one thread."""

    def __init__(self, store: RunStore, live: LiveRun, on_progress: ProgressCallback | None = None) -> None:
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
        self.validation: Any = None  # the fit phase's ValidationScores callback
        self.cached_context: Any = None  # core.training.cached_head.CachedFitContext for the feature-cache path
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
        # Checkpoints: the phase being fitted, what the last one wrote, what a resume restores.
        self.resume: checkpoint.ResumePlan | None = live.resume
        self.phase, self.fine_tune_start = "main", None
        self.split_hash = ""
        self.split_facts: dict[str, Any] = {}
        self.channels = 3
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
        loss = fitting.as_float(logs.get("loss"))
        if loss is not None and not math.isfinite(loss):
            self.nan_epoch = self.epoch_index + 1
            self.nan_kind = "NaN" if math.isnan(loss) else "infinite"
            return True
        ips = self.train_images / self.train_seconds if self.train_seconds > 0 else None
        self.live.update(batch=done, images_per_second=ips, eta_seconds=self._eta(done))
        if now - self.last_emit >= BATCH_THROTTLE_SECONDS:
            self.last_emit = now
            point = {"x": self.epoch_index + done / self.steps, "loss": loss,
                     "accuracy": fitting.as_float(logs.get("accuracy"))}
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
        if self.validation is not None:  # ValidationScores ran first and wrote val_loss / val_accuracy
            probs = self.validation.probs
            if probs is None:
                return
        seconds = time.perf_counter() - self.epoch_t0
        self.last_epoch_overhead = max(seconds / train_part, 1.0) if train_part > 0 else 1.0
        metrics = {
            "loss": fitting.as_float(logs.get("loss")),
            "accuracy": fitting.as_float(logs.get("accuracy")),
            "val_loss": fitting.as_float(logs.get("val_loss")),
            "val_accuracy": fitting.as_float(logs.get("val_accuracy")),
            "lr": fitting.current_lr(model),
            "seconds": seconds,
        }
        self.store.add_epoch(self.run_id, epoch + 1, metrics)
        if probs is not None and self.epoch_probs is not None:  # None: a resume could not recover them
            self.epoch_probs.append(probs.astype(np.float16))
            self._save_epoch_predictions()
        self._keep_if_better(epoch + 1, metrics, model)
        with self.live.lock:
            for k in HISTORY_KEYS:
                self.live.history[k].append(nan_if_none(metrics[k]))
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
            self.kept_weights = fitting.copy_weights(model)
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
        cost = self.save_seconds if self.save_seconds is not None else fitting.estimated_save_seconds(model)
        if not final and (now - self.last_save_end) * SAVE_TIME_SHARE < cost:
            return
        with atomic_path(self.folder / "model.keras") as tmp:
            model.save(tmp)
        self.last_save_end = time.perf_counter()
        self.save_seconds = self.last_save_end - now
        self.saved_epoch = self.kept_epoch
        if self.checkpoint_state is not None:  # saved after the last checkpoint: say so, or it looks stale
            self.checkpoint_state = checkpoint.note_model_epoch(self.folder, self.checkpoint_state, self.saved_epoch)

    def _keep_best_model(self, model: Any) -> None:
        """Put the kept weights back into ``model`` and make sure ``model.keras`` holds them."""
        if self.kept_weights is None:
            return
        fitting.restore_weights(self.kept_weights)
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
            with fit_session(self.config.seed, self.config.deterministic):
                try:
                    status, message = self._train_and_evaluate()
                finally:
                    self._release()
        except fitting.Diverged as err:
            status, message = "failed", str(err)
            self.log("error", message)
        except UserError as err:
            status, message = "failed", str(err)
            self.log("error", message)
        except KeyboardInterrupt:
            status, message = "stopped", "Stopped from the keyboard."
            raise
        except Exception as err:  # noqa: BLE001 - recorded on the run, never lost in a thread
            status, message = "failed", fitting.unexpected_sentence(err)
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
        from core.data.sources import load_dataset
        from core.models.registry import build_model, count_params
        from core.models.strategy import get_strategy
        from core.training.cached_head import CachedFitContext, wants_cached_features

        cfg = self.config
        ds = self.resume.dataset if self.resume is not None else load_dataset(cfg.data, cfg.split, home=self.store.home)
        self.split_hash, self.channels = ds.split_hash, ds.channels
        self.split_facts = split_facts(ds)
        self.live.update(split=self.split_facts)
        train, val, test = ds.splits["train"], ds.splits.get("val"), ds.splits.get("test")
        if len(train) == 0:
            raise UserError("The training split has no images: add images or lower the validation and test shares.")
        if len(ds.class_names) < 2:
            raise UserError("A classifier needs at least two classes; this dataset has "
                            f"{len(ds.class_names)}.")
        self.class_names = list(ds.class_names)
        atomic_write_json(self.folder / "labels.json", self.class_names)
        with contextlib.suppress(Exception):  # versions + machine for the reproducibility card (core.training.repro)
            from core.training.repro import record_environment

            record_environment(self.folder)
        self.log("info", f"Data {ds.name}: {len(train)} training, {len(val or [])} validation, "
                         f"{len(test or [])} test images in {len(ds.class_names)} classes.")

        shape = (cfg.image_size, cfg.image_size, ds.channels)
        with get_strategy().scope():
            model = build_model(cfg.model, shape, len(ds.class_names))
        fitting.compile_model(model, cfg, cfg.learning_rate)
        params = count_params(model)
        self.log("info", f"Model {cfg.model.name}: {params['total']:,} parameters ({params['trainable']:,} trainable).")
        check_training_memory(model, cfg.batch_size)  # refuse with a sentence rather than take the server down

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
            self.val_files = fitting.file_names(val)
        self.cached_context = CachedFitContext(config=cfg, home=self.store.home, train=train,
                                               val=val if has_val else None, channels=ds.channels,
                                               should_stop=lambda: self.stop_requested, log=self.log)
        self.n_train = len(train)
        self.steps = max(math.ceil(len(train) / cfg.batch_size), 1)
        self.live.update(batches_per_epoch=self.steps)
        self.monitor = cfg.early_stopping_monitor if has_val or not cfg.early_stopping_monitor.startswith("val_") \
            else cfg.early_stopping_monitor[4:]
        self.mode = "max" if "acc" in self.monitor else "min"
        self.keep = "best" if cfg.restore_best else "last"
        weights = fitting.class_weights_from_counts(train.labels, len(ds.class_names)) if cfg.class_weights else None

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
            raise fitting.Diverged(f"The loss became {self.nan_kind} at epoch {self.nan_epoch}: "
                            f"try a learning rate 10x lower ({lower:g}).")
        if self.kept_weights is None:
            return "stopped", "Stopped before the first epoch finished, so there is no model to keep."

        split, split_name = evaluation_split(ds)
        if split is not None:
            self._evaluate(model, split, split_name, ds, params)
        else:
            self.log("warning", "There are no validation or test images, so the model was not evaluated.")
        if self.stop_requested:
            return "stopped", f"Stopped after epoch {self.live.epoch}; the best model so far (epoch {self.best_epoch}) was kept."
        return "finished", None

    def _dataset(self, split: Any, channels: int, *, training: bool) -> Any:
        from core.data.pipeline import make_tf_dataset

        cfg = self.config
        return make_tf_dataset(split, image_size=cfg.image_size, channels=channels, batch_size=cfg.batch_size,
                               training=training, augment=cfg.augment if training and cfg.augment.enabled else None,
                               seed=cfg.seed, cache_dir=None)

    def _callbacks(self) -> list[Any]:
        """Validation first (the others read its scores), then live metrics, schedules, and the checkpoint last."""
        from core.training import callbacks as cb

        cfg = self.config
        self.validation = None
        if self.val_ds is not None:
            self.validation = cb.ValidationScores(self.val_ds, self.val_labels,
                                                  skip=lambda: self.stop_requested or self.nan_epoch is not None)
        stateful: list[Any] = []
        if cfg.early_stopping_patience > 0:
            stateful.append(cb.EarlyStop(self.monitor, self.mode, cfg.early_stopping_patience))
        if cfg.reduce_lr_patience > 0:
            stateful.append(cb.HalveOnPlateau(self.monitor, self.mode, cfg.reduce_lr_patience))
        if cfg.lr_decay_rate > 0:
            stateful.append(cb.EpochDecay(min(cfg.lr_decay_rate, 0.99)))
        last = cb.Checkpoint(lambda: self._apply_resumed_callbacks(stateful),
                             lambda epoch, model: self._write_checkpoint(epoch, model, stateful))
        return [*([self.validation] if self.validation else []), cb.LiveMetrics(self), *stateful, last]

    def _fit_phase(self, model: Any, train_ds: Any, val_ds: Any, weights: dict[int, float] | None, *, first: int,
                   last: int) -> None:
        fitting.fit_model(model, train_ds, val_ds, epochs=last, initial_epoch=first, callbacks=self._callbacks(),
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
        from core.models.transfer import unfreeze_top

        spec, cfg = self.config.model, self.config
        resuming = self.resume is not None and self.resume.state.phase == "fine_tune"
        if self.keep == "best" and not resuming:
            fitting.restore_weights(self.kept_weights)
        unfreeze_top(model, spec.fine_tune_layers)
        self.kept_weights = fitting.copy_weights(model)  # now with the backbone, which phase 1 left unchanged
        lr = cfg.learning_rate * spec.fine_tune_lr_factor
        fitting.compile_model(model, cfg, lr)
        self.log("info", f"Fine-tuning the top {spec.fine_tune_layers} backbone layers for {spec.fine_tune_epochs} "
                         f"epochs at learning rate {lr:g}.")
        start = self.resume.state.fine_tune_start if resuming else self.live.epoch
        if resuming:
            checkpoint.restore_training_state(model, self.resume.weights, self.resume.optimizer)
        self.phase, self.fine_tune_start = "fine_tune", start
        self._fit_phase(model, train_ds, val_ds, weights, first=self.live.epoch, last=start + spec.fine_tune_epochs)

    def _evaluate(self, model: Any, split: Any, split_name: str, ds: Any, params: dict[str, int]) -> None:
        """Score the kept model on the test split (validation if none) and write the result artifacts."""
        probs = None
        if self.cached_context is not None:  # a frozen backbone: the head on the split's cached features
            from core.training.cached_head import predict_from_cached_features

            probs = predict_from_cached_features(model, split, context=self.cached_context,
                                                 split_name="val" if split_name == "validation" else split_name)
        if probs is None:
            from core.training.callbacks import predict_probs

            probs = predict_probs(model, self._dataset(split, ds.channels, training=False))
        rate = self.train_images / self.train_seconds if self.train_seconds > 0 else None
        result = record_result(
            self.store, self.run_id, split, split_name, probs, self.class_names, best_epoch=self.best_epoch,
            epochs_completed=self.live.epoch, params=params, split_hash=ds.split_hash, split=self.split_facts,
            val_accuracy=kept_val_accuracy({"val_accuracy": list(self.live.history["val_accuracy"])}, self.kept_epoch),
            timing={"fit_seconds": round(self.fit_seconds, 3),
                    "train_images_per_second": round(rate, 1) if rate is not None else None})
        self.live.update(result=result)
        self.log("info", f"{split_name.capitalize()} accuracy {result['accuracy']:.3f}, macro F1 "
                         f"{result['macro_f1']:.3f} (model from epoch {self.best_epoch}).")

    # ------------------------------------------------------------ checkpoints (core.training.checkpoint)

    def _write_checkpoint(self, epoch: int, model: Any, others: list[Any]) -> None:
        """After a recorded epoch: weights + optimizer + the job's state, atomically (a full disk fails the run)."""
        if self.live.epoch != epoch + 1 or self.nan_epoch is not None:
            return  # the epoch was cut short and not recorded: the previous checkpoint stays the last one
        t = time.perf_counter()
        self.checkpoint_state = checkpoint.write_checkpoint(
            self.folder, model, epoch=epoch + 1, previous=self.checkpoint_state,
            kept_epoch=epoch + 1 if self.keep == "last" else self.best_epoch,
            kept_weights=fitting.indexed(model, self.kept_weights) if self.kept_weights else None,
            model_epoch=self.saved_epoch,
            best_epoch=self.best_epoch, best_value=self.best_value, phase=self.phase,
            fine_tune_start=self.fine_tune_start,
            phase_done=bool(getattr(model, "stop_training", False)) and not self.stop_requested,
            callbacks=checkpoint.callback_state(others), split_hash=self.split_hash, channels=self.channels,
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
        self.kept_weights = fitting.copy_weights(model)
        self.kept_epoch = self.saved_epoch = state.kept_epoch
        if plan.rewrite_model:  # model.keras is not the kept epoch's (saved after the checkpoint, or not yet)
            with atomic_path(self.folder / "model.keras") as tmp:
                model.save(tmp)
            self.checkpoint_state = checkpoint.note_model_epoch(self.folder, state, state.kept_epoch)
        if state.phase == "main":
            checkpoint.restore_training_state(model, plan.weights, plan.optimizer)
        self.log("info", f"Resumed from the checkpoint after epoch {state.epoch} (kept model: epoch "
                         f"{state.kept_epoch}).")
        return state


class _CachedImages:
    """Stands for a split's images on the cached-feature path, where only the split's features are read."""

    def __init__(self, split_name: str) -> None:
        self.split_name = split_name
