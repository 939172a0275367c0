"""Reading training curves: where the model started to overfit, in numbers and in one sentence.

Pure Python over a run's per-epoch history (``loss``, ``val_loss`` ... lists), so the Train and
Evaluate pages, the CLI and the tests all agree on the same onset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

# Validation loss must climb this much above its minimum (relative) before we call it a rise:
# epoch-to-epoch noise on small validation sets is a few per cent.
RISE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Onset:
    """The overfitting onset of one history (epochs are 1-based, as people count them)."""

    best_epoch: int  # epoch with the lowest validation loss (the model worth keeping)
    best_val_loss: float
    region: tuple[int, int] | None  # epochs where training loss still falls while validation loss rises
    overfitting: bool
    sentence: str  # what the chart shows, for a non-specialist

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(values: Sequence[float] | None) -> list[float]:
    """Floats with NaN/inf/None turned into NaN so positions stay aligned with epochs."""
    out = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f if math.isfinite(f) else math.nan)
    return out


def _argmin(values: list[float]) -> int | None:
    """Index of the smallest finite value (first one on ties), or None when there is none."""
    best = None
    for i, v in enumerate(values):
        if not math.isnan(v) and (best is None or v < values[best]):
            best = i
    return best


def overfitting_onset(history: Mapping[str, Sequence[float]]) -> Onset | None:
    """Find the best epoch and the divergence region; None when there is no validation loss yet."""
    val = _clean(history.get("val_loss"))
    train = _clean(history.get("loss"))
    best = _argmin(val)
    if best is None:
        return None
    best_val = val[best]
    best_epoch = best + 1
    threshold = best_val + max(abs(best_val) * RISE_TOLERANCE, 1e-3)
    # Epochs after the best one where validation clearly rose and training loss is below its value
    # at the best epoch, i.e. the model kept fitting the training set while generalising worse.
    diverging = [
        i
        for i in range(best + 1, len(val))
        if not math.isnan(val[i])
        and val[i] > threshold
        and i < len(train)
        and not math.isnan(train[i])
        and best < len(train)
        and train[i] < train[best]
    ]
    if diverging:
        end = diverging[-1]
        sentence = (
            f"From epoch {best_epoch} on the model overfits: training loss keeps falling "
            f"({train[best]:.3g} → {train[end]:.3g}) while validation loss rises "
            f"({best_val:.3g} → {val[end]:.3g}). It is memorising the training images instead of "
            f"learning what carries over to new ones; the model from epoch {best_epoch} is the one to keep."
        )
        return Onset(best_epoch, best_val, (best_epoch, end + 1), True, sentence)
    return Onset(best_epoch, best_val, None, False, _calm_sentence(val, train, best))


def _calm_sentence(val: list[float], train: list[float], best: int) -> str:
    """The sentence when there is no divergence (yet)."""
    best_epoch, last = best + 1, len(val)
    if best_epoch == last:
        return (
            f"Validation loss is at its lowest so far in epoch {best_epoch} ({val[best]:.3g}): "
            "the model is still improving on images it never trained on, so no sign of overfitting yet."
        )
    rose = [v for v in val[best + 1 :] if not math.isnan(v) and v > val[best] * (1 + RISE_TOLERANCE)]
    if rose and best < len(train) and train and not math.isnan(train[-1]) and train[-1] >= train[best]:
        return (
            f"Validation loss was lowest in epoch {best_epoch} ({val[best]:.3g}) and then rose, but "
            "training loss rose too: that is unstable training (try a lower learning rate), not overfitting."
        )
    return (
        f"Validation loss was lowest in epoch {best_epoch} ({val[best]:.3g}) and has stayed close to it "
        "since: no clear overfitting yet."
    )
