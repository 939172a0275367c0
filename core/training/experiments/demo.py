"""The overfitting demo: a run that memorises on purpose, and its regularised twin, for the classroom lesson.

About 9 training images a class, a big dense head, no regularisation; the validation and test splits stay
large so the validation curve is smooth enough to read. Digits, not shapes: measured on a 2-core CPU,
shapes (random colours) with a handful of images a class stay at chance level with or without
regularisation, so there is no lesson; digits overfit within ~30 s (validation loss turns up near
epoch 12) and the regularised twin keeps improving. The Train page and the benchmark both use this.
"""

from __future__ import annotations

from core.config import AugmentConfig, ConvBlock, CustomArchitecture, ModelSpec, SplitConfig, TrainConfig

DEMO_GROUP = "overfit-demo"  # the prefix of every demo pair's group id
DEMO_SOURCE = "builtin:digits"
DEMO_SPLIT = SplitConfig(val_fraction=0.3, test_fraction=0.2, seed=0, train_fraction=0.1)
DEMO_EPOCHS = 40


def demo_config(regularised: bool, group: str = "") -> TrainConfig:
    """The overfitting demo run; ``regularised`` adds augmentation, dropout and early stopping."""
    base = TrainConfig(
        data=DEMO_SOURCE,
        split=DEMO_SPLIT,
        model=ModelSpec(name="overfit_demo"),
        image_size=32,
        batch_size=16,
        epochs=DEMO_EPOCHS,
        learning_rate=1e-3,
        augment=AugmentConfig(),
        early_stopping_patience=0,
        seed=0,
        name="Overfitting demo: few images, big head",
        group=group,
    )
    if not regularised:
        return base
    # The same layers as the overfit_demo preset, built with the custom builder to add dropout.
    same_net_with_dropout = CustomArchitecture(
        blocks=(ConvBlock(8), ConvBlock(16)), head="flatten", dense_units=(512, 256), dropout=0.3
    )
    return base.replace(
        model=ModelSpec(name="custom", custom=same_net_with_dropout),
        # Small turns, zooms and shifts; no flips: a mirrored 2 or 7 is not a digit.
        augment=AugmentConfig(rotation=0.05, zoom=0.1, translation=0.1),
        early_stopping_patience=8,
        restore_best=True,
        name="Overfitting demo + augmentation, dropout, early stopping",
    )
