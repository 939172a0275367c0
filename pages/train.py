"""Train: choose an architecture and hyper-parameters, start and stop a run, watch it learn live.

Layout, top to bottom: the overfitting demo buttons, the live panel of the run in the URL (one
polling fragment: progress, curves with the overfitting onset, learning rate, Stop), then the form
for a new run (data, architecture with its live layer table, hyper-parameters, Start).
The render functions take a ``RunSnapshot`` and nothing else from the engine, so tests call them
with a canned snapshot; the page body runs only under Streamlit (``__name__ == "__main__"``).
"""

from __future__ import annotations

import ui  # noqa: F401  (first: see ui/__init__.py)

import time
from typing import Any, Sequence

import pandas as pd
import streamlit as st

from core import plots
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
from core.curves import overfitting_onset
from core.errors import UserError
from ui.common import (
    advanced,
    current_data_source,
    current_run_id,
    current_split,
    explain,
    format_duration,
    metric_card,
    set_current_run_id,
    set_data_source,
    status_mark,
    teacher_mode,
    user_errors,
)
from ui.engine import get_manager, get_store, load_dataset_cached, session_owner
from ui.data_checks import pretraining_checks
from ui.lab import experiments_section

POLL_SECONDS = 1.0
DEMO_GROUP = "overfit-demo"
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
IMAGE_SIZES = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224)
BATCH_SIZES = (8, 16, 32, 64, 128)
ALPHAS = (0.35, 0.5, 0.75, 1.0)
ARCH_KINDS = ("Preset", "Build your own", "Transfer learning")
STATUS_WORDS = {
    "queued": "waiting in the queue",
    "running": "training",
    "stopping": "stopping after this batch",
    "finished": "finished",
    "stopped": "stopped by you",
    "failed": "failed",
    "interrupted": "interrupted",
}

# The overfitting demo: ~9 training images a class, a big dense head, no regularisation. The
# validation and test splits stay large so the validation curve is smooth enough to read. Digits,
# not shapes: measured on a 2-core CPU, shapes (random colours) with a handful of images a class
# stay at chance level with or without regularisation, so there is no lesson; digits overfit
# within ~30 s (validation loss turns up near epoch 12) and the regularised twin keeps improving.
DEMO_SOURCE = "builtin:digits"
DEMO_SPLIT = SplitConfig(val_fraction=0.3, test_fraction=0.2, seed=0, train_fraction=0.1)
DEMO_EPOCHS = 40


def demo_config(regularised: bool, group: str) -> TrainConfig:
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


# ---------------------------------------------------------------- live panel (pure renders)


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
        f"**{cfg.data}** · {cfg.image_size}×{cfg.image_size} px · batch {cfg.batch_size} · learning rate {cfg.learning_rate:g}"
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
    """Loss and accuracy curves (train vs validation) with the overfitting onset and its sentence."""
    onset = overfitting_onset(snap.history)
    fig = plots.training_curves(snap.history, snap.batch_history, onset=onset, teacher_mode=teacher)
    st.plotly_chart(fig, key=f"train_curves_{key}", config={"displaylogo": False})
    explain(
        "Solid blue: training (images the model learns from); dashed orange: validation (images it never "
        "trains on). The faint line is the training loss of each batch, averaged so the chart stays readable.",
        teacher="Blue: how well it does on the pictures it studies. Orange: on new pictures. "
        "When blue keeps getting better but orange gets worse, it is memorising.",
    )
    if onset is None:
        st.caption("The overfitting check starts once the first epoch's validation loss is in.")
    elif onset.overfitting:
        st.warning(onset.sentence, icon=":material/trending_up:")
    else:
        st.info(onset.sentence, icon=":material/check_circle:")


