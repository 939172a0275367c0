"""The one place that decides where training runs: several GPUs, one GPU or the CPU.

Training code asks ``get_strategy()`` and builds/compiles/fits its model inside ``strategy.scope()``.
GPU memory growth must be switched on before TensorFlow touches a GPU, so ``prepare_devices()``
runs first in every entry point (it is idempotent and cheap).
"""

from __future__ import annotations

import os
import threading

import tensorflow as tf

_lock = threading.Lock()
_prepared = False
_strategy: tf.distribute.Strategy | None = None


def prepare_devices() -> list[str]:
    """Switch on memory growth for every visible GPU (before first use) and return their names."""
    global _prepared
    gpus = tf.config.list_physical_devices("GPU")
    with _lock:
        if not _prepared:
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except (RuntimeError, ValueError):
                    # The runtime is already initialised (growth is then whatever was set first).
                    pass
            _prepared = True
    return [gpu.name for gpu in gpus]


def strategy_for_devices(devices: list[str]) -> tf.distribute.Strategy:
    """MirroredStrategy over ``devices`` when there are several, else the default strategy."""
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()


def get_strategy(device_type: str = "GPU") -> tf.distribute.Strategy:
    """The process-wide training strategy: mirrored across all visible ``device_type`` devices if > 1.

    ``device_type="CPU"`` is for tests that split the CPU into logical devices; the product always
    uses the default (GPU), which falls back to the default strategy on a CPU-only machine.
    """
    global _strategy
    prepare_devices()
    if device_type != "GPU":
        names = [d.name for d in tf.config.list_logical_devices(device_type)]
        return strategy_for_devices(names)
    with _lock:
        if _strategy is None:
            names = [d.name for d in tf.config.list_logical_devices("GPU")]
            _strategy = strategy_for_devices(names)
        return _strategy


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    """A short human description, e.g. 'MirroredStrategy on 2 devices' or 'default (CPU)'."""
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"MirroredStrategy on {strategy.num_replicas_in_sync} devices"
    return "default (GPU)" if tf.config.list_logical_devices("GPU") else "default (CPU)"


def configure_threads(intra_op: int | None = None, inter_op: int | None = None) -> bool:
    """Set TensorFlow's thread pools before the runtime starts; False if it has already started.

    ``CNNLAB_INTRA_OP_THREADS`` / ``CNNLAB_INTER_OP_THREADS`` override the arguments. On small
    CPUs the defaults (all cores) are usually right; the benchmarks measure whether changing helps.
    """
    intra = int(os.environ.get("CNNLAB_INTRA_OP_THREADS", intra_op or 0))
    inter = int(os.environ.get("CNNLAB_INTER_OP_THREADS", inter_op or 0))
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        return False
    return True
