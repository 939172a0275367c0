"""The Keras side of a run: optimizer and compile, the one place weights are fitted, kept-weight copies.

No TensorFlow import at module level: the training manager imports the job, which imports this.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from core.config import TrainConfig
from core.errors import short_error
from core.training.checkpoint import frozen_indices
from core.training.memory import all_layers


class Diverged(Exception):
    """The loss became NaN or infinite."""


def optimizer(config: TrainConfig, learning_rate: float) -> Any:
    """The Keras optimizer named by the config."""
    import keras

    lr = float(learning_rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=float(config.momentum))
    cls = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam, "rmsprop": keras.optimizers.RMSprop}
    return cls[config.optimizer](learning_rate=lr)


def compile_model(model: Any, config: TrainConfig, learning_rate: float) -> None:
    """Compile for sparse labels with the config's optimizer at ``learning_rate``."""
    with model.distribute_strategy.scope():  # optimizer and metric variables live where the model does
        model.compile(optimizer=optimizer(config, learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])


def class_weights_from_counts(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (classes x count)`` per class ("balanced"), so rare classes weigh as much as common ones."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts > 0
    total, k = counts.sum(), int(present.sum())
    return {i: float(total / (k * counts[i])) if counts[i] else 1.0 for i in range(n_classes)}


def fit_model(model: Any, train_ds: Any, val_ds: Any | None, *, epochs: int, initial_epoch: int,
              callbacks: list[Any], class_weight: dict[int, float] | None, cached: Any = None) -> Any:
    """The one place where weights are fitted (a frozen backbone's head trains on cached features instead).

    There is no ``validation_data``: the run's ``ValidationScores`` callback predicts ``val_ds`` once per
    epoch (kept for the epoch rewind), so it is not scored twice.
    """
    if cached is not None:
        from core.training.cached_head import fit_on_cached_features, wants_cached_features

        if wants_cached_features(model, cached.config):
            return fit_on_cached_features(model, val_ds, epochs=epochs, initial_epoch=initial_epoch,
                                          callbacks=callbacks, class_weight=class_weight, context=cached)
    del val_ds
    return model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                     class_weight=class_weight, shuffle=False, verbose=0)  # the pipeline already shuffles


def copy_weights(model: Any) -> list[tuple[Any, np.ndarray]]:
    """A copy of every weight that training can change, paired with its variable (order-proof).

    Frozen layers run in inference mode and keep their weights (``checkpoint.frozen_indices``, the same
    rule the checkpoint uses), so they are not copied: for a frozen MobileNetV2 that is 99 % of the copy.
    Unfreezing must copy again.
    """
    variables = list(model.weights)
    fixed = set(frozen_indices(model, variables))
    return [(v, np.array(v.numpy())) for i, v in enumerate(variables) if i not in fixed]


def restore_weights(weights: list[tuple[Any, np.ndarray]]) -> None:
    """Put back weights saved by ``copy_weights`` (the variables themselves know where they belong)."""
    for variable, value in weights:
        variable.assign(value)


def indexed(model: Any, weights: list[tuple[Any, np.ndarray]]) -> dict[int, np.ndarray]:
    """``copy_weights`` pairs as ``{position in model.weights: value}`` (what a checkpoint stores)."""
    position = {id(v): i for i, v in enumerate(model.weights)}
    return {position[id(v)]: value for v, value in weights if id(v) in position}


def estimated_save_seconds(model: Any) -> float:
    """Before the first save: about 10 ms a layer (Keras walks every layer's state), measured on 2 cores."""
    return 0.01 * sum(1 for _ in all_layers(model))


def current_lr(model: Any) -> float | None:
    """The optimizer's learning rate now (None when the model has no optimizer)."""
    import keras

    with contextlib.suppress(Exception):
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return None


def as_float(v: Any) -> float | None:
    """A metric from Keras' logs as a float (None when absent or not a number)."""
    if v is None:
        return None
    try:
        return float(np.asarray(v))
    except (TypeError, ValueError):
        return None


def file_names(split: Any) -> list[str]:
    """One label per image for the predictions files: the file path, or ``#index`` for in-memory data."""
    if getattr(split, "files", None) is not None:
        return [str(f) for f in split.files]
    return [split.describe(i) for i in range(len(split))]


def unexpected_sentence(err: BaseException) -> str:
    """A sentence for an error we did not foresee (memory gets its own advice)."""
    name = type(err).__name__
    if name == "ResourceExhaustedError" or isinstance(err, MemoryError):
        return "Training ran out of memory: try a smaller batch size, a smaller image size or a smaller model."
    if not str(err).strip():
        return f"Training failed with an unexpected error ({name})."
    return f"Training failed with an unexpected error ({name}: {short_error(err, 300)})."
