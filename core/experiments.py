"""Experiments a class runs with one click: the overfitting lab and small grid searches.

An experiment is a group of ordinary runs (``TrainConfig.group``) queued on the ``TrainingManager``;
they train one after another like any other run and land in the run store. A small manifest
(``<home>/experiments/<group>.json``, written atomically) remembers what each run varies, so the
tables, charts and captions can name them. Status, stop and results read the runs back through the
manager. Pure Python: no TensorFlow, no streamlit.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.config import (
    AUGMENT_PRESETS,
    OPTIMIZERS,
    AugmentConfig,
    ConvBlock,
    CustomArchitecture,
    ModelSpec,
    SplitConfig,
    TrainConfig,
)
from core.errors import UserError
from core.store import atomic_write_json

MAX_GRID_PARAMS = 3
MAX_GRID_COMBINATIONS = 12
END_EPOCHS = 3  # "final" accuracy = mean of the last epochs, so one lucky epoch does not decide
KINDS = ("lab", "grid")

# ---------------------------------------------------------------- configs from changes


def apply_changes(config: TrainConfig, changes: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted-path changes (``{"split.label_noise": 0.1, "class_weights": True}``).

    ``augment`` also takes a preset name or a dict of ``AugmentConfig`` fields; a path through
    ``model.custom`` needs a custom model. Invalid values raise the config's own ``UserError``.
    """
    for path, value in changes.items():
        if path == "augment" and isinstance(value, str):
            value = AugmentConfig.preset(value)
        elif path == "augment" and isinstance(value, Mapping):
            value = AugmentConfig.from_dict(dict(value))
        config = _set_path(config, path.split("."), value)
    return config


def _set_path(obj: Any, parts: list[str], value: Any) -> Any:
    head = parts[0]
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise UserError(f"'{head}' is not a setting that can be changed here.")
    if len(parts) == 1:
        return dataclasses.replace(obj, **{head: value})
    inner = getattr(obj, head)
    if inner is None:
        raise UserError(f"'{head}' is not set in this configuration, so '{'.'.join(parts[1:])}' cannot change.")
    return dataclasses.replace(obj, **{head: _set_path(inner, parts[1:], value)})


def get_path(config: Any, path: str) -> Any:
    """The value at a dotted path (None when a part is missing)."""
    for part in path.split("."):
        config = getattr(config, part, None)
        if config is None:
            return None
    return config


# ---------------------------------------------------------------- the experiment model


@dataclass(frozen=True)
class ExperimentRun:
    """One run of an experiment: what it shows and the config that trains it."""

    key: str                      # stable id inside the experiment, e.g. "data-10", "reg-dropout", "grid-3"
    label: str                    # what a person reads: "10 % of the training data"
    series: tuple[str, ...]       # "learning_curve", "label_noise", "regularisers", "grid"
    values: dict[str, Any]        # what this run varies, e.g. {"train_fraction": 0.1}
    config: TrainConfig


@dataclass(frozen=True)
class Experiment:
    """A named series of runs queued together as one group."""

    kind: str                     # "lab" | "grid"
    title: str
    runs: tuple[ExperimentRun, ...]
    params: tuple[str, ...] = ()  # the varied parameters (grid), in order

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown experiment kind {self.kind!r}")
        keys = [r.key for r in self.runs]
        if len(set(keys)) != len(keys):
            raise ValueError("experiment run keys must be unique")


# ---------------------------------------------------------------- the overfitting lab


@dataclass(frozen=True)
class LabSettings:
    """Sizes of the overfitting lab, chosen so all of it trains in a few minutes on a 2-core CPU.

    Every run gets about ``steps_per_run`` weight updates (epochs x batches, within ``min_epochs`` ..
    ``max_epochs``): with a fixed number of epochs the small training sets would get a handful of
    updates and look bad for lack of training rather than lack of data.
    """

    source: str = "builtin:shapes?per_class=150&size=32"
    split: SplitConfig = SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0)
    image_size: int = 32
    batch_size: int = 16
    steps_per_run: int = 200
    min_epochs: int = 12
    max_epochs: int = 50
    learning_rate: float = 2e-3
    seed: int = 0
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    noises: tuple[float, ...] = (0.1, 0.3)
    regulariser_fraction: float = 0.25  # where the plain network overfits, so regularisers have work to do
    regularisers: tuple[str, ...] = ("augmentation", "dropout", "l2", "batch_norm", "early_stopping")
    early_stopping_patience: int = 5

    def epochs_for(self, n_train: int) -> int:
        """Epochs giving about ``steps_per_run`` updates for ``n_train`` training images."""
        steps = max(math.ceil(n_train / self.batch_size), 1)
        return int(min(max(math.ceil(self.steps_per_run / steps), self.min_epochs), self.max_epochs))


