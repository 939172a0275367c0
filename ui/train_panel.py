"""The Train page's live panel of one run: header, Stop, progress, curves with their verdicts, outcome.

The render functions take a ``RunSnapshot`` and nothing else from the engine, so tests call them with
a canned snapshot; the page's one polling fragment (``ui.train_live``) calls them once a second.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import streamlit as st

from core.plots.training import learning_rate_chart, training_curves
from ui.common import (
    explain,
    format_duration,
    metric_card,
    set_current_run_id,
    source_name,
    status_mark,
    user_errors,
)
from ui.engine import get_manager, session_owner
from ui.verdicts import show_reading, snapshot_reading

STATUS_WORDS = {
    "queued": "waiting in the queue",
    "running": "training",
    "stopping": "stopping after this batch",
    "finished": "finished",
    "stopped": "stopped by you",
    "failed": "failed",
    "interrupted": "interrupted",
}


def progress_fraction(snap: Any) -> float:
    """Share of the run done, 0..1, counting the batches of the epoch in progress."""
    if snap.status == "finished":
        return 1.0
    total = max(int(snap.epochs_total or 0), 1)
    within = (snap.batch / snap.batches_per_epoch) if snap.batches_per_epoch else 0.0
    done = snap.epoch + (within if snap.status in ("running", "stopping") else 0.0)
    return max(0.0, min(1.0, done / total))


def progress_text(snap: Any) -> str:
    """``epoch 3 of 20 · batch 12 of 40`` while training; the outcome otherwise."""
    if snap.status in ("running", "stopping") and snap.epoch < snap.epochs_total:
        text = f"epoch {snap.epoch + 1} of {snap.epochs_total}"
        if snap.batches_per_epoch:
            text += f" · batch {snap.batch} of {snap.batches_per_epoch}"
        return text
    return f"{snap.epoch} of {snap.epochs_total} epochs done · {STATUS_WORDS.get(snap.status, snap.status)}"


def render_header(snap: Any) -> None:
    """The run's name, status dot and what it trains."""
    cfg = snap.config
    st.markdown(f"#### {status_mark(snap.status)} {snap.name or snap.run_id}")
    st.caption(
        f"Run `{snap.run_id}` · {STATUS_WORDS.get(snap.status, snap.status)} · model **{cfg.model.name}** on "
        f"**{source_name(cfg.data)}** · {cfg.image_size}×{cfg.image_size} px · batch {cfg.batch_size} · learning rate {cfg.learning_rate:g}"
    )


def render_progress(snap: Any, compact: bool = False) -> None:
    """Progress bar and the live numbers (epoch, speed, time left, best validation accuracy), each explained."""
    st.progress(progress_fraction(snap), text=progress_text(snap))
    elapsed = ((snap.finished or time.time()) - snap.started) if snap.started else None
    best_val = max((v for v in snap.history.get("val_accuracy", []) if v == v), default=None)
    speed = f"{snap.images_per_second:,.0f}" if snap.images_per_second else "—"
    cards = [("Epoch", f"{snap.epoch} / {snap.epochs_total}",
              "Epochs completed: one epoch is one pass over every training image.")]
    if not compact:
        cards.append(("Images per second", speed, "Training speed: how many images the model learns from each second."))
        if snap.active:
            cards.append(("Time left", format_duration(snap.eta_seconds),
                          "Estimated time until the last epoch ends, at the current speed."))
        else:
            cards.append(("Time taken", format_duration(elapsed), "From the start of training to its end."))
    cards.append(("Best validation accuracy", f"{best_val:.1%}" if best_val is not None else "—",
                  "How often the model is right on images it never trained on, at its best epoch so far."))
    for col, (label, value, meaning) in zip(st.columns(len(cards)), cards):
        with col:
            metric_card(label, value, meaning)
    if compact and snap.active:
        explain(f"{speed} images per second · about {format_duration(snap.eta_seconds)} left.")
    elif snap.active and elapsed is not None:
        explain(f"Training time so far: {format_duration(elapsed)}.")


def render_curves(snap: Any, teacher: bool, key: str) -> None:
    """Loss and accuracy curves (train vs validation) with the overfitting onset, and the verdicts in sentences."""
    reading = snapshot_reading(snap)
    fig = training_curves(snap.history, snap.batch_history, onset=reading.onset, teacher_mode=teacher)
    st.plotly_chart(fig, key=f"train_curves_{key}", config={"displaylogo": False})
    explain(
        "Solid blue: training (images the model learns from); dashed orange: validation (images it never "
        "trains on). The faint line is the training loss of each batch, averaged so the chart stays readable.",
        teacher="Blue: how well it does on the pictures it studies. Orange: on new pictures. "
        "When blue keeps getting better but orange gets worse, it is memorising.",
    )
    if not snap.history.get("loss"):
        st.caption("The verdicts on the curves (learning? overfitting?) start once the first epoch is in.")
    elif reading.onset is None:
        st.caption("This run has no validation pictures, so whether it overfits cannot be checked.")
    show_reading(reading)


