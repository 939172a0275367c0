"""Verdicts on a run in plain sentences: is it learning, did it start to overfit and from which epoch, is the
validation curve only noisy or the training unstable, are both accuracies too low, do validation and test agree.

Pure Python over a run's per-epoch history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` lists, NaN
or None for a missing value), so the live chart, the run summary (``python -m core train --json``), the
Evaluate page and the tests all read the same verdicts.

The curve verdicts replay the history one epoch at a time through latches with hysteresis: a verdict appears
only once its evidence has held for a few epochs and goes away only once the opposite evidence has held, so
the reading of the first n epochs is what the live chart said after epoch n, and appending epochs never makes
a verdict flip back and forth. ``tests/test_verdicts.py`` replays every prefix of recorded real runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

# Validation loss must climb this much above its lowest value (relative) before an epoch counts as a rise:
# epoch-to-epoch noise on a few hundred validation pictures is a few per cent.
RISE_TOLERANCE = 0.05
# Rises in a row before overfitting is declared. Two was measured to flip on the overfitting demo (a bump at
# epochs 7-8, then new lows until epoch 12) and on its regularised twin (bumps at epochs 35-36).
OVERFIT_EPOCHS = 3
RECOVER_EPOCHS = 2  # new lowest validation losses in a row that withdraw a declared overfitting
NEAR_CHANCE, CLEARLY_LEARNING = 0.1, 0.2  # shares of the way from chance to perfect accuracy (enter / leave)
FLAT, FALLING = 0.95, 0.9  # training loss over two epochs: above 95 % of its value is flat, below 90 % falls
MEMORISING_ACCURACY = 0.9  # "memorising" needs the model to get at least this share of its training pictures
LOW_ACCURACY = 0.7  # underfitting: below 70 % of the way from chance to perfect, on training and validation
SETBACK = 0.3  # an epoch that gives back 30 % of the training loss's progress so far is a setback
NOISE_WINDOW = 6  # epochs looked at for a wobbling validation curve

WARNING_KINDS = ("not_learning", "unstable", "overfitting", "underfitting", "val_test_gap")


@dataclass(frozen=True)
class Verdict:
    """One verdict: what kind, the epoch it is about (1-based), the sentence, and what to try."""

    kind: str  # not_learning unstable overfitting underfitting noisy_validation too_early learning val_test_gap
    epoch: int | None
    sentence: str
    advice: str = ""

    @property
    def warning(self) -> bool:
        """A verdict that asks for a change (shown as a warning), not a reassurance."""
        return self.kind in WARNING_KINDS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Onset:
    """What the chart marks: the lowest validation loss and, once declared, the overfitting region."""

    best_epoch: int  # epoch with the lowest validation loss (the model worth keeping)
    best_val_loss: float
    region: tuple[int, int] | None  # (declared onset, last epoch) while overfitting is declared
    overfitting: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Chance:
    """What guessing scores: always answering the biggest class, and the loss of answering the class shares."""

    accuracy: float
    loss: float


@dataclass(frozen=True)
class Reading:
    """A history read: the chart's marks and the verdicts, the most important first (``verdicts[0]``)."""

    onset: Onset | None
    verdicts: tuple[Verdict, ...] = ()

    @property
    def main(self) -> Verdict | None:
        return self.verdicts[0] if self.verdicts else None


def chance_level(class_counts: Sequence[float] | None = None, n_classes: int | None = None) -> Chance | None:
    """Chance level from the training split's class counts (or shares), else from the number of classes."""
    counts = [float(c) for c in class_counts or [] if c is not None and float(c) > 0]
    total = sum(counts)
    if len(counts) >= 2 and total > 0:
        shares = [c / total for c in counts]
        return Chance(max(shares), -sum(p * math.log(p) for p in shares))
    if n_classes and n_classes >= 2:
        return Chance(1.0 / n_classes, math.log(n_classes))
    return None


def _clean(values: Sequence[Any] | None) -> list[float]:
    """Floats with NaN/inf/None turned into NaN so positions stay aligned with epochs."""
    out = []
    for v in values or []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f if math.isfinite(f) else math.nan)
    return out


