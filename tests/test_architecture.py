"""The network drawn: blocks per layer, folded/expanded backbone, and the Plotly figure's structure."""

from __future__ import annotations

import json
import shutil

import keras
import pytest

from core.config import ConvBlock, CustomArchitecture, ModelSpec
from core.models.architecture import architecture_blocks
from core.models.registry import build_model, count_params
from core.models.transfer import BACKBONE
from core.plots.architecture import KIND_LABELS, architecture_figure


@pytest.fixture(scope="module")
def scratch() -> keras.Model:
    return build_model(ModelSpec(name="rps_regularised"), (64, 64, 3), 3)


@pytest.fixture(scope="module")
def transfer() -> keras.Model:
    return build_model(ModelSpec(name="transfer:mobilenet_v2", weights=None), (32, 32, 1), 4)


def _front_polygons(fig, kind: str) -> list[list[float]]:
    """The y coordinates of each front face drawn for a layer family, in drawing order."""
    trace = next(t for t in fig.data if t.name == KIND_LABELS[kind])
    polys, current = [], []
    for y in trace.y:
        if y is None:
            polys.append(current)
            current = []
        else:
            current.append(y)
    return polys


def _hover_texts(fig) -> list[str]:
    return [text for t in fig.data if t.name.endswith("(hover)") for text in t.hovertext]


def test_blocks_describe_every_layer(scratch: keras.Model) -> None:
    blocks = architecture_blocks(scratch)
    assert [b["name"] for b in blocks] == [layer.name for layer in scratch.layers]
    assert sum(b["params"] for b in blocks) == count_params(scratch)["total"]
    by_name = {b["name"]: b for b in blocks}
    assert by_name["conv1"]["kind"] == "conv" and by_name["conv1"]["output_shape"] == [64, 64, 32]
    assert by_name["pool1"]["kind"] == "pool" and by_name["pool1"]["output_shape"] == [32, 32, 32]
    assert by_name["bn1"]["kind"] == "norm" and by_name["bn1"]["trainable_params"] < by_name["bn1"]["params"]
    assert by_name["dropout1"]["kind"] == "dropout"
    assert by_name["dense1"]["kind"] == "dense" and by_name["predictions"]["kind"] == "output"
    assert by_name["flatten"]["output_shape"] == [8 * 8 * 128]
    json.dumps(blocks)


def test_backbone_is_one_block_unless_expanded(transfer: keras.Model) -> None:
    base = transfer.get_layer(BACKBONE)
    folded = architecture_blocks(transfer)
    backbone = [b for b in folded if b["kind"] == "backbone"]
    assert len(backbone) == 1 and len(folded) == len(transfer.layers)
    assert backbone[0]["type"] == "MobileNetV2 backbone" and backbone[0]["group"] == BACKBONE
    assert backbone[0]["params"] == base.count_params() and backbone[0]["trainable_params"] == 0
    assert backbone[0]["layers"] == len(base.layers) - 1

    expanded = architecture_blocks(transfer, expand_backbone=True)
    inner = [b for b in expanded if b["group"] == BACKBONE]
    assert len(inner) == len(base.layers) - 1 and not any(b["kind"] == "backbone" for b in expanded)
    assert len(expanded) == len(transfer.layers) - 1 + len(inner)
    assert sum(b["params"] for b in expanded) == sum(b["params"] for b in folded)


def test_figure_has_one_hoverable_box_per_layer_and_a_legend_of_types(scratch: keras.Model) -> None:
    fig = architecture_figure(architecture_blocks(scratch))
    blocks = architecture_blocks(scratch)
    assert fig.layout.meta["blocks"] == len(blocks)
    hovers = _hover_texts(fig)
    assert len(hovers) == len(blocks)
    for block in blocks:
        text = next(h for h in hovers if f"<b>{block['name']}</b>" in h)
        assert f"{block['params']:,}" in text
        assert " x ".join(map(str, block["output_shape"])) in text
    legend = {t.name for t in fig.data if t.showlegend}
    assert legend == {KIND_LABELS[b["kind"]] for b in blocks}
    assert len(_front_polygons(fig, "conv")) == sum(b["kind"] == "conv" for b in blocks)
    assert len(fig.layout.annotations) == len(blocks)  # a label under every box
    json.loads(fig.to_json())


def test_boxes_grow_with_the_feature_map(scratch: keras.Model) -> None:
    fig = architecture_figure(architecture_blocks(scratch))
    heights = [max(p) - min(p) for p in _front_polygons(fig, "conv")]  # conv1 64 px, conv2 32 px, last 16 px
    assert heights == sorted(heights, reverse=True) and heights[0] > heights[-1]


def test_figure_folds_or_expands_the_backbone(transfer: keras.Model) -> None:
    folded = architecture_figure(architecture_blocks(transfer))
    expanded = architecture_figure(architecture_blocks(transfer, expand_backbone=True), expand_backbone=True)
    n_inner = len(transfer.get_layer(BACKBONE).layers) - 1
    assert folded.layout.meta["blocks"] == len(transfer.layers)
    assert expanded.layout.meta["blocks"] == len(transfer.layers) - 1 + n_inner
    assert any(t.name == KIND_LABELS["backbone"] for t in folded.data)
    assert not any(t.name == KIND_LABELS["backbone"] for t in expanded.data)
    assert expanded.layout.meta["rows"] > 1  # a 150-layer network wraps instead of a thin ribbon
    # The same expanded block list, drawn folded, collapses back into the single backbone box.
    refolded = architecture_figure(architecture_blocks(transfer, expand_backbone=True))
    assert refolded.layout.meta["blocks"] == folded.layout.meta["blocks"]
    assert refolded.layout.meta["params"] == folded.layout.meta["params"] == count_params(transfer)["total"]
    assert any("MobileNetV2 backbone" in h for h in _hover_texts(refolded))


def test_teacher_mode_explains_each_family() -> None:
    model = build_model(ModelSpec(name="custom", custom=CustomArchitecture(
        blocks=(ConvBlock(8, batch_norm=True, dropout=0.2),), head="gap")), (32, 32, 3), 2)
    blocks = architecture_blocks(model)
    plain, teacher = architecture_figure(blocks), architecture_figure(blocks, teacher_mode=True)
    conv_plain = next(h for h in _hover_texts(plain) if "last_conv" in h)
    conv_teacher = next(h for h in _hover_texts(teacher) if "last_conv" in h)
    assert "filters" not in conv_plain and "filters" in conv_teacher
    assert any("32 x 32 x 8" in a.text for a in teacher.layout.annotations)
    assert teacher.layout.height > plain.layout.height


@pytest.mark.slow
def test_figure_renders_to_png(scratch: keras.Model) -> None:
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("kaleido draws PNGs with a Chromium and none is installed here (apt-get install chromium)")
    png = architecture_figure(architecture_blocks(scratch)).to_image(format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
