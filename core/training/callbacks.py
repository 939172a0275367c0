"""The Keras callbacks of a run: validation, live metrics, early stopping, learning-rate schedules, checkpoints.

Every callback whose counters matter after a crash (early stopping's patience, the plateau's wait, the
decay's first epoch) keeps them as plain attributes it owns and hands them out through ``state()`` /
``restore(state)``, so a checkpoint stores public state instead of reading Keras' internals.
Callbacks run in list order at each epoch end; the job puts validation first (the others read its
``val_loss``) and the checkpoint last (it sees what early stopping and the schedules decided).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from core.explain.metrics import validation_scores


class StopPredicting(keras.callbacks.Callback):
    """Ends a ``predict`` after the current batch once ``should_stop()`` turns true."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.should_stop():
            self.model.stop_predicting = True


def predict_probs(model: Any, data: Any, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Class probabilities for a (non-shuffled) dataset; ``should_stop`` ends it after the current batch."""
    callbacks = [StopPredicting(should_stop)] if should_stop is not None else None
    return np.asarray(model.predict(data, verbose=0, callbacks=callbacks), dtype=np.float32)


class ValidationScores(keras.callbacks.Callback):
    """Predicts the validation split once per epoch and writes ``val_loss`` / ``val_accuracy`` into the logs.

    ``probs`` keeps that epoch's predictions (the epoch rewind stores them); it is None when the epoch was
    cut short (``skip()`` true: a stop or a diverged loss), and then no validation numbers are written.
    The model it is handed may be the feature-cache view, whose ``predict`` answers from cached features.
    """

    def __init__(self, data: Any, labels: np.ndarray, skip: Callable[[], bool]) -> None:
        super().__init__()
        self.data, self.labels, self.skip = data, np.asarray(labels, dtype=np.int64), skip
        self.probs: np.ndarray | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.probs = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.skip():
            return
        probs = predict_probs(self.model, self.data, should_stop=self.skip)
        if self.skip() or len(probs) != len(self.labels):
            return
        self.probs = probs
        if logs is not None:  # Keras' shared logs: the callbacks after this one read them
            logs["val_loss"], logs["val_accuracy"] = validation_scores(probs, self.labels, self.model)


class LiveMetrics(keras.callbacks.Callback):
    """Live metrics, stop within one batch, NaN guard; the epoch bookkeeping is the job's (``core.training.job``)."""

    def __init__(self, job: Any) -> None:
        super().__init__()
        self.job = job

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.job.epoch_began(epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.job.batch_ended(batch, logs or {}):
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.job.epoch_ended(epoch, logs or {}, self.model)
        if self.job.stop_requested:
            self.model.stop_training = True


class _Watching(keras.callbacks.Callback):
    """Watches one metric of the epoch logs for improvement (lower is better for losses, higher otherwise)."""

    checkpoint_name = ""  # what a checkpoint calls this callback's state
    _STATE: tuple[str, ...] = ()

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0) -> None:
        super().__init__()
        self.monitor, self.mode, self.patience = monitor, mode, int(patience)
        self.min_delta = abs(float(min_delta))  # a change smaller than this is no improvement
        self.on_train_begin()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait, self.best = 0, None

    def improved(self, current: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def state(self) -> dict[str, Any]:
        """The counters a resumed run needs, as plain numbers."""
        return {name: _plain(getattr(self, name)) for name in self._STATE}

    def restore(self, state: dict[str, Any]) -> None:
        """Put counters saved by ``state()`` back (after ``on_train_begin`` reset them)."""
        for name in self._STATE:
            if name in state:
                setattr(self, name, state[name])


class EarlyStop(_Watching):
    """Stop when the monitored metric has not improved for ``patience`` epochs (the best epoch is the job's to keep)."""

    checkpoint_name = "EarlyStopping"
    _STATE = ("wait", "best", "best_epoch", "stopped_epoch")

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin()
        self.best_epoch, self.stopped_epoch = 0, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        self.wait += 1
        if self.improved(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class HalveOnPlateau(_Watching):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement (not below ``min_lr``).

    An improvement must beat the best by more than ``min_delta`` (1e-4, Keras' ``ReduceLROnPlateau`` default).
    """

    checkpoint_name = "ReduceLROnPlateau"
    _STATE = ("wait", "best")

    def __init__(self, monitor: str, mode: str, patience: int, factor: float = 0.5, min_lr: float = 1e-7,
                 min_delta: float = 1e-4) -> None:
        super().__init__(monitor, mode, patience, min_delta)
        self.factor, self.min_lr = float(factor), float(min_lr)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        if self.improved(current):
            self.best, self.wait = current, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer = self.model.optimizer
            old = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            if old > np.float32(self.min_lr):
                optimizer.learning_rate = max(old * self.factor, self.min_lr)
                self.wait = 0


class EpochDecay(keras.callbacks.Callback):
    """Multiply the learning rate by ``1 - rate`` at the start of every epoch after the first."""

    checkpoint_name = "EpochDecay"

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate, self.first = rate, True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first:
            self.first = False
            return
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.model.optimizer.learning_rate = lr * (1.0 - self.rate)

    def state(self) -> dict[str, Any]:
        return {"first": bool(self.first)}

    def restore(self, state: dict[str, Any]) -> None:
        self.first = bool(state.get("first", self.first))


class Checkpoint(keras.callbacks.Callback):
    """Put last in the list: after every epoch it hands the job the model to checkpoint."""

    def __init__(self, on_train_begin: Callable[[], None], on_epoch_end: Callable[[int, Any], None]) -> None:
        super().__init__()
        self._begin, self._end = on_train_begin, on_epoch_end

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._begin()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._end(epoch, self.model)


def redirected(callbacks: list[Any], view: Any) -> list[Any]:
    """Wrap callbacks so that Keras hands them ``view`` instead of the model it is fitting (the cached-feature head)."""

    class Redirect(keras.callbacks.Callback):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def set_model(self, model: Any) -> None:
            super().set_model(model)
            self.inner.set_model(view)

        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self.inner.set_params(params)

    hooks = [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]
    for hook in hooks:
        setattr(Redirect, hook, (lambda h: lambda self, *a, **k: getattr(self.inner, h)(*a, **k))(hook))
    return [Redirect(cb) for cb in callbacks]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (Keras logs often hold numpy floats)."""
    return value.item() if isinstance(value, np.generic) else value