def _at(values: list[float], i: int) -> float:
    return values[i] if 0 <= i < len(values) else math.nan


def _ok(*values: float) -> bool:
    return all(not math.isnan(v) for v in values)


@dataclass
class _Latch:
    """A verdict with hysteresis: on after ``enter`` epochs of evidence in a row, off after ``leave`` against."""

    enter: int
    leave: int
    on: bool = False
    since: int | None = None  # the epoch (1-based) it was declared
    run: int = 0

    def step(self, epoch: int, evidence_on: bool, evidence_off: bool) -> None:
        self.run = self.run + 1 if (evidence_off if self.on else evidence_on) else 0
        if not self.on and self.run >= self.enter:
            self.on, self.since, self.run = True, epoch, 0
        elif self.on and self.run >= self.leave:
            self.on, self.since, self.run = False, None, 0


@dataclass
class _Replay:
    """The state after replaying some epochs of a history."""

    train: list[float]
    val: list[float]
    acc: list[float]
    val_acc: list[float]
    chance: Chance | None
    best: int | None = None  # index of the lowest validation loss so far
    above: int = 0  # epochs in a row with validation loss clearly above its lowest
    onset: int | None = None  # index of the best epoch when overfitting was declared
    onset_val: float = math.nan
    new_lows: int = 0
    not_learning: _Latch = field(default_factory=lambda: _Latch(2, 2))
    underfitting: _Latch = field(default_factory=lambda: _Latch(2, 2))
    unstable: _Latch = field(default_factory=lambda: _Latch(1, 1))
    noisy: _Latch = field(default_factory=lambda: _Latch(2, 2))

    def threshold(self) -> float:
        best = self.val[self.best]  # type: ignore[index]
        return best + max(abs(best) * RISE_TOLERANCE, 1e-3)

    def step(self, i: int) -> None:
        epoch = i + 1
        self._overfitting(i)
        self.not_learning.step(epoch, i >= 2 and self._flat(i) and self._near(i, NEAR_CHANCE),
                               not self._near(i, CLEARLY_LEARNING) or self._falling(i))
        low, gone = self._low(i, 0.0), not self._low(i, 0.05)
        self.underfitting.step(epoch, i >= 3 and low and self._flat(i, 3, 0.97) and not self._near(i, NEAR_CHANCE),
                               gone or self._falling(i, 3))
        setbacks = sum(self._setback(j) for j in range(max(i - 2, 1), i + 1))
        self.unstable.step(epoch, setbacks >= 2, setbacks == 0)
        ups, downs = self._wobbles(i)
        self.noisy.step(epoch, ups >= 2 and downs >= 2, ups == 0)

    # ------------------------------------------------------------ evidence of one epoch

    def _overfitting(self, i: int) -> None:
        v, t = _at(self.val, i), _at(self.train, i)
        if math.isnan(v):
            return
        if self.best is None or v < self.val[self.best]:
            self.best, self.above = i, 0
            self.new_lows += 1
            if self.onset is not None and v < self.onset_val and self.new_lows >= RECOVER_EPOCHS:
                self.onset = None  # validation recovered: it was a bump, not overfitting
            return
        self.new_lows = 0
        tb = _at(self.train, self.best)
        improving = _ok(t, tb) and t < tb
        self.above = self.above + 1 if v > self.threshold() and improving else 0
        if self.onset is None and self.above >= OVERFIT_EPOCHS:
            self.onset, self.onset_val = self.best, self.val[self.best]

    def _near(self, i: int, margin: float) -> bool:
        """Training accuracy near the majority share, or validation loss (and accuracy) at guessing level."""
        c = self.chance
        if c is None:
            return False
        line = c.accuracy + margin * (1 - c.accuracy)
        acc, v, va = _at(self.acc, i), _at(self.val, i), _at(self.val_acc, i)
        if _ok(acc) and acc <= line:
            return True
        return _ok(v) and v >= (1 - margin) * c.loss and (math.isnan(va) or va <= line)

    def _flat(self, i: int, back: int = 2, share: float = FLAT) -> bool:
        now, before = _at(self.train, i), _at(self.train, i - back)
        return _ok(now, before) and now >= share * before

    def _falling(self, i: int, back: int = 2) -> bool:
        now, before = _at(self.train, i), _at(self.train, i - back)
        return _ok(now, before) and now < FALLING * before

    def _low(self, i: int, extra: float) -> bool:
        """Training and validation accuracy both below LOW_ACCURACY (+ ``extra``) of the way to perfect."""
        c, acc, va = self.chance, _at(self.acc, i), _at(self.val_acc, i)
        if c is None or not _ok(acc, va):
            return False
        line = c.accuracy + (LOW_ACCURACY + extra) * (1 - c.accuracy)
        return acc < line and va < line

    def _setback(self, j: int) -> bool:
        """Epoch j's training loss gave back a good share of the progress made before it."""
        earlier = [x for x in self.train[:j] if not math.isnan(x)]
        now = _at(self.train, j)
        if len(earlier) < 1 or math.isnan(now):
            return False
        progress = earlier[0] - min(earlier)
        return progress > 0 and now - min(earlier) > SETBACK * progress

    def _wobbles(self, i: int) -> tuple[int, int]:
        """Clear rises and falls of validation loss from one epoch to the next in the recent window."""
        if self.best is None:
            return 0, 0
        step = max(abs(self.val[self.best]) * RISE_TOLERANCE, 1e-3)
        ups = downs = 0
        for j in range(max(i - NOISE_WINDOW + 2, 1), i + 1):
            a, b = _at(self.val, j - 1), _at(self.val, j)
            if _ok(a, b):
                ups += b - a > step
                downs += a - b > step
        return ups, downs


