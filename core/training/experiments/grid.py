"""Grid search: up to three settings, up to twelve runs, each an ordinary run of one experiment group."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from core.config import AUGMENT_PRESETS, OPTIMIZERS, TrainConfig, apply_changes
from core.errors import UserError
from core.training.experiments.groups import Experiment, ExperimentRun, percent

MAX_GRID_PARAMS = 3
MAX_GRID_COMBINATIONS = 12


@dataclass(frozen=True)
class GridParam:
    """A hyper-parameter a grid search can vary."""

    name: str
    label: str
    choices: tuple[Any, ...]      # offered values (any valid value works)
    scale: str = "linear"         # "log" | "linear" | "category": how the parallel-coordinates axis is drawn
    help: str = ""


GRID_PARAMS: dict[str, GridParam] = {p.name: p for p in (
    GridParam("learning_rate", "learning rate", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "log",
              "Size of each correction step."),
    GridParam("batch_size", "batch size", (8, 16, 32, 64, 128), "log", "Images per correction step."),
    GridParam("dropout", "dropout", (0.0, 0.2, 0.4, 0.6), "linear",
              "Share of the head's activations switched off while training (custom and transfer models)."),
    GridParam("l2", "L2 penalty", (0.0, 1e-4, 1e-3, 1e-2), "linear",
              "Weight penalty on every layer (custom models)."),
    GridParam("epochs", "epochs", (3, 5, 10, 20, 40), "linear", "Passes over the training images."),
    GridParam("image_size", "image size", (16, 24, 32, 48, 64, 96), "linear", "Pixels per side the model sees."),
    GridParam("optimizer", "optimizer", OPTIMIZERS, "category", "How each correction step is computed."),
    GridParam("augment", "augmentation", tuple(AUGMENT_PRESETS), "category", "Random changes to training images."),
    GridParam("early_stopping_patience", "early stopping patience", (0, 3, 5, 10), "linear",
              "Epochs without a better validation loss before stopping (0 = off)."),
    GridParam("train_fraction", "share of the training data", (0.1, 0.25, 0.5, 1.0), "linear",
              "How much of the training split is used."),
)}


def _param_path(name: str, base: TrainConfig) -> str:
    """Where a grid parameter lives in the config for this kind of model."""
    spec = base.model
    if name == "dropout":
        if spec.is_transfer:
            return "model.head_dropout"
        if spec.name == "custom" and spec.custom is not None:
            return "model.custom.dropout"
        raise UserError(f"The preset '{spec.name}' has a fixed architecture: dropout can be varied for a custom "
                        "network or a transfer model.")
    if name == "l2":
        if spec.name == "custom" and spec.custom is not None:
            return "model.custom.l2"
        raise UserError("The L2 penalty can be varied for a custom network only (presets fix it).")
    if name == "train_fraction":
        return "split.train_fraction"
    return name


def _check_value(name: str, value: Any) -> None:
    if name in ("dropout",) and not 0 <= float(value) < 1:
        raise UserError("Dropout values must be at least 0 and below 1.")
    if name == "l2" and not 0 <= float(value) <= 1:
        raise UserError("L2 penalties must be between 0 and 1.")
    if name == "optimizer" and value not in OPTIMIZERS:
        raise UserError(f"Unknown optimizer '{value}': choose one of {', '.join(OPTIMIZERS)}.")
    if name == "augment" and value not in AUGMENT_PRESETS:
        raise UserError(f"Unknown augmentation preset '{value}': choose one of {', '.join(AUGMENT_PRESETS)}.")


def format_value(name: str, value: Any) -> str:
    """A grid value as people write it (``3e-3``, ``0.2``, ``adam``)."""
    if isinstance(value, float):
        if name == "train_fraction":
            return percent(value)
        return f"{value:g}"
    return str(value)


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    """How many runs a grid makes (the product of the value counts)."""
    return math.prod(len(v) for v in grid.values()) if grid else 0


def grid_experiment(base: TrainConfig, grid: Mapping[str, Sequence[Any]]) -> Experiment:
    """Every combination of up to three hyper-parameters (at most 12 runs) on top of ``base``."""
    names = [n for n in grid]
    if not names:
        raise UserError("Choose at least one hyper-parameter to vary.")
    if len(names) > MAX_GRID_PARAMS:
        raise UserError(f"A grid search varies at most {MAX_GRID_PARAMS} hyper-parameters; you chose {len(names)}.")
    unknown = [n for n in names if n not in GRID_PARAMS]
    if unknown:
        raise UserError(f"'{unknown[0]}' cannot be varied: choose from {', '.join(GRID_PARAMS)}.")
    values: dict[str, list[Any]] = {}
    for n in names:
        vals = list(dict.fromkeys(grid[n]))  # drop repeats, keep order
        if not vals:
            raise UserError(f"Give at least one value for the {GRID_PARAMS[n].label}.")
        for v in vals:
            _check_value(n, v)
        values[n] = vals
    total = grid_size(values)
    if total > MAX_GRID_COMBINATIONS:
        raise UserError(f"That grid has {total} combinations; the limit is {MAX_GRID_COMBINATIONS}: "
                        "remove some values so the class is not left waiting.")
    paths = {n: _param_path(n, base) for n in names}
    runs = []
    for i, combo in enumerate(itertools.product(*(values[n] for n in names)), start=1):
        chosen = dict(zip(names, combo))
        label = ", ".join(f"{GRID_PARAMS[n].label} {format_value(n, v)}" for n, v in chosen.items())
        config = apply_changes(base, {paths[n]: v for n, v in chosen.items()}).replace(name=f"Grid: {label}")
        runs.append(ExperimentRun(f"grid-{i}", label, ("grid",), chosen, config))
    return Experiment("grid", f"Grid search: {' x '.join(GRID_PARAMS[n].label for n in names)}", tuple(runs),
                      tuple(names))
