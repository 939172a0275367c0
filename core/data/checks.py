"""Checks before training: what in the data will hurt this run, in one sentence, with a fix a click applies.

Each check reads a dataset's health report (``core.data.health.health_report``) together with the
``TrainConfig`` about to start. A fix is a set of dotted-path config changes
(``{"class_weights": True}``, ``{"split.drop_duplicates": True}``), applied with
``core.config.apply_changes``: the UI, the CLI and the tests apply it the same way. ``copies_of_training``
and ``set_aside_notes`` read a report's near-copies and a dataset's notes for the pages.
Pure Python: no TensorFlow, no streamlit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from core.config import AUGMENT_PRESETS, TrainConfig, apply_changes
from core.data.pixels import to_channels

MIN_IMAGES_PER_CLASS = 10   # training images; below this a class is mostly guesswork
IMBALANCE_RATIO = 1.5       # largest / smallest class in training: above it accuracy hides the small class
SMALL_IMAGE_FACTOR = 2.0    # the model's input more than this many times the images' side: blown up for nothing
FEW_IMAGES_AUGMENT = dict(AUGMENT_PRESETS["gentle"])  # no flips: a mirrored digit or letter is another class


@dataclass(frozen=True)
class DataCheck:
    """One problem found before training, and the change that fixes it (``fix`` empty: no automatic fix)."""

    kind: str                 # "imbalance" | "leakage" | "few_images" | "small_images"
    sentence: str             # what is wrong and why it matters, for a non-specialist
    fix_label: str            # the button: "Use class weights"
    fix_sentence: str         # what the fix does
    fix: dict[str, Any] = field(default_factory=dict)   # dotted-path TrainConfig changes
    severity: str = "warning"

    @property
    def fixable(self) -> bool:
        return bool(self.fix)

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with this check's fix applied (unchanged when there is none)."""
        return apply_changes(config, self.fix) if self.fix else config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _report_dict(report: Any) -> Mapping[str, Any]:
    return report.to_dict() if hasattr(report, "to_dict") else report


def pre_training_checks(report: Any, config: TrainConfig, *, min_images: int = MIN_IMAGES_PER_CLASS) -> list[DataCheck]:
    """Every check that fires for this dataset (health report of ``config``'s split) and this config."""
    r = _report_dict(report)
    train = dict((r.get("counts") or {}).get("train") or {})
    out = [
        _imbalance(train, config),
        _leakage(r, config),
        _few_images(train, config, min_images),
        _small_images(r, config),
    ]
    return [c for c in out if c is not None]


def apply_fixes(config: TrainConfig, checks: Sequence[DataCheck]) -> TrainConfig:
    """``config`` with every given check's fix applied, in order."""
    for check in checks:
        config = check.apply(config)
    return config


def _imbalance(train: Mapping[str, int], config: TrainConfig) -> DataCheck | None:
    present = {c: n for c, n in train.items() if n > 0}
    if len(present) < 2 or config.class_weights:
        return None
    big, small = max(present, key=present.get), min(present, key=present.get)  # type: ignore[arg-type]
    ratio = present[big] / present[small]
    if ratio < IMBALANCE_RATIO:
        return None
    return DataCheck(
        "imbalance",
        f"The classes are imbalanced: '{big}' has {present[big]} training images and '{small}' only "
        f"{present[small]} ({ratio:.1f} to 1). The model can score well by mostly answering '{big}' and still "
        f"miss '{small}'.",
        "Use class weights",
        f"Each mistake on a rare class counts more (weight = images / (classes x images of that class)), so "
        f"'{small}' matters as much as '{big}'.",
        {"class_weights": True},
    )


def copies_of_training(report: Any) -> dict[str, int]:
    """Validation pictures copying a training picture and test pictures copying a training or validation one,
    exactly or nearly: ``{"val": n, "test": m}`` (pictures already set aside no longer count)."""
    r = _report_dict(report)
    near = r.get("near_copies") or {}
    if near:
        return {"val": int(near.get("val_in_train") or 0), "test": int(near.get("test_in_train") or 0)}
    groups = r.get("duplicates_across_splits")  # an older report: exact copies only
    out = {"val": 0, "test": 0}
    for group in groups or []:
        splits = [i["split"] for i in group["items"]]
        if "train" in splits:
            for s in splits:
                if s in out:
                    out[s] += 1
    return out


def set_aside_notes(notes: Sequence[str]) -> list[str]:
    """The dataset notes that say how many validation / test pictures were set aside as copies of training ones."""
    return [n for n in notes if "were set aside" in n]


def _leakage(r: Mapping[str, Any], config: TrainConfig) -> DataCheck | None:
    if config.split.drop_duplicates:
        return None
    near = r.get("near_copies") or {}
    if near:
        val, test = int(near.get("val_in_train") or 0), int(near.get("test_in_train") or 0)
        where = {(True, False): "the validation split", (False, True): "the test split"}.get(
            (bool(val), bool(test)), f"validation ({val}) and test ({test})")
    else:  # an older report: exact copies only, without the split they sit in
        val, test, where = 0, int(r.get("num_duplicates_across_splits") or 0), "validation or test"
    n = val + test
    if n == 0:
        return None
    same = "near-copies" if near.get("checked") else "copies"
    return DataCheck(
        "leakage",
        f"{n} picture(s) in {where} are {same} of pictures the model trains on (the same photo, perhaps flipped, cropped "
        "or re-exposed): the model is scored on pictures it has in effect already seen, so validation and test "
        "accuracy will look better than they really are.",
        "Set the near-copies aside",
        "Every validation or test picture that is a copy or near-copy of a picture in training (or, for test, "
        "in validation) is left out of scoring; training keeps its copy, so the scores are on pictures the "
        "model has never seen.",
        {"split.drop_duplicates": True},
    )