def read_curves(history: Mapping[str, Sequence[Any]], class_counts: Sequence[float] | None = None,
                n_classes: int | None = None, n_val: int | None = None, over: bool = False) -> Reading:
    """Replay ``history`` epoch by epoch; the chart's marks and the verdicts after its last epoch.

    ``class_counts`` (the training split's, or shares) or ``n_classes`` give the chance level; without
    them there is no "not learning" or underfitting verdict. ``n_val`` only makes a sentence more precise;
    ``over`` (training has ended) only changes the wording of a verdict that waits for more epochs.
    """
    state = _Replay(_clean(history.get("loss")), _clean(history.get("val_loss")), _clean(history.get("accuracy")),
                    _clean(history.get("val_accuracy")), chance_level(class_counts, n_classes))
    epochs = max(len(state.train), len(state.val))
    for i in range(epochs):
        state.step(i)
    if epochs == 0:
        return Reading(None)
    onset = None
    if state.best is not None:
        region = (state.onset + 1, len(state.val)) if state.onset is not None else None
        onset = Onset(state.best + 1, state.val[state.best], region, region is not None)
    lr = _clean(history.get("lr"))
    return Reading(onset, tuple(_verdicts(state, epochs, n_val, lr[-1] if lr else math.nan, over)))


# ---------------------------------------------------------------- the sentences


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _verdicts(s: _Replay, epochs: int, n_val: int | None, lr: float, over: bool) -> list[Verdict]:
    """Every verdict the replay holds now, the one that matters most first."""
    out: list[Verdict] = []
    if s.not_learning.on:
        out.append(_not_learning(s, epochs, lr))
    if s.unstable.on:
        out.append(Verdict("unstable", s.unstable.since,
                           f"The training loss itself jumps back up (epoch {epochs}: {s.train[-1]:.3g}, after "
                           f"reaching {min(x for x in s.train if x == x):.3g}): the steps are too big for the model "
                           "to settle, so the training is unstable.",
                           _lower_lr_advice(lr) + " A bigger batch also smooths the steps."))
    if s.onset is not None:
        out.append(_overfitting(s))
    if s.underfitting.on and not s.not_learning.on:
        out.append(Verdict("underfitting", s.underfitting.since,
                           f"Training accuracy ({_pct(s.acc[-1])}) and validation accuracy ({_pct(s.val_acc[-1])}) "
                           "are both low and the training loss has stopped falling: the model is underfitting - it "
                           "cannot tell the classes apart well even on the pictures it trains on.",
                           "Try a bigger model or bigger images, more epochs, less regularisation (dropout, "
                           "augmentation), or a transfer model."))
    if s.noisy.on and s.onset is None:
        out.append(_noisy(s, n_val))
    if not out and s._near(epochs - 1, NEAR_CHANCE):
        out.append(_too_early(s, epochs, over))
    elif not out and s.best is not None:
        out.append(_learning(s, epochs))
    return out


