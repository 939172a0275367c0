"""Settings recommended for one dataset: model, image size, epochs, early stopping and augmentation, each with why.

``facts_from_report`` reads what matters from a dataset's health report (training images per class, the
images' median size, colour or grey, class count, where they come from); ``recommend`` turns those facts
into dotted-path ``TrainConfig`` changes with one plain sentence per choice. Photos get a frozen ImageNet
backbone at a large input size with the feature cache (its features are computed once, so the head's
epochs cost well under a second each) and early stopping; small grey or drawn images get a small CNN
trained from scratch near their own size. The numbers behind the rules are in
``benchmarks/recommend_results.md`` (``python -m benchmarks.recommend_sweep``).
Pure Python: no TensorFlow at import, no streamlit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from core.config import AugmentConfig, TrainConfig, apply_changes
from core.data.checks import IMBALANCE_RATIO

BACKBONE = "transfer:mobilenet_v2"
ALPHA = 0.35
TRANSFER_SIZE = 224          # MobileNetV2's own training size; features computed once, so size costs seconds
SMALL_PHOTO_SIDE = 64        # photos smaller than this are blown up to SMALL_PHOTO_SIZE only
SMALL_PHOTO_SIZE = 160       # 32-px CIFAR photos: 70.5 % at 160 px, 67.1 % at 224 px (benchmarks/recommend_results.md)
TRANSFER_EPOCHS = 60         # head epochs on cached features take well under a second each
TRANSFER_PATIENCE = 8
SCRATCH_EPOCHS = 40
SCRATCH_PATIENCE = 6
SCRATCH_MIN_SIZE = 16        # two pooling layers need room: 8-px digits learn better blown up to 16 px
SCRATCH_MAX_SIZE = 64
PHOTO_MIN_SIDE = 32          # colour images from this side up are treated as photos (the backbone's smallest input)
GREY_PHOTO_MIN_SIDE = 64     # grey images this large are photos too (scans, X-rays): ImageNet features still help
DEEP_SCRATCH_IMAGES = 10_000  # from this many training images a deeper scratch CNN has enough to learn from
FEW_PER_CLASS = 50           # scratch runs with fewer training images per class get gentle augmentation
                             # (digits, 124 a class: 98.9 % without, 98.1 % with it)
GENERATED_SOURCES = ("builtin:shapes",)   # pictures drawn by a program: simple enough for a small CNN


@dataclass(frozen=True)
class DatasetFacts:
    """What the rules look at, read from a health report (``facts_from_report``)."""

    source: str
    num_classes: int
    train_images: int
    smallest_class: int          # training images in the smallest class
    median_side: int             # the smaller side of the images' median size, in pixels (0: unknown)
    channels: int                # what the images decode to (1 grey, 3 colour)
    colour_share: float          # share of the source images in colour
    imbalance_ratio: float       # largest / smallest class in training

    @property
    def generated(self) -> bool:
        return self.source.startswith(GENERATED_SOURCES)

    @property
    def photos(self) -> bool:
        """Pictures a pretrained network knows how to look at: colour photos, or large grey ones."""
        if self.generated:
            return False
        colour = self.colour_share >= 0.5 and self.median_side >= PHOTO_MIN_SIDE
        return colour or self.median_side >= GREY_PHOTO_MIN_SIDE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "photos": self.photos}


def facts_from_report(report: Any) -> DatasetFacts:
    """The facts the rules need, from a ``HealthReport`` or its ``to_dict()``."""
    r: Mapping[str, Any] = report.to_dict() if hasattr(report, "to_dict") else report
    train = [int(n) for n in ((r.get("counts") or {}).get("train") or {}).values()]
    median = (r.get("sizes") or {}).get("median") or [0, 0]
    channels = r.get("channel_distribution") or {}
    total = sum(int(v) for v in channels.values())
    present = [n for n in train if n > 0]
    return DatasetFacts(
        source=str(r.get("source") or ""),
        num_classes=int(r.get("num_classes") or len(train)),
        train_images=sum(train),
        smallest_class=min(train) if train else 0,
        median_side=int(min(median)) if median else 0,
        channels=int(r.get("channels") or 3),
        colour_share=(int(channels.get("color", 0)) / total) if total else (1.0 if r.get("channels") == 3 else 0.0),
        imbalance_ratio=round(max(present) / min(present), 3) if present else 1.0,
    )


@dataclass(frozen=True)
class Choice:
    """One recommended setting: what it is, its value in words, why, and the config changes it makes."""

    setting: str                 # "model" | "image_size" | "epochs" | "early_stopping" | "augmentation" | ...
    label: str                   # "Model"
    value: str                   # "MobileNetV2 transfer (width 0.35, ImageNet weights, frozen)"
    sentence: str                # why, in one or two plain sentences
    changes: dict[str, Any] = field(default_factory=dict)   # dotted-path TrainConfig changes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changes": {k: _plain(v) for k, v in self.changes.items()}}


@dataclass(frozen=True)
class Recommendation:
    """Every choice for one dataset; ``apply`` writes them into a config, leaving alone what the user set."""

    kind: str                    # "transfer" | "scratch"
    model: str                   # the model name the recommended config uses
    facts: DatasetFacts
    choices: tuple[Choice, ...]
    notes: tuple[str, ...] = ()  # things to know before starting (a download the first run makes)

    @property
    def changes(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for c in self.choices:
            merged.update(c.changes)
        return merged

    def choice(self, setting: str) -> Choice | None:
        return next((c for c in self.choices if c.setting == setting), None)

    def apply(self, config: TrainConfig, keep: Iterable[str] = ()) -> TrainConfig:
        """``config`` with the recommended changes, except paths in ``keep`` (or below them: "model" keeps model.*)."""
        kept = tuple(keep)
        changes = {p: v for p, v in self.changes.items()
                   if not any(p == k or p.startswith(k + ".") for k in kept)}
        return apply_changes(config, changes)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "facts": self.facts.to_dict(), "choices": [c.to_dict() for c in self.choices],
                "notes": list(self.notes)}


def recommend(facts: DatasetFacts, *, model: str | None = None) -> Recommendation:
    """The settings that suit this dataset; ``model`` (a name the user chose) fixes the family."""
    transfer = model.startswith("transfer:") if model else facts.photos
    choices = _transfer_choices(facts, model) if transfer else _scratch_choices(facts, model)
    balance = _class_weights(facts)
    chosen = model or str(choices[0].changes["model.name"])
    return Recommendation("transfer" if transfer else "scratch", chosen, facts,
                          tuple(c for c in (*choices, balance) if c is not None))


def recommend_for(config: TrainConfig, *, model: str | None = None, home: Any = None) -> Recommendation:
    """The recommendation for ``config``'s dataset and split (loads it; raises its UserError), with the
    download note when the recommended backbone's ImageNet weights are not on this computer yet."""
    from core.data.health import health_report
    from core.data.sources import load_dataset

    facts = facts_from_report(health_report(load_dataset(config.data, config.split, home=home)))
    return with_download_note(recommend(facts, model=model))