def lab_train_sizes(settings: LabSettings) -> dict[float, int]:
    """Training images at each fraction of the lab's split (loads the generated dataset once, no TensorFlow)."""
    from core.datasets import load_dataset

    labels = load_dataset(settings.source, settings.split).splits["train"].labels
    counts = [int((labels == c).sum()) for c in sorted(set(labels.tolist()))]
    # The same per-class rounding as core.datasets' subsampling: at least one image a class.
    return {f: sum(max(1, int(math.floor(n * f + 0.5))) for n in counts) for f in settings.fractions}


REGULARISER_LABELS = {
    "augmentation": "augmentation",
    "dropout": "dropout",
    "l2": "L2 weight penalty",
    "batch_norm": "batch normalisation",
    "early_stopping": "early stopping",
    "all": "all five regularisers",
}
# Mirror images, small turns and colour changes: a shape stays the same shape. Measured on the lab's split,
# zoom/shift/upside-down flips made the 92-image run underfit within its budget; these did not.
LAB_AUGMENT = AugmentConfig(flip="horizontal", rotation=0.05, contrast=0.3, brightness=0.2)
LAB_DROPOUT = 0.4
LAB_L2 = 1e-3


def lab_network(dropout: bool = False, l2: bool = False, batch_norm: bool = False) -> CustomArchitecture:
    """The lab's small CNN (conv 16/32, Dense 64); the same layers with the chosen regularisers switched on."""
    rate = LAB_DROPOUT if dropout else 0.0
    return CustomArchitecture(
        blocks=(ConvBlock(16, batch_norm=batch_norm, dropout=rate / 2), ConvBlock(32, batch_norm=batch_norm,
                                                                                  dropout=rate / 2)),
        head="flatten", dense_units=(64,), dropout=rate, l2=LAB_L2 if l2 else 0.0,
    )


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def _lab_config(s: LabSettings, *, fraction: float, epochs: int, noise: float = 0.0,
                regs: frozenset[str] = frozenset(), name: str) -> TrainConfig:
    return TrainConfig(
        data=s.source,
        split=s.split.replace(train_fraction=fraction, label_noise=noise),
        model=ModelSpec(name="custom", custom=lab_network("dropout" in regs, "l2" in regs, "batch_norm" in regs)),
        image_size=s.image_size,
        batch_size=s.batch_size,
        epochs=epochs,
        learning_rate=s.learning_rate,
        augment=LAB_AUGMENT if "augmentation" in regs else AugmentConfig(),
        early_stopping_patience=s.early_stopping_patience if "early_stopping" in regs else 0,
        seed=s.seed,
        use_feature_cache=False,
        name=name,
    )


def lab_experiment(settings: LabSettings = LabSettings(), train_sizes: Mapping[float, int] | None = None) -> Experiment:
    """The fixed lab series: a learning curve, noisy labels and regularisers on/off, on one split and seed.

    ``train_sizes`` (images per fraction, from ``lab_train_sizes``) sets each run's epochs; computed when omitted.
    """
    s = settings
    if s.regularisers and s.regulariser_fraction not in s.fractions:
        raise ValueError("regulariser_fraction must be one of the learning-curve fractions (its baseline)")
    sizes = dict(train_sizes) if train_sizes is not None else lab_train_sizes(s)
    epochs = {f: s.epochs_for(sizes[f]) for f in s.fractions}
    full = max(s.fractions)
    runs: list[ExperimentRun] = []
    for f in sorted(s.fractions):
        series = ["learning_curve"]
        if f == full and s.noises:
            series.append("label_noise")
        if f == s.regulariser_fraction and s.regularisers:
            series.append("regularisers")
        label = f"{_pct(f)} of the training data ({sizes[f]} images)"
        runs.append(ExperimentRun(f"data-{f * 100:g}", label, tuple(series),
                                  {"train_fraction": f, "label_noise": 0.0, "regularisers": "none",
                                   "train_images": sizes[f]},
                                  _lab_config(s, fraction=f, epochs=epochs[f], name=f"Lab: {label}")))
    for noise in s.noises:
        label = f"{_pct(noise)} of the labels flipped"
        runs.append(ExperimentRun(f"noise-{noise * 100:g}", label, ("label_noise",),
                                  {"train_fraction": full, "label_noise": noise, "regularisers": "none",
                                   "train_images": sizes[full]},
                                  _lab_config(s, fraction=full, epochs=epochs[full], noise=noise, name=f"Lab: {label}")))
    f = s.regulariser_fraction
    for reg in s.regularisers:
        regs = frozenset(r for r in REGULARISER_LABELS if r != "all") if reg == "all" else frozenset({reg})
        label = f"{_pct(f)} data + {REGULARISER_LABELS[reg]}"
        runs.append(ExperimentRun(f"reg-{reg}", label, ("regularisers",),
                                  {"train_fraction": f, "label_noise": 0.0, "regularisers": reg,
                                   "train_images": sizes[f]},
                                  _lab_config(s, fraction=f, epochs=epochs[f], regs=regs, name=f"Lab: {label}")))
    return Experiment("lab", "Overfitting lab", tuple(runs))