def _too_early(s: _Replay, epochs: int, over: bool) -> Verdict:
    """Still at guessing level, but not for long enough to say it is not learning."""
    acc, c = _at(s.acc, epochs - 1), s.chance
    assert c is not None
    level = f" ({_pct(acc)} of the training pictures right)" if _ok(acc) else ""
    after = f"After {epochs} epoch{'s' if epochs > 1 else ''} the model"
    if over:
        return Verdict("too_early", None, f"{after} was still at guessing level{level}: too few epochs to tell "
                                          "whether it would have started learning.",
                       "Train it for more epochs; if it stays at guessing level, lower the learning rate.")
    return Verdict("too_early", None, f"{after} is still at guessing level{level}: the next epochs show whether it "
                                      "starts learning.")


def _lower_lr_advice(lr: float) -> str:
    if _ok(lr) and lr > 0:
        return f"Try a learning rate 10 times lower ({lr / 10:.2g} instead of {lr:.2g})."
    return "Try a learning rate 10 times lower."


def _not_learning(s: _Replay, epochs: int, lr: float) -> Verdict:
    c = s.chance
    assert c is not None
    acc, v, va = _at(s.acc, epochs - 1), _at(s.val, epochs - 1), _at(s.val_acc, epochs - 1)
    if _ok(acc) and acc <= c.accuracy + CLEARLY_LEARNING * (1 - c.accuracy):
        text = (f"After {epochs} epochs the model is not learning: it gets {_pct(acc)} of its training pictures "
                f"right, about what always answering the most common class gets ({_pct(c.accuracy)}).")
    else:
        text = (f"After {epochs} epochs the model is not learning anything that carries over to new pictures: "
                "on the validation pictures it does no better than guessing.")
    if _ok(v) and v >= (1 - CLEARLY_LEARNING) * c.loss:
        text += f" Its validation loss stays at {v:.3g}, the level of pure guessing ({c.loss:.3g})."
    elif _ok(va):
        text += f" On the validation pictures it is right {_pct(va)} of the time."
    advice = (_lower_lr_advice(lr) + " Or use less regularisation (dropout, augmentation), bigger images, more "
              "epochs, or a transfer model (a network already trained on millions of photos).")
    return Verdict("not_learning", s.not_learning.since, text, advice)


def _overfitting(s: _Replay) -> Verdict:
    b = s.onset
    assert b is not None
    epoch, last = b + 1, len(s.val) - 1
    end = max((j for j in range(b + 1, len(s.val)) if _ok(s.val[j])), default=last)
    rise = (f"training loss keeps falling ({s.train[b]:.3g} → {_at(s.train, end):.3g}) while validation loss rises "
            f"({s.val[b]:.3g} → {s.val[end]:.3g})")
    acc = _at(s.acc, end)
    keep = f"the model from epoch {epoch} is the one to keep."
    if _ok(acc) and acc >= MEMORISING_ACCURACY:
        text = (f"From epoch {epoch} on the model overfits: {rise}. With {_pct(acc)} of its training pictures right "
                f"it is memorising them instead of learning what carries over to new ones; {keep}")
    elif _ok(acc):
        text = (f"From epoch {epoch} on the model starts to overfit: {rise}. Training accuracy is only {_pct(acc)}, "
                "so it is not memorising the pictures yet, but what it learns now are details of the training "
                f"pictures that do not carry over to new ones; {keep}")
    else:
        text = (f"From epoch {epoch} on the model overfits: {rise}. It fits the training pictures better and better "
                f"but new ones worse; {keep}")
    return Verdict("overfitting", epoch, text,
                   f"Keep the model from epoch {epoch} (early stopping does this for you); augmentation, dropout or "
                   "more training pictures make the next run overfit later.")