def render_learning_rate(snap: Any, teacher: bool, key: str) -> None:
    """The learning rate per epoch and its current value."""
    lrs = [v for v in snap.history.get("lr", []) if v == v]
    if not lrs:
        st.caption(f"Learning rate: {snap.config.learning_rate:g} (the chart appears after the first epoch).")
        return
    st.plotly_chart(plots.learning_rate_chart(snap.history, teacher_mode=teacher), key=f"train_lr_{key}",
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


# ---------------------------------------------------------------- live panel (the one polling fragment)


def watched_runs() -> list[str]:
    """The run in the URL (plus its demo partner), else the newest active run; [] when there is none."""
    manager = get_manager()
    run_id = current_run_id()
    if run_id and manager.snapshot(run_id) is None:
        st.warning(f"There is no run '{run_id}' any more (it may have been deleted). Start a new one below.")
        set_current_run_id(None)
        run_id = None
    if not run_id:
        # Experiment groups (lab, grid search) have their own panel: attach to plain and demo runs only.
        active = [s for s in manager.active() if not s.group or s.group.startswith(DEMO_GROUP)]
        if not active:
            return []
        run_id = active[-1].run_id
        set_current_run_id(run_id)
    record = get_store().get(run_id)
    if record is not None and record.group.startswith(DEMO_GROUP):
        pair = sorted((r for r in get_store().list() if r.group == record.group), key=lambda r: r.created)
        if len(pair) >= 2:  # the plain demo on the left, the newest re-run on the right
            return [pair[0].run_id, pair[-1].run_id]
    return [run_id]


def live_panel(run_ids: list[str]) -> None:
    """Poll the engine once a second while a watched run is active; otherwise draw once."""
    manager = get_manager()
    active = any((s := manager.snapshot(r)) is not None and s.active for r in run_ids)
    st.session_state["train_polling"] = active
    st.fragment(run_every=POLL_SECONDS if active else None)(_live_fragment)(tuple(run_ids))


def _live_fragment(run_ids: tuple[str, ...]) -> None:
    """The fragment body: snapshots in, charts out; a full rerun when the last active run ends."""
    manager = get_manager()
    snaps = [s for s in (manager.snapshot(r) for r in run_ids) if s is not None]
    if not snaps:
        st.info("The run you were watching has been deleted.")
        return
    teacher = teacher_mode()
    if len(snaps) == 1:
        render_run(snaps[0], teacher, key="main")
    else:
        st.markdown("### The overfitting lesson, side by side")
        cols = st.columns(2)
        for i, (col, snap) in enumerate(zip(cols, snaps)):
            with col:
                render_run(snap, teacher, key=f"demo{i}", compact=True)
        render_demo_lesson(snaps)
    still_active = any(s.active for s in snaps)
    if st.session_state.get("train_polling") and not still_active:
        # The run just ended: redraw the whole app once so polling stops and the sidebar updates.
        st.session_state["train_polling"] = False
        st.rerun()


# ---------------------------------------------------------------- the overfitting demo


def demo_section() -> None:
    """Two buttons for the classroom lesson: overfit on purpose, then fix it."""
    st.subheader("Overfitting demo")
    explain(
        f"Trains the `overfit_demo` network (a big dense head) on {DEMO_SOURCE} with only "
        f"{DEMO_SPLIT.train_fraction:.0%} of the training images (about 9 a class) and no augmentation: within a minute the "
        "training loss keeps falling while the validation loss turns up. The second button trains the same "
        "network with augmentation, dropout and early stopping, shown side by side.",
        teacher="Step 1 makes the model memorise a handful of pictures. Step 2 shows how to stop it memorising.",
    )
    cols = st.columns(2)
    with cols[0]:
        if st.button("1 · Run the overfitting demo", key="train_demo_plain", icon=":material/play_arrow:",
                     width="stretch"):
            _start_demo(regularised=False)
    with cols[1]:
        if st.button("2 · Re-run with augmentation + dropout + early stopping", key="train_demo_regularised",
                     icon=":material/shield:", width="stretch"):
            _start_demo(regularised=True)


def _start_demo(regularised: bool) -> None:
    """Start a demo run; the regularised one joins the group of the latest plain one for the side-by-side."""
    group = f"{DEMO_GROUP}-{int(time.time())}"
    if regularised:
        plain = [r for r in get_store().list() if r.group.startswith(DEMO_GROUP)]
        if plain:
            group = plain[0].group  # newest first
    with user_errors():
        config = demo_config(regularised, group)
        run_id = get_manager().start(config, name=config.name, owner=session_owner())
        set_current_run_id(run_id)
        st.rerun()


# ---------------------------------------------------------------- a new run: data


def data_picker() -> tuple[str, SplitConfig]:
    """The dataset (chosen on the Data page by default) and its split settings."""
    from core.datasets import list_builtin

    current = current_data_source()
    builtins = {f"builtin:{b.name}": b.description for b in list_builtin()}
    options = list(dict.fromkeys([current, *builtins]))
    source = st.selectbox(
        "Dataset", options, index=0, key="train_data",
        format_func=lambda s: f"{s} - {builtins[s]}" if s in builtins else s,
        help="Upload a zip or point at a folder on the Data page; it then appears here.",
    )
    if source != current:
        set_data_source(source)
    split = current_split()
    explain(
        f"Split: {1 - split.val_fraction - split.test_fraction:.0%} training, {split.val_fraction:.0%} validation, "
        f"{split.test_fraction:.0%} test (seed {split.seed}"
        + (f", at most {split.limit_per_class} images a class" if split.limit_per_class else "")
        + "). Change it on the Data page."
    )
    return source, split


# ---------------------------------------------------------------- a new run: architecture


@st.cache_data(show_spinner=False)
def _model_infos() -> list[dict]:
    """The architecture registry as plain dicts (cached: it never changes while the app runs)."""
    from core.models import list_models

    return [m.to_dict() for m in list_models()]


def architecture_picker() -> tuple[ModelSpec, str]:
    """Preset, custom builder or transfer backbone; returns the spec and the kind chosen."""
    kind = st.segmented_control("Architecture", ARCH_KINDS, default=ARCH_KINDS[0], key="train_arch_kind",
                                persist_state="session") or ARCH_KINDS[0]
    infos = _model_infos()
    if kind == "Preset":
        presets = [m for m in infos if m["kind"] == "scratch"]
        names = [m["name"] for m in presets]
        name = st.selectbox("Preset", names, index=names.index("tiny") if "tiny" in names else 0,
                            key="train_preset", persist_state="session")
        explain(next(m["description"] for m in presets if m["name"] == name))
        return ModelSpec(name=name), kind
    if kind == "Build your own":
        return ModelSpec(name="custom", custom=custom_builder()), kind
    return transfer_picker([m for m in infos if m["kind"] == "transfer"]), kind


DEFAULT_BLOCKS = pd.DataFrame(
    [
        {"filters": 16, "kernel": 3, "convs": 1, "batch_norm": False, "pool": "max", "dropout": 0.0},
        {"filters": 32, "kernel": 3, "convs": 1, "batch_norm": False, "pool": "max", "dropout": 0.0},
    ]
)


def custom_builder() -> CustomArchitecture:
    """Editable conv blocks plus the head; raises UserError for impossible values."""
    st.caption("Each row is a block: convolutions that look for patterns, then pooling that halves the image.")
    blocks = st.data_editor(
        DEFAULT_BLOCKS, num_rows="dynamic", key="train_blocks", hide_index=True,
        column_config={
            "filters": st.column_config.NumberColumn("filters", min_value=1, max_value=512, step=1,
                                                     help="How many patterns the block looks for."),
            "kernel": st.column_config.SelectboxColumn("kernel", options=[1, 3, 5, 7], help="Window size in pixels."),
            "convs": st.column_config.NumberColumn("convs", min_value=1, max_value=4, step=1,
                                                   help="Convolution layers in the block."),
            "batch_norm": st.column_config.CheckboxColumn("batch norm", help="Normalise activations (steadier training)."),
            "pool": st.column_config.SelectboxColumn("pool", options=["max", "avg", "none"], help="Halve the size."),
            "dropout": st.column_config.NumberColumn("dropout", min_value=0.0, max_value=0.9, step=0.05,
                                                     help="Share of activations switched off while training."),
        },
    )
    cols = st.columns(4)
    head = cols[0].selectbox("Head", ["flatten", "gap"], key="train_head", persist_state="session",
                             format_func={"flatten": "flatten (many weights)", "gap": "global average (few weights)"}.get)
    units_text = cols[1].text_input("Dense units", "128", key="train_dense_units", persist_state="session",
                                    help="Comma-separated sizes of the dense layers, e.g. 256, 64; empty for none.")
    dropout = cols[2].slider("Head dropout", 0.0, 0.9, 0.0, 0.05, key="train_head_dropout", persist_state="session")
    l2 = cols[3].select_slider("L2 penalty", [0.0, 1e-5, 1e-4, 1e-3, 1e-2], 0.0, key="train_l2",
                               persist_state="session", format_func=lambda v: "off" if v == 0 else f"{v:g}")
    return CustomArchitecture(blocks=_blocks_from(blocks), head=head, dense_units=_units_from(units_text),
                              dropout=dropout, l2=l2)


def _blocks_from(table: pd.DataFrame) -> tuple[ConvBlock, ...]:
    """Conv blocks from the edited table, with a sentence for each impossible value."""
    blocks = []
    for i, row in enumerate(table.to_dict("records"), start=1):
        if any(row.get(k) is None or row.get(k) != row.get(k) for k in ("filters", "kernel", "convs")):
            raise UserError(f"Block {i} is missing its filters, kernel or number of convolutions.")
        blocks.append(ConvBlock(filters=int(row["filters"]), kernel=int(row["kernel"]), convs=int(row["convs"]),
                                batch_norm=bool(row.get("batch_norm") or False), pool=row.get("pool") or "max",
                                dropout=float(row.get("dropout") or 0.0)))
    if not blocks:
        raise UserError("Add at least one block to the table.")
    return tuple(blocks)


def _units_from(text: str) -> tuple[int, ...]:
    """``"256, 64"`` -> (256, 64); a sentence when it is not a list of positive whole numbers."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        units = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError("Dense units must be whole numbers separated by commas, e.g. 256, 64.") from None
    if any(u < 1 or u > 8192 for u in units):
        raise UserError("Each dense layer needs between 1 and 8192 units.")
    return units


def transfer_picker(backbones: list[dict]) -> ModelSpec:
    """A pretrained backbone with a new head; optional fine-tuning of its top layers."""
    names = [m["name"] for m in backbones]
    name = st.selectbox("Backbone", names, key="train_backbone", persist_state="session")
    explain(next((m["description"] for m in backbones if m["name"] == name), ""))
    cols = st.columns(3)
    alpha = 0.35
    if "mobilenet" in name:
        alpha = cols[0].select_slider("Width (alpha)", ALPHAS, 0.35, key="train_alpha", persist_state="session",
                                      help="MobileNetV2's width: 0.35 is the smallest and fastest.")
    units = cols[1].number_input("Head units", 0, 2048, 128, 32, key="train_head_units", persist_state="session",
                                 help="Size of the dense layer on top of the backbone; 0 for none.")
    dropout = cols[2].slider("Head dropout", 0.0, 0.9, 0.2, 0.05, key="train_t_dropout", persist_state="session")
    pretrained = st.checkbox("Start from ImageNet weights", True, key="train_pretrained", persist_state="session",
                             help="Off: the backbone starts from random weights (much weaker on small datasets).")
    fine_layers, fine_epochs, factor = 0, 0, 0.1
    with advanced("Fine-tuning"):
        if st.checkbox("Afterwards, fine-tune the top of the backbone", False, key="train_fine_tune",
                       persist_state="session"):
            c = st.columns(3)
            fine_layers = c[0].number_input("Layers to unfreeze", 1, 200, 20, key="train_ft_layers",
                                            persist_state="session")
            fine_epochs = c[1].number_input("Fine-tuning epochs", 1, 100, 3, key="train_ft_epochs",
                                            persist_state="session")
            factor = c[2].select_slider("Learning rate factor", [0.01, 0.03, 0.1, 0.3], 0.1, key="train_ft_factor",
                                        persist_state="session")
            explain("Fine-tuning retrains the top backbone layers with a smaller learning rate; batch norm stays frozen.")
    return ModelSpec(name=name, alpha=alpha, head_units=int(units), head_dropout=dropout,
                     fine_tune_layers=int(fine_layers), fine_tune_epochs=int(fine_epochs),
                     fine_tune_lr_factor=factor, weights="imagenet" if pretrained else None)


# ---------------------------------------------------------------- a new run: the model, live


@st.cache_resource(show_spinner="Building the model…", max_entries=6)
def summary_model(spec_json: str, image_size: int, channels: int, num_classes: int) -> Any:
    """The model the spec builds, without pretrained weights (same layers and parameter counts, offline)."""
    from core.models import build_model

    spec = ModelSpec.from_json(spec_json).replace(weights=None)
    return build_model(spec, (image_size, image_size, channels), num_classes)


@st.cache_data(show_spinner=False, max_entries=32)
def model_summary(spec_json: str, image_size: int, channels: int, num_classes: int) -> tuple[list[dict], dict]:
    """The layer table and the parameter counts, computed once per spec."""
    from core.models import count_params, layer_table

    model = summary_model(spec_json, image_size, channels, num_classes)
    return layer_table(model), count_params(model)


def model_size(spec: ModelSpec, image_size: int, channels: int, num_classes: int) -> None:
    """Total and trainable parameters and the number of layers, recomputed as the user edits."""
    rows, counts = model_summary(spec.to_json(), image_size, channels, num_classes)
    cols = st.columns(3)
    with cols[0]:
        metric_card("Parameters", f"{counts['total']:,}", "Numbers the model can tune; more can learn more and memorise more.")
    with cols[1]:
        metric_card("Trainable", f"{counts['trainable']:,}", "Parameters that training changes (a frozen backbone's do not).")
    with cols[2]:
        metric_card("Layers", f"{len(rows)}", "Layers from the input image to the class probabilities.")


def model_details(spec: ModelSpec, image_size: int, channels: int, num_classes: int, teacher: bool) -> None:
    """The layer table and the architecture drawing of the model the form describes."""
    rows, _ = model_summary(spec.to_json(), image_size, channels, num_classes)
    with advanced("Layer table"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="train_layer_table")
        explain("Output shape: height × width × channels after each layer. Params: weights the layer learns.")
    architecture_drawing(spec, image_size, channels, num_classes, teacher)


@st.cache_resource(show_spinner=False, max_entries=12)
def drawing_figure(spec_json: str, image_size: int, channels: int, num_classes: int, expand: bool,
                   teacher: bool) -> Any:
    """The architecture drawing, built once per spec (the page reruns while a run trains beside it)."""
    from core.architecture import architecture_figure

    model = summary_model(spec_json, image_size, channels, num_classes)
    return architecture_figure(model, expand_backbone=expand, teacher_mode=teacher)


def architecture_drawing(spec: ModelSpec, image_size: int, channels: int, num_classes: int, teacher: bool) -> None:
    """The network drawn as blocks, from ``core.architecture`` (skipped when that module is absent)."""
    try:
        import core.architecture  # noqa: F401
    except ImportError:
        return
    expand = spec.is_transfer and st.toggle("Show the backbone's layers", False, key="train_expand_backbone")
    figure = drawing_figure(spec.to_json(), image_size, channels, num_classes, bool(expand), teacher)
    st.plotly_chart(figure, key="train_architecture", config={"displaylogo": False})
    explain("The image flows left to right; each box is a layer, its size the shape of what comes out.")


# ---------------------------------------------------------------- a new run: hyper-parameters


def hyper_parameters(kind: str) -> dict[str, Any]:
    """The training settings; defaults that finish in minutes on a laptop CPU."""
    transfer = kind == "Transfer learning"
    cols = st.columns(4)
    size = cols[0].select_slider("Image size", IMAGE_SIZES, 96 if transfer else 32, key=f"train_size_{kind}",
                                 persist_state="session", help="Images are resized to this square; bigger is slower.")
    epochs = cols[1].number_input("Epochs", 1, 500, 5 if transfer else 15, key=f"train_epochs_{kind}",
                                  persist_state="session", help="Passes over the training images.")
    batch = cols[2].select_slider("Batch size", BATCH_SIZES, 32, key="train_batch", persist_state="session",
                                  help="Images per correction step.")
    lr = cols[3].select_slider("Learning rate", LEARNING_RATES, 1e-3, key="train_lr", persist_state="session",
                               format_func=lambda v: f"{v:g}", help="Size of each correction step.")
    cols = st.columns(4)
    augment = cols[0].selectbox("Augmentation", list(AUGMENT_PRESETS), key="train_augment", persist_state="session",
                                help="Random flips, turns and zooms of training images so the model cannot memorise them.")
    patience = cols[1].number_input("Early stopping patience", 0, 100, 0, key="train_patience", persist_state="session",
                                    help="Stop after this many epochs without a better validation loss (0 = off).")
    optimizer = cols[2].selectbox("Optimizer", OPTIMIZERS, key="train_optimizer", persist_state="session")
    name = cols[3].text_input("Run name", "", key="train_name", persist_state="session",
                              placeholder="optional, e.g. 'shapes, no dropout'")
    settings: dict[str, Any] = dict(image_size=size, epochs=int(epochs), batch_size=batch, learning_rate=lr,
                                    augment=AugmentConfig.preset(augment), early_stopping_patience=int(patience),
                                    optimizer=optimizer, name=name.strip())
    with advanced("More settings"):
        c = st.columns(4)
        settings["reduce_lr_patience"] = int(c[0].number_input(
            "Lower the LR after", 0, 100, 0, key="train_reduce_lr", persist_state="session",
            help="Halve the learning rate after this many epochs without progress (0 = off)."))
        settings["class_weights"] = c[1].checkbox("Balance classes", False, key="train_class_weights",
                                                  persist_state="session",
                                                  help="Weigh rare classes more so they count as much as common ones.")
        settings["seed"] = int(c[2].number_input("Seed", 0, 2**31 - 1, 0, key="train_seed", persist_state="session",
                                                 help="Same seed + same settings = same run."))
        settings["deterministic"] = c[3].checkbox("Deterministic", False, key="train_deterministic",
                                                  persist_state="session", help="Exactly repeatable, a little slower.")
        settings["restore_best"] = st.checkbox("Keep the epoch with the lowest validation loss", True,
                                               key="train_restore_best", persist_state="session")
    return settings


# ---------------------------------------------------------------- a new run: the form


def new_run_section(teacher: bool) -> None:
    """Data, architecture, hyper-parameters, the model's size, Start."""
    st.subheader("Start a new run")
    with user_errors():
        source, split = data_picker()
        dataset = load_dataset_cached(source, split)
        explain(f"{len(dataset.class_names)} classes: {', '.join(dataset.class_names[:12])}"
                + (" …" if len(dataset.class_names) > 12 else "") + f" · {len(dataset.splits['train'])} training images.")
        spec, kind = architecture_picker()
        settings = hyper_parameters(kind)
        dims = (settings["image_size"], dataset.channels, len(dataset.class_names))
        model_size(spec, *dims)
        config = pretraining_checks(TrainConfig(data=source, split=split, model=spec, **settings))
        if st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:"):
            run_id = get_manager().start(config, name=config.name, owner=session_owner())
            set_current_run_id(run_id)
            st.rerun()
        model_details(spec, *dims, teacher)


def main() -> None:
    """The Train page."""
    st.title("Train")
    explain("Pick an architecture, press Start and watch it learn. Training runs in the background: you can "
            "switch pages, refresh or open this link on another computer and come back to it.")
    teacher = teacher_mode()
    demo_section()
    watched = watched_runs()
    if watched:
        live_panel(watched)
    st.divider()
    new_run_section(teacher)
    st.divider()
    experiments_section()


if __name__ == "__main__":
    main()
