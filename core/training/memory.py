"""Will a run fit in memory? A rough estimate before training, refused with a sentence rather than crashing."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from core.config import env_limit
from core.errors import UserError

MEMORY_SHARE = 0.8  # of the memory the OS reports available, that one training run may plan to use


def estimate_training_memory(model: Any, batch_size: int) -> int:
    """Rough bytes a training step needs: weights x4 (weights, gradients, two optimizer slots) + activations x2."""
    return 4 * (4 * int(model.count_params()) + 2 * int(batch_size) * _activation_values(model))


def _activation_values(model: Any) -> int:
    """Values per image kept for backpropagation; a frozen nested model (backbone) keeps none, only its peak."""
    total = 0
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None) and not layer.trainable:
            total += max((_output_values(inner) for inner in all_layers(layer)), default=0)
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
    override = env_limit(None, "CNNLAB_MEMORY_MB")
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


def all_layers(model: Any) -> Any:
    """Every layer, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)