# ---------------------------------------------------------------- grid search


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
            return _pct(value)
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


# ---------------------------------------------------------------- queuing and manifests


@dataclass(frozen=True)
class Manifest:
    """What a queued experiment is: its runs (by id) and what each one varies."""

    group: str
    kind: str
    title: str
    created: float
    params: tuple[str, ...]
    entries: tuple[dict[str, Any], ...]   # {run_id, key, label, series, values}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"], d["entries"] = list(self.params), [dict(e) for e in self.entries]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        return cls(group=str(d["group"]), kind=str(d["kind"]), title=str(d.get("title", "")),
                   created=float(d.get("created", 0.0)), params=tuple(d.get("params", ())),
                   entries=tuple(dict(e) for e in d.get("entries", ())))

    def entry(self, key: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["key"] == key), None)


def experiments_dir(home: Path | str) -> Path:
    """Where experiment manifests live under a CNN Lab home."""
    return Path(home) / "experiments"


def _manifest_path(home: Path | str, group: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", group):
        raise UserError(f"'{group}' is not an experiment name.")
    return experiments_dir(home) / f"{group}.json"


def new_group_id(kind: str, now: float | None = None) -> str:
    """``lab-20250101-120000-123`` style ids: sortable, readable, unique per millisecond."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{kind}-{stamp}-{int(now * 1000) % 1000:03d}"


def queue_experiment(manager: Any, experiment: Experiment) -> str:
    """Queue every run of the experiment as one group on the manager; returns the group id."""
    store = manager.store
    group = new_group_id(experiment.kind)
    while _manifest_path(store.home, group).exists():  # two clicks in one millisecond
        group = new_group_id(experiment.kind, time.time() + 0.001)
    configs = [run.config.replace(group=group) for run in experiment.runs]
    entries = [{"key": run.key, "label": run.label, "series": list(run.series), "values": dict(run.values),
                "run_id": None} for run in experiment.runs]
    manifest = Manifest(group, experiment.kind, experiment.title, time.time(), experiment.params, tuple(entries))
    # The manifest goes first: a page polling between two starts still knows every run that is coming.
    atomic_write_json(_manifest_path(store.home, group), manifest.to_dict())
    for entry, config in zip(entries, configs):
        entry["run_id"] = manager.start(config, name=config.name)
        atomic_write_json(_manifest_path(store.home, group), manifest.to_dict())
    return group


def load_manifest(home: Path | str, group: str) -> Manifest | None:
    """The manifest of a group, or None when it is missing or unreadable."""
    path = _manifest_path(home, group)
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_experiments(home: Path | str, kind: str | None = None) -> list[Manifest]:
    """Every experiment under ``home`` (optionally of one kind), newest first."""
    folder = experiments_dir(home)
    out = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        m = load_manifest(home, path.stem)
        if m is not None and (kind is None or m.kind == kind):
            out.append(m)
    return sorted(out, key=lambda m: m.created, reverse=True)


# ---------------------------------------------------------------- status, stop


@dataclass(frozen=True)
class MemberRun:
    """One run of a group as the UI shows it: its manifest entry plus its current snapshot."""

    key: str
    label: str
    series: tuple[str, ...]
    values: dict[str, Any]
    run_id: str | None
    snapshot: Any | None          # core.training.RunSnapshot; None when not queued yet or deleted

    @property
    def status(self) -> str:
        if self.snapshot is not None:
            return self.snapshot.status
        return "deleted" if self.run_id else "queued"


@dataclass(frozen=True)
class GroupStatus:
    """The state of a whole experiment."""

    group: str
    kind: str
    title: str
    params: tuple[str, ...]
    members: tuple[MemberRun, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.members)

    @property
    def done(self) -> int:
        return sum(1 for m in self.members if m.status not in ("queued", "running", "stopping"))

    @property
    def active(self) -> bool:
        return self.done < self.total

    @property
    def progress(self) -> float:
        """Share of all planned epochs completed, 0..1 (ended runs count as complete)."""
        planned = done = 0.0
        for m in self.members:
            snap = m.snapshot
            total = max(int(getattr(snap, "epochs_total", 0) or 0), 1) if snap is not None else 1
            planned += total
            if m.status in ("queued", "running", "stopping") and snap is not None:
                within = snap.batch / snap.batches_per_epoch if snap.batches_per_epoch and m.status != "queued" else 0
                done += min(snap.epoch + within, total)
            elif m.status not in ("queued", "running", "stopping"):
                done += total
        return done / planned if planned else 0.0

    def member(self, key: str) -> MemberRun | None:
        return next((m for m in self.members if m.key == key), None)

    def eta_seconds(self) -> float | None:
        """Time left for the whole group from the mean time of the runs that finished."""
        times = [m.snapshot.finished - m.snapshot.started for m in self.members
                 if m.status == "finished" and m.snapshot.started and m.snapshot.finished]
        if not times or not self.active:
            return None
        per_run = sum(times) / len(times)
        left = 0.0
        for m in self.members:
            if m.status == "queued":
                left += per_run
            elif m.status in ("running", "stopping"):
                left += per_run * (1 - _run_fraction(m.snapshot))
        return left


def _run_fraction(snap: Any) -> float:
    total = max(int(snap.epochs_total or 0), 1)
    within = snap.batch / snap.batches_per_epoch if snap.batches_per_epoch else 0.0
    return max(0.0, min(1.0, (snap.epoch + within) / total))


def group_status(manager: Any, group: str) -> GroupStatus | None:
    """Every run of the group with its live snapshot; None for an unknown group."""
    manifest = load_manifest(manager.store.home, group)
    if manifest is None:
        return None
    members = []
    for e in manifest.entries:
        run_id = e.get("run_id")
        snap = manager.snapshot(run_id) if run_id else None
        members.append(MemberRun(e["key"], e["label"], tuple(e.get("series", ())), dict(e.get("values", {})),
                                 run_id, snap))
    counts: dict[str, int] = {}
    for m in members:
        counts[m.status] = counts.get(m.status, 0) + 1
    return GroupStatus(group, manifest.kind, manifest.title, manifest.params, tuple(members), counts)


def stop_group(manager: Any, group: str) -> int:
    """Stop the whole group: queued runs are cancelled, the running one stops within a batch. Returns how many."""
    status = group_status(manager, group)
    if status is None:
        raise UserError(f"There is no experiment '{group}'.")
    # Queued ones first (newest first), so none of them starts when the running one ends.
    queued = [m for m in status.members if m.status == "queued" and m.run_id]
    running = [m for m in status.members if m.status in ("running", "stopping") and m.run_id]
    for m in [*reversed(queued), *running]:
        manager.stop(m.run_id)
    # A queued run may have started while the others were being stopped: stop whatever is still going.
    for m in status.members:
        snap = manager.snapshot(m.run_id) if m.run_id else None
        if snap is not None and snap.status in ("queued", "running"):
            manager.stop(m.run_id)
    stopped = len(queued) + len(running)
    return stopped


def wait_group(manager: Any, group: str, timeout: float | None = None) -> GroupStatus:
    """Block until every run of the group has ended (or ``timeout`` passes); for the CLI, tests, benchmarks."""
    deadline = None if timeout is None else time.monotonic() + timeout
    manifest = load_manifest(manager.store.home, group)
    if manifest is None:
        raise UserError(f"There is no experiment '{group}'.")
    for e in manifest.entries:
        if e.get("run_id"):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            manager.wait(e["run_id"], timeout=left)
    status = group_status(manager, group)
    assert status is not None
    return status


# ---------------------------------------------------------------- results


def end_value(values: Sequence[float] | None, n: int = END_EPOCHS) -> float | None:
    """Mean of the last ``n`` finite values (NaN gaps skipped); None when there are none."""
    finite = [float(v) for v in (values or []) if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    tail = finite[-n:]
    return sum(tail) / len(tail)


def run_row(member: MemberRun, params: Sequence[str] = ()) -> dict[str, Any]:
    """One results-table row: what varied, the status and the accuracies (fractions 0..1 or None)."""
    snap = member.snapshot
    history = snap.history if snap is not None else {}
    result = (snap.result or {}) if snap is not None else {}
    val = [v for v in history.get("val_accuracy", []) if v == v]
    row: dict[str, Any] = {"run": member.label, "key": member.key}
    for p in params:
        row[p] = member.values.get(p)
    row.update({
        "status": member.status,
        "epochs": snap.epoch if snap is not None else 0,
        "train_accuracy": end_value(history.get("accuracy")),
        "val_accuracy": end_value(history.get("val_accuracy")),
        "best_val_accuracy": max(val) if val else None,
        "test_accuracy": result.get("accuracy"),
        "fit_seconds": (result.get("timing") or {}).get("fit_seconds"),
        "run_id": member.run_id,
    })
    return row


def results_table(status: GroupStatus, sort_by: str | None = "val_accuracy") -> list[dict[str, Any]]:
    """A row per run; sorted by ``sort_by`` (highest first, unknown values last), else in queue order."""
    rows = [run_row(m, status.params) for m in status.members]
    if sort_by:
        rows.sort(key=lambda r: (r.get(sort_by) is None, -(r.get(sort_by) or 0.0)))
    return rows


def best_run(status: GroupStatus, metric: str = "val_accuracy") -> str | None:
    """The finished run with the highest ``metric`` (final validation accuracy by default)."""
    rows = [r for r in results_table(status, metric) if r["status"] == "finished" and r.get(metric) is not None]
    return rows[0]["run_id"] if rows else None


# ---------------------------------------------------------------- the lab's lessons, from the numbers


def series_rows(status: GroupStatus, series: str) -> list[dict[str, Any]]:
    """The finished-or-running rows of one lab series, in queue order."""
    return [run_row(m) | {"values": m.values} for m in status.members if series in m.series]


def learning_curve_points(status: GroupStatus, n_train_full: int | None = None) -> list[dict[str, Any]]:
    """Per fraction of the training data: final training/validation accuracy and test accuracy (finished runs)."""
    points = []
    for r in series_rows(status, "learning_curve"):
        if r["status"] != "finished" or r["val_accuracy"] is None:
            continue
        f = float(r["values"].get("train_fraction", 1.0))
        images = r["values"].get("train_images") or (round(f * n_train_full) if n_train_full else None)
        points.append({"fraction": f, "images": images,
                       "train_accuracy": r["train_accuracy"], "val_accuracy": r["val_accuracy"],
                       "test_accuracy": r["test_accuracy"], "label": r["run"], "run_id": r["run_id"]})
    return sorted(points, key=lambda p: p["fraction"])


def learning_curve_ordered(points: Sequence[Mapping[str, Any]], metric: str = "val_accuracy",
                           tolerance: float = 0.0) -> bool:
    """True when more data never gave lower ``metric`` (beyond ``tolerance``) and the most beat the least."""
    vals = [p[metric] for p in sorted(points, key=lambda p: p["fraction"]) if p.get(metric) is not None]
    if len(vals) < 2:
        return False
    steps_ok = all(b >= a - tolerance for a, b in zip(vals, vals[1:]))
    return steps_ok and vals[-1] > vals[0]


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def learning_curve_sentence(points: Sequence[Mapping[str, Any]]) -> str | None:
    """What the learning curve shows, in numbers (None until two points are in)."""
    if len(points) < 2:
        return None
    small, big = points[0], points[-1]
    gap = (small["train_accuracy"] or 0) - (small["val_accuracy"] or 0)
    first = (f"With {_pct(small['fraction'])} of the data the model "
             + ("memorises" if gap >= 0.15 else "already generalises")
             + f": training accuracy reaches {_p(small['train_accuracy'])} while validation "
             + ("stalls at" if gap >= 0.15 else "follows at") + f" {_p(small['val_accuracy'])}.")
    chain = " → ".join(_p(p["val_accuracy"]) for p in points)
    if learning_curve_ordered(points):
        second = (f" More data, better validation accuracy: {chain} from {_pct(small['fraction'])} to "
                  f"{_pct(big['fraction'])} of the images; the gap to training shrinks to "
                  f"{max((big['train_accuracy'] or 0) - (big['val_accuracy'] or 0), 0) * 100:.0f} points.")
    else:
        second = (f" Validation accuracy by amount of data: {chain}. It did not rise at every step this time: "
                  "with so few validation images a few pictures change the percentage.")
    return first + second


def label_noise_sentence(status: GroupStatus) -> str | None:
    """What flipped labels did, from the numbers (None until the clean and one noisy run are in)."""
    rows = [r for r in series_rows(status, "label_noise") if r["status"] == "finished" and r["val_accuracy"] is not None]
    rows.sort(key=lambda r: r["values"].get("label_noise", 0.0))
    if len(rows) < 2 or rows[0]["values"].get("label_noise", 0.0) != 0.0:
        return None
    clean, worst = rows[0], rows[-1]
    noise = worst["values"]["label_noise"]
    train_drop = (clean["train_accuracy"] or 0) - (worst["train_accuracy"] or 0)
    val_drop = (clean["val_accuracy"] or 0) - (worst["val_accuracy"] or 0)
    text = (f"With {_pct(noise)} of the training labels flipped, training accuracy is {_p(worst['train_accuracy'])} "
            f"(clean labels: {_p(clean['train_accuracy'])}) and validation accuracy {_p(worst['val_accuracy'])} "
            f"(clean: {_p(clean['val_accuracy'])}). ")
    if train_drop > max(val_drop, 0) + 0.05:
        text += ("Training accuracy suffers most: it is scored against the flipped labels, which the network mostly "
                 "refuses to memorise")
        text += (f"; validation still loses {val_drop * 100:.0f} points because the wrong examples blur what each "
                 "class looks like." if val_drop > 0.02 else " - the validation labels are correct, so it still "
                 "recognises the classes.")
    elif val_drop > 0.02:
        text += ("The model learns some of the wrong labels by heart, and that costs accuracy on new images.")
    else:
        text += "The network shrugs the noise off here: the clean majority of each class still dominates."
    return text


def regulariser_findings(status: GroupStatus) -> list[dict[str, Any]]:
    """Per regulariser run (and the plain baseline): final train/val accuracy and the gap, baseline first."""
    out = []
    for r in series_rows(status, "regularisers"):
        if r["status"] != "finished" or r["val_accuracy"] is None:
            continue
        reg = r["values"].get("regularisers", "none")
        out.append({"regulariser": reg, "label": REGULARISER_LABELS.get(reg, "no regulariser"),
                    "train_accuracy": r["train_accuracy"], "val_accuracy": r["val_accuracy"],
                    "test_accuracy": r["test_accuracy"], "epochs": r["epochs"],
                    "gap": (r["train_accuracy"] or 0) - (r["val_accuracy"] or 0), "run_id": r["run_id"]})
    out.sort(key=lambda d: d["regulariser"] != "none")
    return out


def regulariser_sentence(status: GroupStatus) -> str | None:
    """Which regulariser helped most, and how the train-validation gap changed (None before the baseline)."""
    rows = regulariser_findings(status)
    if len(rows) < 2 or rows[0]["regulariser"] != "none":
        return None
    base, others = rows[0], rows[1:]
    best = max(others, key=lambda d: d["val_accuracy"])
    text = (f"Without regularisers the network scores {_p(base['train_accuracy'])} on its training images and "
            f"{_p(base['val_accuracy'])} on validation (a gap of {base['gap'] * 100:.0f} points). ")
    if best["val_accuracy"] > base["val_accuracy"]:
        text += (f"{best['label'][:1].upper() + best['label'][1:]} helps most: validation {_p(best['val_accuracy'])}, "
                 f"gap {best['gap'] * 100:.0f} points.")
    else:
        text += f"None of the regularisers beat the plain network on validation this time (best: {best['label']})."
    worse = [d for d in others if d["val_accuracy"] < base["val_accuracy"] - 0.1]
    for d in worse:
        why = ("its running averages, which it uses on new images, have not settled after so few weight updates - "
               "batch norm pays off in longer trainings of deeper networks" if d["regulariser"] == "batch_norm"
               else "with this little training it held the network back more than it protected it")
        text += f" {d['label'][:1].upper() + d['label'][1:]} did worse here (validation {_p(d['val_accuracy'])}): {why}."
    early = next((d for d in others if d["regulariser"] == "early_stopping"), None)
    if early is not None and early["epochs"] and early["epochs"] < max(d["epochs"] for d in rows):
        text += f" Early stopping ended after {early['epochs']} epochs and kept its best epoch's model."
    return text