def _few_images(train: Mapping[str, int], config: TrainConfig, min_images: int) -> DataCheck | None:
    few = {c: n for c, n in train.items() if n < min_images}
    if not few:
        return None
    names = ", ".join(f"'{c}' ({n})" for c, n in sorted(few.items(), key=lambda kv: kv[1])[:6])
    more = f" and {len(few) - 6} more" if len(few) > 6 else ""
    sentence = (f"Fewer than {min_images} training images in {names}{more}: the model will mostly memorise "
                "them and guess on new ones. More pictures help most.")
    if not config.augment.enabled:
        return DataCheck("few_images", sentence, "Add augmentation",
                         "Each epoch shows slightly turned, zoomed and shifted copies (no mirror images), so the "
                         "few pictures go further.", {"augment": dict(FEW_IMAGES_AUGMENT)})
    split = config.split
    if split.val_fraction + split.test_fraction > 0.25:
        return DataCheck("few_images", sentence, "Give training more images",
                         "Validation and test keep 10 % each, so training gets the rest.",
                         {"split.val_fraction": 0.1, "split.test_fraction": 0.1})
    return DataCheck("few_images", sentence, "", "Augmentation is on and training already gets most images: "
                     "add more pictures of these classes.", {}, severity="info")


def _small_images(r: Mapping[str, Any], config: TrainConfig) -> DataCheck | None:
    # Transfer models are pretrained on large images: blowing small ones up for them is normal and helps.
    if config.model.is_transfer:
        return None
    median = (r.get("sizes") or {}).get("median")
    if not median:
        return None
    side = min(int(median[0]), int(median[1]))
    if side <= 0 or config.image_size <= SMALL_IMAGE_FACTOR * side:
        return None
    # Twice the images' side (rounded up to 8): room for the pooling layers, nothing wasted beyond that.
    target = max(8, int(math.ceil(SMALL_IMAGE_FACTOR * side / 8) * 8))
    if target >= config.image_size:
        return None
    factor = config.image_size / side
    return DataCheck(
        "small_images",
        f"The images are about {median[1]}×{median[0]} pixels but the model's input is "
        f"{config.image_size}×{config.image_size}: each picture is blown up {factor:.0f}×, which adds no detail "
        f"and makes every step about {factor ** 2:.0f}× slower.",
        f"Use {target} px",
        f"The model's input becomes {target}×{target} pixels: about twice the images' own size, which leaves room "
        "for the network's pooling layers without wasting time.",
        {"image_size": target},
        severity="info",
    )


# ---------------------------------------------------------------- pixel statistics per class (Data page)


def class_pixel_stats(ds: Any, per_class: int = 64, seed: int = 0) -> dict[str, Any]:
    """Per class: mean and standard deviation of each channel over a seeded sample of training images.

    A class much darker or brighter than the others lets a model learn brightness instead of shape.
    """
    part = ds.splits["train"] if len(ds.splits["train"]) else next(iter(ds.splits.values()))
    names = ["gray"] if ds.channels == 1 else ["red", "green", "blue"]
    rng = np.random.default_rng(seed)
    classes: dict[str, dict[str, Any]] = {}
    for k, cls in enumerate(ds.class_names):
        idx = np.flatnonzero(part.labels == k)
        if len(idx) == 0:
            continue
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        total = np.zeros(ds.channels)
        total_sq = np.zeros(ds.channels)
        pixels = 0
        for i in pick:
            try:
                img = part.image(int(i))
            except Exception:  # noqa: BLE001 - an unreadable file is reported by the health report already
                continue
            flat = to_channels(img, ds.channels).reshape(-1, ds.channels).astype(np.float64)
            total += flat.sum(axis=0)
            total_sq += (flat**2).sum(axis=0)
            pixels += flat.shape[0]
        if pixels == 0:
            continue
        mean = total / pixels
        std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0))
        classes[cls] = {"mean": [round(float(m), 2) for m in mean], "std": [round(float(s), 2) for s in std],
                        "sample": int(len(pick))}
    return {"channel_names": names, "classes": classes}


def brightness_shortcut(stats: Mapping[str, Any], threshold: float = 40.0) -> str | None:
    """A sentence when one class is much brighter or darker than the rest (mean over channels), else None."""
    classes = stats.get("classes") or {}
    if len(classes) < 2:
        return None
    level = {c: float(np.mean(v["mean"])) for c, v in classes.items()}
    overall = float(np.median(list(level.values())))
    odd = max(level, key=lambda c: abs(level[c] - overall))
    diff = level[odd] - overall
    if abs(diff) < threshold:
        return None
    return (f"The '{odd}' images are much {'brighter' if diff > 0 else 'darker'} than the others (mean brightness "
            f"{level[odd]:.0f} against a typical {overall:.0f} of 255): a model may learn brightness instead of "
            "what the object looks like. Check that this class was not photographed differently.")