def with_download_note(rec: Recommendation) -> Recommendation:
    """``rec`` plus a note when its backbone's ImageNet weights must still be downloaded (imports Keras)."""
    if rec.kind != "transfer" or imagenet_weights_ready(rec):
        return rec
    return dataclasses.replace(rec, notes=(*rec.notes, _download_note()))


# ---------------------------------------------------------------- photos: a frozen pretrained backbone


def _transfer_choices(f: DatasetFacts, model: str | None) -> list[Choice]:
    n = f"{f.train_images:,}"
    if model is None:
        chosen = Choice(
            "model", "Model", f"MobileNetV2 transfer (width {ALPHA}, ImageNet weights, frozen)",
            f"{n} training photos are too few to learn good features from scratch; a network pretrained on "
            "ImageNet's 1.2 million photos already knows edges, textures and shapes, so only a small head on top "
            "is trained. Width 0.35 is its fastest version; 0.5 and 1.0 know ImageNet better but are slower.",
            {"model.name": BACKBONE, "model.alpha": ALPHA, "model.weights": "imagenet",
             "model.fine_tune_layers": 0, "model.fine_tune_epochs": 0})
    else:
        chosen = Choice("model", "Model", f"{model} (your choice)", "You chose the model; the other settings suit it.")
    size = _transfer_size(f)
    cache = Choice(
        "feature_cache", "Feature cache", "on",
        "The frozen backbone's features are computed once and kept on disk; every epoch then trains only the "
        "head on them, in well under a second. Fine-tuning the backbone's top is left off: it runs the whole "
        "backbone every epoch, and on real hand photos it took 4 times as long for the same accuracy.",
        {"use_feature_cache": True})
    epochs = Choice(
        "epochs", "Epochs", f"up to {TRANSFER_EPOCHS}",
        f"Epochs of the head on cached features are nearly free, so there is room for up to {TRANSFER_EPOCHS}; "
        "early stopping (next line) ends the run as soon as more epochs stop helping.",
        {"epochs": TRANSFER_EPOCHS})
    stop = _early_stopping(TRANSFER_PATIENCE)
    augment = Choice(
        "augmentation", "Augmentation", "none",
        "Augmentation still works with the feature cache: three turned, zoomed and mirrored copies of every "
        "photo go through the backbone once each and are reused in turn. On real hand photos and on CIFAR-10 "
        "photos that scored about 3 points lower and took 2 to 5 times as long, so it is off.",
        {"augment": AugmentConfig()})
    return [chosen, size, cache, epochs, stop, augment]


