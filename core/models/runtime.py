"""Process-wide TensorFlow state: one lock for building, loading and clearing models; one cache of compiled functions.

Keras names layers from process-wide counters and ``clear_session`` resets them, so two threads that
build models at once (a training run, the Train page's model summary, a Grad-CAM engine) can make
clashing names. Every model build, model load and session clear in CNN Lab therefore happens inside
``keras_lock()`` (the augmentation pipeline's preprocessing layers are not a model anyone saves or
names, so they are built without it). Loading a run's model can wait behind a training run's build,
which includes fetching ImageNet weights the first time: that wait is the price of names that never clash.

What is compiled for a model (its traced predict function, its Grad-CAM engine, its feature-extraction
step) is kept on the model object itself, in one dict that only ``compiled`` writes: it lives exactly as
long as the model, and every page, tab and thread that shares a model shares what was compiled for it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.errors import UserError

T = TypeVar("T")
_LOCK = threading.RLock()
_CACHE_ATTR = "_cnnlab_compiled"
_active_fits = 0  # runs training in this process (guarded by _LOCK)


@contextlib.contextmanager
def keras_lock() -> Iterator[None]:
    """Hold the lock that guards Keras' global state (layer naming, sessions) while building or loading."""
    with _LOCK:
        yield


def compiled(model: Any, name: str, factory: Callable[[], T]) -> T:
    """What ``factory`` makes for ``model`` (e.g. its traced predict function), made once per model and name."""
    made = model.__dict__.get(_CACHE_ATTR, {}).get(name)
    if made is not None:  # every predict asks: do not wait behind a build that holds the lock
        return made
    with _LOCK:
        cache = model.__dict__.get(_CACHE_ATTR)
        if cache is None:
            cache = {}
            # object.__setattr__: Keras' own __setattr__ would track the dict as model state.
            object.__setattr__(model, _CACHE_ATTR, cache)
        if name not in cache:
            cache[name] = factory()
        return cache[name]


def predict_function(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The model's graph-mode ``images -> probabilities`` callable (traced once per model, shared by all callers).

    ``model.predict`` builds a data pipeline on every call and an eager ``model(x)`` runs layer by layer
    in Python; a traced function does neither, which is what single-image latency needs.
    """
    return compiled(model, "predict", lambda: _traced_predict(model))


def _traced_predict(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    shape = (None, *tuple(model.input_shape[1:]))

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def run(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def call(images: np.ndarray) -> np.ndarray:
        return run(tf.convert_to_tensor(np.asarray(images, dtype=np.float32))).numpy()

    return call


def load_model_file(path: Path | str) -> Any:
    """Load a ``.keras`` file with ``safe_mode=True`` (no Lambda code); problems become one sentence."""
    import keras

    path = Path(path)
    if path.suffix.lower() != ".keras":
        raise UserError(f"{path.name}: CNN Lab only loads .keras model files (older .h5 files can run "
                        "arbitrary code when loaded, so they are refused).")
    if not path.is_file():
        raise UserError(f"The model file {path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise UserError(f"The model file {path.name} is damaged or not a Keras model.")
    try:
        with keras_lock():
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - any failure to load a user's file is the file's fault
        text = str(err)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise UserError(f"The model file {path.name} contains custom code (a Lambda layer); "
                            "CNN Lab refuses to run it for safety.") from err
        first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
        raise UserError(f"The model file {path.name} could not be loaded ({first}).") from err


@contextlib.contextmanager
def fit_session(seed: int, deterministic: bool = False) -> Iterator[None]:
    """Seed, optional op determinism, and a Keras session cleared when the last run in the process ends.

    ``clear_session`` and ``enable_op_determinism`` act on the whole process, so they only happen
    when no other run trains here; the training manager runs deterministic runs alone for the same reason.
    """
    global _active_fits
    import keras
    import tensorflow as tf

    with _LOCK:
        _active_fits += 1
        keras.utils.set_random_seed(int(seed))
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        with _LOCK:
            _active_fits -= 1
            if deterministic:
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