def render_learning_rate(snap: Any, teacher: bool, key: str) -> None:
    """The learning rate per epoch and its current value."""
    lrs = [v for v in snap.history.get("lr", []) if v == v]
    if not lrs:
        st.caption(f"Learning rate: {snap.config.learning_rate:g} (the chart appears after the first epoch).")
        return
    st.plotly_chart(learning_rate_chart(snap.history, teacher_mode=teacher), key=f"train_lr_{key}",
                    config={"displaylogo": False})
    explain(f"Learning rate now: {lrs[-1]:.2g}. It is the size of each correction step; it shrinks when the "
            "validation loss stalls (if that option is on) so the model can settle.")


def render_outcome(snap: Any) -> None:
    """What happened: the test metrics of a finished run, or why it stopped or failed."""
    if snap.status == "failed":
        st.error(snap.message or "The run failed.")
    elif snap.status in ("stopped", "interrupted"):
        st.info(snap.message or f"The run was {STATUS_WORDS[snap.status]} after {snap.epoch} epochs.")
    elif snap.status == "queued":
        st.info("This run waits for the one before it to finish; it starts by itself.")
    result = snap.result or {}
    if snap.status != "finished" or "accuracy" not in result:
        return
    cols = st.columns(2)
    with cols[0]:
        metric_card("Test accuracy", f"{result['accuracy']:.1%}",
                    "How often the final model is right on the test images, kept aside until now.")
    with cols[1]:
        metric_card("Macro F1", f"{result.get('macro_f1', float('nan')):.3f}",
                    "Balance of precision and recall averaged over classes (1 is perfect); a weak class pulls it down.")
    if snap.message:
        st.caption(snap.message)
    evaluate_link(snap.run_id)


def evaluate_link(run_id: str) -> None:
    """A link to the run on the Evaluate page (absent when rendered outside the app's navigation)."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link("pages/evaluate.py", label="Open the full evaluation (confusion matrix, mistakes)",
                     icon=":material/fact_check:", query_params={"run": run_id})
    except StreamlitAPIException:  # a render test without st.navigation: there is no page to link to
        pass


def render_run(snap: Any, teacher: bool, key: str, compact: bool = False) -> None:
    """Everything about one run: header, Stop, progress, curves, learning rate, outcome."""
    render_header(snap)
    if snap.status == "finished":
        render_outcome(snap)  # the result first; how it got there below
    if snap.active:
        if st.button("Stop", key=f"train_stop_{snap.run_id}", type="primary", icon=":material/stop_circle:",
                     disabled=snap.status == "stopping", help="Stops after the current batch; the best model so far is kept."):
            get_manager().stop(snap.run_id)
            st.toast("Stopping after the current batch…")
    render_progress(snap, compact)
    render_curves(snap, teacher, key)
    if not compact:
        render_learning_rate(snap, teacher, key)
    if snap.status != "finished":
        render_outcome(snap)
        render_resume(snap)


def render_resume(snap: Any) -> None:
    """An interrupted or stopped run: resume it from its last checkpoint (same run), or run it again from epoch 1."""
    if snap.active or (snap.status not in ("interrupted", "stopped") and snap.resume_epoch is None):
        return
    cols = st.columns(2)
    if snap.resume_epoch is not None:
        after = snap.resume_epoch
        label = f"Resume from epoch {after + 1}" if after < snap.epochs_total else "Resume: evaluate the trained model"
        if cols[0].button(label, key=f"train_resume_{snap.run_id}", type="primary", icon=":material/play_circle:",
                          help=f"Continues this same run from the checkpoint saved after epoch {after}: "
                               "its curves so far are kept."):
            with user_errors():
                get_manager().resume(snap.run_id, owner=session_owner())
                st.rerun()
    else:
        cols[0].caption("There is no checkpoint to resume from (no epoch had finished), so it can only run again.")
    if cols[1].button("Run again from epoch 1", key=f"train_again_{snap.run_id}", icon=":material/replay:",
                      help="Queues a new run with exactly this configuration (seed included)."):
        with user_errors():
            from ui.repro import start_again

            new_id = start_again(snap.run_id, None)
            set_current_run_id(new_id)
            st.rerun()


def render_demo_lesson(snaps: Sequence[Any]) -> None:
    """One sentence comparing the plain and the regularised demo runs once both have curves."""
    finals = []
    for snap in snaps:
        train_acc = snap.history.get("accuracy") or []
        val_acc = snap.history.get("val_accuracy") or []
        if not train_acc or not val_acc:
            return
        finals.append((train_acc[-1], max(val_acc)))
    (t0, v0), (t1, v1) = finals[0], finals[1]
    so_far = "So far - " if any(s.active for s in snaps) else ""
    st.info(
        f"{so_far}Left: training accuracy {t0:.0%}, best validation accuracy {v0:.0%} - the gap is memorisation. "
        f"Right, with augmentation, dropout and early stopping: training {t1:.0%}, validation {v1:.0%}. "
        "Regularisation makes the training images harder to memorise, so the model has to learn what a digit looks like.",
        icon=":material/school:",
    )