def transfer_size(median_side: int) -> int:
    """The backbone's input size: 224 px, or 160 px for photos smaller than 64 px."""
    return SMALL_PHOTO_SIZE if 0 < median_side < SMALL_PHOTO_SIDE else TRANSFER_SIZE


def _transfer_size(f: DatasetFacts) -> Choice:
    size = transfer_size(f.median_side)
    once = ("The frozen backbone looks at each photo only once (next line), so a large size costs seconds, not "
            "minutes per epoch.")
    if size == TRANSFER_SIZE:
        grown = f", so each photo is enlarged {size / f.median_side:.1f}×" if 0 < f.median_side < size else ""
        why = f"{size} px is the size MobileNetV2 learnt ImageNet at, where its features are sharpest{grown}. {once}"
    else:
        why = (f"The photos are small ({f.median_side} px): at {size} px MobileNetV2 sees them well, while its full "
               f"{TRANSFER_SIZE} px only blurs them more (on 32-px photos that measured 3 points lower). {once}")
    return Choice("image_size", "Image size", f"{size} px", why, {"image_size": size})


def _download_note() -> str:
    return ("MobileNetV2's ImageNet weights are not on this computer yet: the first run downloads them once "
            "(a few megabytes). Without an internet connection that run stops and says which file to fetch and "
            "where to put it; a model trained from scratch needs no download.")


# ---------------------------------------------------------------- small or drawn images: a CNN from scratch


def scratch_size(median_side: int) -> int:
    """The images' own side rounded up to a multiple of 8, kept between 16 and 64 px."""
    side = median_side if median_side > 0 else 32
    return int(min(SCRATCH_MAX_SIZE, max(SCRATCH_MIN_SIZE, math.ceil(side / 8) * 8)))


