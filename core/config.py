"""Frozen, JSON-serialisable configuration shared by the UI, the CLI and the tests."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from core.errors import UserError

OPTIMIZERS = ("adam", "nadam", "rmsprop", "sgd")


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a (possibly nested) frozen dataclass from plain JSON data, ignoring unknown keys."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(value, dict):
            value = _from_dict(nested, value)
        elif f.name == "blocks" and isinstance(value, list):
            value = tuple(_from_dict(ConvBlock, v) if isinstance(v, dict) else v for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass named by a type hint such as ``X`` or ``X | None``, if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class SplitConfig(_JsonMixin):
    """How a source becomes train/val/test: stratified and seeded, so equal configs give equal splits.

    ``train_fraction`` and ``label_noise`` act on the training split only (after splitting), for the
    learning-curve and noisy-label experiments; validation and test stay untouched and comparable.
    ``drop_duplicates`` removes from validation and test every picture that is also in an earlier split
    (the leakage fix offered before training), near-copies included. ``group_near_copies`` keeps every
    near-copy group (the same photo flipped, cropped, re-exposed...) inside one split.
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    limit_per_class: int | None = None
    train_fraction: float = 1.0
    label_noise: float = 0.0
    drop_duplicates: bool = False
    group_near_copies: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise UserError("Validation and test fractions must each be between 0 and 1.")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise UserError("Validation and test together must leave at least 10 % of the images for training.")
        if not 0 < self.train_fraction <= 1:
            raise UserError("The share of training data used must be above 0 and at most 1.")
        if not 0 <= self.label_noise < 1:
            raise UserError("The share of flipped labels must be between 0 and 1.")
        if self.limit_per_class is not None and self.limit_per_class < 1:
            raise UserError("The limit per class must be at least 1 image.")


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # Small turns, zooms and shifts, no flips: safe for digits and letters, where a mirror image changes the class.
    "gentle": {"rotation": 0.05, "zoom": 0.1, "translation": 0.1},
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1},
    "standard": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.15, "translation": 0.1, "contrast": 0.1},
    "strong": {
        "flip": "horizontal",
        "rotation": 0.2,
        "zoom": 0.25,
        "translation": 0.15,
        "contrast": 0.25,
        "brightness": 0.2,
    },
}


@dataclass(frozen=True)
class AugmentConfig(_JsonMixin):
    """Random image changes applied to training batches only (Keras preprocessing layers).

    ``rotation`` is a fraction of a full turn (0.1 = up to 36 degrees), ``zoom``/``translation``
    fractions of the image size, ``contrast``/``brightness`` fractions of the range.
    """

    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(
            v > 0 for v in (self.rotation, self.zoom, self.translation, self.contrast, self.brightness)
        )

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        if name not in AUGMENT_PRESETS:
            raise UserError(f"Unknown augmentation preset '{name}': choose one of {', '.join(AUGMENT_PRESETS)}.")
        return cls(**AUGMENT_PRESETS[name])


@dataclass(frozen=True)
class ConvBlock(_JsonMixin):
    """One block of the custom builder: ``convs`` conv layers, optional batch norm, pooling, dropout."""

    filters: int = 32
    kernel: int = 3
    convs: int = 1
    batch_norm: bool = False
    pool: Literal["max", "avg", "none"] = "max"
    dropout: float = 0.0


@dataclass(frozen=True)
class CustomArchitecture(_JsonMixin):
    """A scratch CNN the user assembles: conv blocks, then a flatten or global-average head."""

    blocks: tuple[ConvBlock, ...] = (ConvBlock(32), ConvBlock(64))
    head: Literal["flatten", "gap"] = "flatten"
    dense_units: tuple[int, ...] = (128,)
    dropout: float = 0.0
    l2: float = 0.0


@dataclass(frozen=True)
class ModelSpec(_JsonMixin):
    """Which network to build: a preset name, ``custom``, or ``transfer:<backbone>``."""

    name: str = "tiny"
    custom: CustomArchitecture | None = None
    alpha: float = 0.35
    head_units: int = 128
    head_dropout: float = 0.2
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr_factor: float = 0.1
    weights: str | None = "imagenet"

    @property
    def is_transfer(self) -> bool:
        return self.name.startswith("transfer:")

    @property
    def backbone(self) -> str | None:
        return self.name.split(":", 1)[1] if self.is_transfer else None


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """Everything that defines a run; stored with it so the run can be repeated exactly."""

    data: str = "builtin:digits"
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    image_size: int = 32
    batch_size: int = 32
    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping_patience: int = 0
    early_stopping_monitor: str = "val_loss"
    restore_best: bool = True
    reduce_lr_patience: int = 0
    lr_decay_rate: float = 0.0
    class_weights: bool = False
    seed: int = 0
    deterministic: bool = False
    use_feature_cache: bool = True
    feature_cache_passes: int = 3
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"Unknown optimizer '{self.optimizer}': choose one of {', '.join(OPTIMIZERS)}.")
        if not 8 <= self.image_size <= 512:
            raise UserError("The image size must be between 8 and 512 pixels.")
        if not 1 <= self.batch_size <= 1024:
            raise UserError("The batch size must be between 1 and 1024.")
        if not 1 <= self.epochs <= 1000:
            raise UserError("The number of epochs must be between 1 and 1000.")
        if not 0 < self.learning_rate < 10:
            raise UserError("The learning rate must be a positive number below 10.")


# ---------------------------------------------------------------- changing a config by dotted paths


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


# ---------------------------------------------------------------- limits from the environment


def env_limit(value: int | None, env: str) -> int | None:
    """An explicit limit, else a positive integer from the environment variable ``env``, else None (off)."""
    if value is not None:
        return max(int(value), 0)
    text = os.environ.get(env, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None
