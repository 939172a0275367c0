"""The strategy factory: default on one device, MirroredStrategy on several, memory growth first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from core.models import strategy as strategy_mod

ROOT = Path(__file__).resolve().parents[1]

_TWO_CPU_SCRIPT = r"""
import json, os
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras
from core.models.strategy import get_strategy, describe_strategy
strategy = get_strategy(device_type="CPU")
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
var = model.weights[0].value
print(json.dumps({
    "type": type(strategy).__name__,
    "replicas": strategy.num_replicas_in_sync,
    "describe": describe_strategy(strategy),
    "variable": type(var).__name__,
    "losses": [float(v) for v in history.history["loss"]],
    "default_gpu_strategy": type(get_strategy()).__name__,
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus_trains() -> None:
    """Two logical CPU devices give a 2-replica MirroredStrategy whose scope trains a model."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_CPU_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "MirroredStrategy"
    assert out["replicas"] == 2
    assert out["describe"] == "MirroredStrategy on 2 devices"
    assert "Mirrored" in out["variable"]
    assert all(v == v for v in out["losses"])  # no NaN
    assert out["losses"][-1] < out["losses"][0]
    # With no GPU the product strategy stays the default one even though two CPUs exist.
    assert out["default_gpu_strategy"] != "MirroredStrategy"


def test_single_device_gets_default_strategy() -> None:
    """One (or no) device means the default strategy, shared by every caller."""
    assert strategy_mod.strategy_for_devices(["/device:CPU:0"]) is tf.distribute.get_strategy()
    assert strategy_mod.strategy_for_devices([]) is tf.distribute.get_strategy()
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: the default-strategy case cannot be checked here")
    first = strategy_mod.get_strategy()
    assert not isinstance(first, tf.distribute.MirroredStrategy)
    assert strategy_mod.get_strategy() is first
    assert strategy_mod.describe_strategy(first) == "default (CPU)"


def test_memory_growth_set_for_every_gpu_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_devices turns on memory growth for each visible GPU, once per process."""
    fake_gpus = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(2)]
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(strategy_mod, "_prepared", False)
    monkeypatch.setattr(
        strategy_mod.tf.config, "list_physical_devices", lambda kind=None: fake_gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(
        strategy_mod.tf.config.experimental, "set_memory_growth", lambda dev, on: calls.append((dev.name, on))
    )
    names = strategy_mod.prepare_devices()
    strategy_mod.prepare_devices()
    assert names == [g.name for g in fake_gpus]
    assert calls == [(g.name, True) for g in fake_gpus]


def test_configure_threads_after_start_reports_false() -> None:
    """Thread pools cannot change once TensorFlow runs; the call says so instead of raising."""
    tf.constant(1.0) + 1.0  # make sure the runtime has started
    current = tf.config.threading.get_intra_op_parallelism_threads()
    assert strategy_mod.configure_threads(intra_op=current + 1) is False