def _noisy(s: _Replay, n_val: int | None) -> Verdict:
    recent = [x for x in s.val[-NOISE_WINDOW:] if _ok(x)]
    swing = (max(recent) - min(recent)) / max(abs(min(recent)), 1e-9)
    few = f"with only {n_val} validation pictures " if n_val and n_val < 1000 else ""
    best = s.best if s.best is not None else 0
    trend = (f"it keeps reaching new lows (the lowest so far is in epoch {best + 1}, {s.val[best]:.3g}), so the model "
             "is still improving" if len(s.val) - best <= NOISE_WINDOW else
             f"it stays around its lowest value (epoch {best + 1}, {s.val[best]:.3g}) without a trend")
    return Verdict("noisy_validation", s.noisy.since,
                   f"Validation loss goes up and down from epoch to epoch (by up to {swing:.0%} lately), but {trend}: "
                   f"{few}the ups and downs are noise in the measurement, not overfitting.",
                   "More validation pictures make the curve smoother; early stopping with some patience keeps the "
                   "best epoch anyway.")


def _learning(s: _Replay, epochs: int) -> Verdict:
    best = s.best
    assert best is not None
    epoch, value = best + 1, s.val[best]
    if epoch == len(s.val):
        text = (f"Validation loss is at its lowest so far in epoch {epoch} ({value:.3g}): the model is still "
                "improving on images it never trained on, so no sign of overfitting yet.")
    elif s.above:
        text = (f"Validation loss was lowest in epoch {epoch} ({value:.3g}) and has been higher for {s.above} "
                f"epoch{'s' if s.above > 1 else ''} while training loss kept falling: not overfitting yet - that "
                f"takes {OVERFIT_EPOCHS} epochs in a row.")
    else:
        text = (f"Validation loss was lowest in epoch {epoch} ({value:.3g}) and has stayed close to it since: no "
                "clear overfitting yet.")
    if s._low(epochs - 1, 0.0) and not s._flat(epochs - 1, 2, 0.97):
        text += f" Training accuracy is still low ({_pct(s.acc[-1])}) but rising: more epochs should help."
    return Verdict("learning", None, text)


# ---------------------------------------------------------------- validation vs test

GAP_POINTS = 0.03  # a gap under 3 accuracy points is not worth a sentence, whatever the picture counts
FEW_PICTURES_NOISE = 0.05  # validation alone uncertain by 5 points or more (two standard errors): too few pictures