def _scratch_choices(f: DatasetFacts, model: str | None) -> list[Choice]:
    what = ("drawn by a program" if f.generated
            else f"small ({f.median_side} px)" + (" grey" if f.colour_share < 0.5 else ""))
    if model is None:
        deep = f.train_images >= DEEP_SCRATCH_IMAGES
        name = "deep_convblock" if deep else "tiny"
        why = (f"{f.train_images:,} training images are enough for three blocks of two convolutions."
               if deep else f"Two convolution blocks are enough for {f.train_images:,} training images and train "
               "in seconds; a bigger network would mostly memorise them.")
        chosen = Choice(
            "model", "Model", f"{name} (a CNN trained from scratch)",
            f"The images are {what}: simple patterns that a small network learns by itself, and ImageNet's photo "
            f"features (learnt on large colour photos) do not fit them. {why}",
            {"model.name": name, "model.fine_tune_layers": 0, "model.fine_tune_epochs": 0})
    else:
        chosen = Choice("model", "Model", f"{model} (your choice)", "You chose the model; the other settings suit it.")
    side = scratch_size(f.median_side)
    native = f"{f.median_side} px" if f.median_side else "unknown"
    size = Choice(
        "image_size", "Image size", f"{side} px",
        f"Close to the images' own size ({native}): enlarging them further adds no detail and makes every step "
        "slower" + ("; very small images get 16 px so the two pooling layers still have room." if
                    f.median_side and f.median_side < SCRATCH_MIN_SIZE else "."),
        {"image_size": side})
    epochs = Choice(
        "epochs", "Epochs", f"up to {SCRATCH_EPOCHS}",
        f"A network that starts from nothing needs many passes over the images; early stopping (next line) ends "
        f"the run once more epochs stop helping, so {SCRATCH_EPOCHS} is a ceiling, not a cost.",
        {"epochs": SCRATCH_EPOCHS})
    stop = _early_stopping(SCRATCH_PATIENCE)
    if f.smallest_class < FEW_PER_CLASS:
        augment = Choice(
            "augmentation", "Augmentation", "gentle (small turns, zooms and shifts, no mirror images)",
            f"The smallest class has {f.smallest_class} training images: slightly changed copies each epoch make "
            "them go further. No mirror images, because a mirrored digit or letter is a different picture.",
            {"augment": AugmentConfig.preset("gentle")})
    else:
        augment = Choice(
            "augmentation", "Augmentation", "none",
            f"Every class has at least {f.smallest_class} training images, enough for a small network without "
            "changed copies: on handwritten digits, changed copies scored slightly lower and took longer.",
            {"augment": AugmentConfig()})
    return [chosen, size, epochs, stop, augment]


# ---------------------------------------------------------------- shared choices


def _early_stopping(patience: int) -> Choice:
    return Choice(
        "early_stopping", "Early stopping", f"after {patience} epochs without progress, keep the best epoch",
        f"Training stops when the validation loss has not improved for {patience} epochs, and the model of the "
        "best epoch is kept, not the last one, so the epochs after the best cost time but not quality.",
        {"early_stopping_patience": patience, "early_stopping_monitor": "val_loss", "restore_best": True})


def _class_weights(f: DatasetFacts) -> Choice | None:
    if f.imbalance_ratio < IMBALANCE_RATIO:
        return None
    return Choice(
        "class_weights", "Class weights", "on",
        f"The largest class has {f.imbalance_ratio:.1f}× the images of the smallest: weighting mistakes on rare "
        "classes more keeps the model from mostly answering the common ones.",
        {"class_weights": True})


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def imagenet_weights_ready(rec: Recommendation) -> bool:
    """Whether the recommended backbone's ImageNet weight file is already in Keras' folder (imports Keras)."""
    from core.config import ModelSpec
    from core.models.transfer import keras_models_dir, weights_file

    changes = rec.changes
    spec = ModelSpec(name=rec.model, alpha=changes.get("model.alpha", ALPHA))
    size = int(changes.get("image_size", TRANSFER_SIZE))
    name = weights_file(spec, (size, size, 3))
    return name is None or (keras_models_dir() / name).is_file()
