"""The reproducibility card: what it takes to repeat a run, and the config that repeats it.

The training job writes ``environment.json`` (library versions, machine) into the run folder when it
starts, so the card shows what the run really used, not what this machine has today. With
deterministic ops on, a rerun of the same config on the same machine gives the same history;
``history_difference`` measures how close two runs came. No streamlit; TensorFlow only to describe it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.config import TrainConfig
from core.errors import UserError
from core.store.files import atomic_write_json

ENV_FILE = "environment.json"
AGAIN = " (again)"
HISTORY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


# ---------------------------------------------------------------- the environment


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def library_versions() -> dict[str, str]:
    """Python, TensorFlow, Keras and NumPy versions (TensorFlow is imported to ask it)."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


def machine() -> dict[str, Any]:
    """The CPU, its cores, memory, the operating system and any GPUs TensorFlow sees."""
    gpus: list[str] = []
    try:
        import tensorflow as tf

        for dev in tf.config.list_physical_devices("GPU"):
            details = {}
            try:
                details = tf.config.experimental.get_device_details(dev)
            except Exception:  # noqa: BLE001 - details are optional
                pass
            gpus.append(str(details.get("device_name") or dev.name))
    except Exception:  # noqa: BLE001 - a machine description must never fail a run
        pass
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
            "os": platform.platform(terse=True), "gpus": gpus}


def environment() -> dict[str, Any]:
    """Everything about the software and hardware a run trains on."""
    return {"versions": library_versions(), "machine": machine(), "executable": sys.executable}


def record_environment(folder: Path | str) -> None:
    """Write ``environment.json`` into a run folder (atomically); the training job calls this at start."""
    atomic_write_json(Path(folder) / ENV_FILE, environment())


def recorded_environment(folder: Path | str) -> dict[str, Any] | None:
    """The environment a run recorded, or None for runs from before it was recorded (or a damaged file)."""
    try:
        data = json.loads((Path(folder) / ENV_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- the card


@dataclass(frozen=True)
class ReproCard:
    """What a person needs to repeat a run exactly."""

    run_id: str
    name: str
    status: str
    seed: int
    deterministic: bool
    split_hash: str | None            # fingerprint of the exact train/val/test split (None: never evaluated)
    versions: dict[str, str]
    machine: dict[str, Any]
    recorded: bool                    # versions/machine written by the run itself (False: this machine, now)
    config: dict[str, Any]
    reruns: list[dict[str, Any]] = field(default_factory=list)   # {run_id, name, status, difference, deterministic}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """A plain-text card for the command line or a lab notebook."""
        lines = [f"Run {self.run_id} ({self.name}) - {self.status}",
                 f"seed {self.seed}, deterministic ops {'on' if self.deterministic else 'off'}",
                 f"split hash {self.split_hash or 'not recorded'}"]
        lines.append(", ".join(f"{k} {v}" for k, v in self.versions.items())
                     + ("" if self.recorded else " (this machine now; the run did not record its own)"))
        m = self.machine
        lines.append(f"machine: {m.get('cpu')} x{m.get('cores')}, {m.get('memory_gb')} GB, {m.get('os')}, "
                     f"GPU: {', '.join(m.get('gpus') or []) or 'none'}")
        lines.append("config: " + json.dumps(self.config, sort_keys=True))
        return "\n".join(lines)


def repro_card(store: Any, run_id: str) -> ReproCard:
    """The card of a stored run: seed, split hash, versions, machine, config and its reruns so far."""
    record = store.get(run_id)
    if record is None:
        raise UserError(f"There is no run '{run_id}'.")
    env = recorded_environment(store.run_dir(run_id))
    recorded = env is not None
    if env is None:
        env = environment()
    result = record.result or {}
    return ReproCard(
        run_id=run_id, name=record.name or run_id, status=record.status, seed=int(record.config.seed),
        deterministic=bool(record.config.deterministic), split_hash=result.get("split_hash"),
        versions=dict(env.get("versions") or {}), machine=dict(env.get("machine") or {}), recorded=recorded,
        config=record.config.to_dict(), reruns=_rerun_rows(store, record),
    )


# ---------------------------------------------------------------- run again


def rerun_config(config: TrainConfig, deterministic: bool | None = None) -> TrainConfig:
    """The same recipe again: every setting kept (seed included), named '... (again)', outside any group.

    ``deterministic=True`` turns deterministic ops on, so the rerun's history matches a deterministic original.
    """
    name = config.name or ""
    while name.endswith(AGAIN):
        name = name[: -len(AGAIN)]
    changes: dict[str, Any] = {"name": (name or "run") + AGAIN, "group": ""}
    if deterministic is not None:
        changes["deterministic"] = bool(deterministic)
    return config.replace(**changes)


def recipe(config: TrainConfig) -> dict[str, Any]:
    """The parts of a config that decide the result (not its name or group)."""
    d = config.to_dict()
    d.pop("name", None)
    d.pop("group", None)
    return d


def same_recipe(a: TrainConfig, b: TrainConfig) -> bool:
    """True when two configs train the same way (names and groups aside)."""
    return recipe(a) == recipe(b)


def history_difference(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]],
                       metrics: Sequence[str] = HISTORY_METRICS) -> float | None:
    """Largest absolute difference between two histories' metrics, epoch by epoch; None if their lengths differ."""
    worst = 0.0
    compared = False
    for key in metrics:
        xs, ys = list(a.get(key) or []), list(b.get(key) or [])
        if len(xs) != len(ys):
            return None
        for x, y in zip(xs, ys):
            x_ok = x is not None and math.isfinite(float(x))
            y_ok = y is not None and math.isfinite(float(y))
            if x_ok != y_ok:
                return None
            if x_ok:
                worst = max(worst, abs(float(x) - float(y)))
                compared = True
    return worst if compared else None


def _history(store: Any, run_id: str) -> dict[str, list[float | None]]:
    epochs = store.epochs(run_id)
    return {k: [e.get(k) for e in epochs] for k in HISTORY_METRICS}


def _rerun_rows(store: Any, record: Any) -> list[dict[str, Any]]:
    """Later runs with the same recipe, with how far their history is from this run's."""
    mine = _history(store, record.run_id)
    rows = []
    for other in store.list():
        if other.run_id == record.run_id or other.created < record.created or not same_recipe(other.config, record.config):
            continue
        diff = history_difference(mine, _history(store, other.run_id)) if other.status == "finished" else None
        rows.append({"run_id": other.run_id, "name": other.name, "status": other.status, "difference": diff,
                     "deterministic": bool(other.config.deterministic)})
    return rows


def rerun_sentence(card: ReproCard, tolerance: float = 1e-6) -> str | None:
    """What the reruns so far show: identical histories, small differences, or why they differ."""
    done = [r for r in card.reruns if r["status"] == "finished"]
    if not done:
        return None
    diffs = [r["difference"] for r in done if r["difference"] is not None]
    if diffs and len(diffs) == len(done) and max(diffs) <= tolerance:
        return (f"Run again {len(done)} time(s): the history matched epoch for epoch (largest difference "
                f"{max(diffs):.1e}).")
    if not card.deterministic:
        return ("Reruns differ slightly (largest difference "
                + (f"{max(diffs):.3g}" if diffs else "in length")
                + ") because deterministic ops were off: parallel sums on the CPU add up in a different order each time.")
    return ("A rerun differs (largest difference " + (f"{max(diffs):.3g}" if diffs else "in length")
            + "): it ran on different software or hardware, or the data changed on disk.")
