"""The overfitting lab: one click queues 11 small runs that show what data size, noisy labels and regularisers do.

Every run is an ordinary run of one experiment group (``core.training.experiments.groups``); the sentences
under the lab's charts are computed here from the runs' own numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from core.config import AugmentConfig, ConvBlock, CustomArchitecture, ModelSpec, SplitConfig, TrainConfig
from core.training.experiments.groups import Experiment, ExperimentRun, GroupStatus, percent, run_row


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
    from core.data.sources import load_dataset

    labels = load_dataset(settings.source, settings.split).splits["train"].labels
    counts = [int((labels == c).sum()) for c in sorted(set(labels.tolist()))]
    # The same per-class rounding as core.data.splits' subsampling: at least one image a class.
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
        label = f"{percent(f)} of the training data ({sizes[f]} images)"
        runs.append(ExperimentRun(f"data-{f * 100:g}", label, tuple(series),
                                  {"train_fraction": f, "label_noise": 0.0, "regularisers": "none",
                                   "train_images": sizes[f]},
                                  _lab_config(s, fraction=f, epochs=epochs[f], name=f"Lab: {label}")))
    for noise in s.noises:
        label = f"{percent(noise)} of the labels flipped"
        runs.append(ExperimentRun(f"noise-{noise * 100:g}", label, ("label_noise",),
                                  {"train_fraction": full, "label_noise": noise, "regularisers": "none",
                                   "train_images": sizes[full]},
                                  _lab_config(s, fraction=full, epochs=epochs[full], noise=noise, name=f"Lab: {label}")))
    f = s.regulariser_fraction
    for reg in s.regularisers:
        regs = frozenset(r for r in REGULARISER_LABELS if r != "all") if reg == "all" else frozenset({reg})
        label = f"{percent(f)} data + {REGULARISER_LABELS[reg]}"
        runs.append(ExperimentRun(f"reg-{reg}", label, ("regularisers",),
                                  {"train_fraction": f, "label_noise": 0.0, "regularisers": reg,
                                   "train_images": sizes[f]},
                                  _lab_config(s, fraction=f, epochs=epochs[f], regs=regs, name=f"Lab: {label}")))
    return Experiment("lab", "Overfitting lab", tuple(runs))



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
    first = (f"With {percent(small['fraction'])} of the data the model "
             + ("memorises" if gap >= 0.15 else "already generalises")
             + f": training accuracy reaches {_p(small['train_accuracy'])} while validation "
             + ("stalls at" if gap >= 0.15 else "follows at") + f" {_p(small['val_accuracy'])}.")
    chain = " → ".join(_p(p["val_accuracy"]) for p in points)
    if learning_curve_ordered(points):
        second = (f" More data, better validation accuracy: {chain} from {percent(small['fraction'])} to "
                  f"{percent(big['fraction'])} of the images; the gap to training shrinks to "
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
    text = (f"With {percent(noise)} of the training labels flipped, training accuracy is {_p(worst['train_accuracy'])} "
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