def gap_verdict(val_accuracy: float | None, test_accuracy: float | None, n_val: int, n_test: int,
                facts: Mapping[str, Any] | None = None) -> Verdict | None:
    """A sentence when validation and test accuracy differ by more than a few points, with the likely reasons.

    ``facts`` (all optional): ``test_from_folder`` (the dataset brought its own test pictures),
    ``near_copies_in_test`` / ``near_copies_in_val`` (pictures there that are copies or near-copies of
    training ones; None or absent: not looked for), ``near_copies_set_aside``.
    """
    if val_accuracy is None or test_accuracy is None or n_val <= 0 or n_test <= 0:
        return None
    val, test = float(val_accuracy), float(test_accuracy)
    if not _ok(val, test):
        return None
    # Two accuracies measured on n_val and n_test independent pictures differ by chance alone with a standard
    # error of sqrt(p(1-p)(1/n_val + 1/n_test)); about 95 % of such chance gaps stay within two of them, so
    # only a larger gap (and at least GAP_POINTS) has a cause worth naming. With 300 + 300 pictures at 80 %
    # that is 6.5 points; with 30 + 30 it is 20, and nothing smaller is said about such a run.
    p = (val * n_val + test * n_test) / (n_val + n_test)
    noise = 2 * math.sqrt(max(p * (1 - p), 1e-6) * (1 / n_val + 1 / n_test))
    if abs(test - val) <= max(GAP_POINTS, noise):
        return None
    facts = facts or {}
    val_noise = 2 * math.sqrt(max(val * (1 - val), 1e-6) / n_val)
    text = (f"Validation accuracy ({_pct(val)}, {n_val} pictures) and test accuracy ({_pct(test)}, {n_test} "
            f"pictures) differ by {abs(test - val) * 100:.0f} points, more than chance alone gives with this many "
            f"pictures (up to about {noise * 100:.0f}).")
    reasons: list[str] = []
    copies = facts.get("near_copies_in_test" if test > val else "near_copies_in_val")
    if copies:
        where = "test" if test > val else "validation"
        reasons.append(f"{int(copies)} {where} picture{'s are' if copies > 1 else ' is'} copies or near-copies of "
                       "training pictures, which the model has in effect already seen")
    elif copies is None:
        reasons.append(f"the {'test' if test > val else 'validation'} pictures may include near-copies of training "
                       "pictures (the same photo cropped, resized or saved again), which flatter a score and which "
                       "this run did not look for")
    if test < val and facts.get("test_from_folder"):
        reasons.append("the test pictures come from the dataset's own test folder, which may have been collected "
                       "differently (another source, camera, background or time) from the training pictures")
    if val_noise >= FEW_PICTURES_NOISE:
        reasons.append(f"there are few validation pictures: with {n_val} of them validation accuracy alone is "
                       f"uncertain by about ±{val_noise * 100:.0f} points")
    if test < val:
        reasons.append("the kept epoch was chosen because it did best on the validation pictures, which flatters "
                       "validation a little")
    text += " Likely reasons: " + "; ".join(reasons or ["the validation and test pictures differ in what they show "
                                                        "(check where each came from)"]) + "."
    aside = int(facts.get("near_copies_set_aside") or 0)
    if aside:
        text += (f" {aside} near-cop{'ies' if aside > 1 else 'y'} of training pictures were set aside before "
                 "validating and testing, so they flatter neither score.")
    return Verdict("val_test_gap", None, text,
                   "Look for near-copies between training and test pictures, check that the test pictures were taken "
                   "the way the training ones were, and use more validation pictures if there are few.")


# ---------------------------------------------------------------- a whole run


def read_run(history: Mapping[str, Sequence[Any]], split: Mapping[str, Any] | None = None,
             result: Mapping[str, Any] | None = None) -> Reading:
    """``read_curves`` with what a run knows: ``split`` (its split facts, ``core.data.splits.split_facts``:
    ``sizes``, ``train_class_counts``, ...) and ``result`` (its test result, once training has ended)."""
    split, result = split or {}, result or {}
    return read_curves(history, split.get("train_class_counts"), len(result.get("classes") or []) or None,
                       (split.get("sizes") or {}).get("val"), over="accuracy" in result)


def run_verdicts(history: Mapping[str, Sequence[Any]], split: Mapping[str, Any] | None = None,
                 result: Mapping[str, Any] | None = None) -> list[Verdict]:
    """The verdicts of a run: its curves, then validation vs test once it has a test result.

    ``split`` is the run's split facts (``result["split"]``: ``sizes``, ``train_class_counts``,
    ``test_from_folder``, and, when near-copy detection filled them, ``near_copies_in_test`` and
    ``near_copies_set_aside``); ``result`` its test result.
    """
    out = list(read_run(history, split, result).verdicts)
    gap = val_test_gap(history, split, result)
    return out + ([gap] if gap is not None else [])


def val_test_gap(history: Mapping[str, Sequence[Any]], split: Mapping[str, Any] | None,
                 result: Mapping[str, Any] | None) -> Verdict | None:
    """``gap_verdict`` for a run scored on its test split: the kept epoch's validation accuracy vs the test's."""
    split, result = split or {}, result or {}
    if result.get("evaluated_on") != "test" or "accuracy" not in result:
        return None
    sizes = split.get("sizes") or {}
    val = result.get("val_accuracy", kept_val_accuracy(history, result.get("best_epoch")))
    return gap_verdict(val, result["accuracy"], int(sizes.get("val") or 0),
                       int(sizes.get("test") or result.get("n_images") or 0), split)


def kept_val_accuracy(history: Mapping[str, Sequence[Any]], epoch: int | None) -> float | None:
    """Validation accuracy at ``epoch`` (1-based), None when it was not recorded."""
    values = _clean(history.get("val_accuracy"))
    value = _at(values, int(epoch) - 1) if epoch else math.nan
    return None if math.isnan(value) else value
