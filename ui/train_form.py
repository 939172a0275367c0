"""The Train page's form for a new run: data, architecture (preset, custom, transfer) with its live size, settings.

The model the form describes is built once per spec (without pretrained weights, so offline) to show
its parameter count, layer table and drawing; building it takes the engine's Keras lock like any build.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

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
from ui.common import (
    advanced,
    current_data_source,
    current_split,
    explain,
    metric_card,
    set_current_run_id,
    set_data_source,
    source_name,
    user_errors,
)
from ui.data_checks import pretraining_checks
from ui.engine import get_manager, load_dataset_cached, session_owner
from ui.library import library_sources
from ui.train_recommend import recommended_settings

LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
IMAGE_SIZES = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224)
BATCH_SIZES = (8, 16, 32, 64, 128)
ALPHAS = (0.35, 0.5, 0.75, 1.0)
ARCH_KINDS = ("Preset", "Build your own", "Transfer learning")


# ---------------------------------------------------------------- a new run: data


def data_picker() -> tuple[str, SplitConfig]:
    """The dataset (chosen on the Data page by default) and its split settings."""
    from core.data.builtin import list_builtin

    current = current_data_source()
    builtins = {f"builtin:{b.name}": b.description for b in list_builtin()}
    options = list(dict.fromkeys([current, *library_sources(), *builtins]))
    source = st.selectbox(
        "Dataset", options, index=0, key="train_data", format_func=data_choice_label(builtins),
        help="Upload a zip or point at a folder on the Data page; it then appears here.",
    )
    if source != current:
        set_data_source(source)
    split = current_split()
    explain(
        f"Split: {1 - split.val_fraction - split.test_fraction:.0%} training, {split.val_fraction:.0%} validation, "
        f"{split.test_fraction:.0%} test (seed {split.seed}"
        + (f", at most {split.limit_per_class} images a class" if split.limit_per_class else "")
        + (", near-copies of training pictures set aside" if split.drop_duplicates else "")
        + "). Change it on the Data page."
    )
    return source, split


def data_choice_label(builtins: dict[str, str]) -> Any:
    """How a dataset reads in the picker: its name in words, a built-in's description, a library tag."""
    names = {s: source_name(s) for s in builtins}

    def label(source: str) -> str:
        if source in builtins:
            return f"{names[source]} - {builtins[source]}"
        name = source_name(source)
        return f"{name} - your library" if source.startswith("library:") else name

    return label


# ---------------------------------------------------------------- a new run: architecture


@st.cache_data(show_spinner=False)
def _model_infos() -> list[dict]:
    """The architecture registry as plain dicts (cached: it never changes while the app runs)."""
    from core.models.registry import list_models

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
    from core.models.registry import build_model

    spec = ModelSpec.from_json(spec_json).replace(weights=None)
    return build_model(spec, (image_size, image_size, channels), num_classes)


@st.cache_data(show_spinner=False, max_entries=32)
def model_summary(spec_json: str, image_size: int, channels: int, num_classes: int) -> tuple[list[dict], dict]:
    """The layer table and the parameter counts, computed once per spec."""
    from core.models.registry import count_params, layer_table

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
    from core.models.architecture import architecture_blocks
    from core.plots.architecture import architecture_figure

    model = summary_model(spec_json, image_size, channels, num_classes)
    return architecture_figure(architecture_blocks(model, expand_backbone=expand), expand_backbone=expand,
                               teacher_mode=teacher)


def architecture_drawing(spec: ModelSpec, image_size: int, channels: int, num_classes: int, teacher: bool) -> None:
    """The network drawn as blocks (``core.plots.architecture``), redrawn as the form changes."""
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
        recommended_settings(source, split)
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
