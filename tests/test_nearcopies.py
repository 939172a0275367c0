"""Near-copies: found on real photos at the promised recall and precision, kept in one split, set aside, cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import core.data.nearcopies as nearcopies
from core.config import SplitConfig
from core.data.health import health_report
from core.data.sources import load_dataset
from core.data.splits import _stratified
from tests.variant_factory import make_copied_splits, make_variant_export

RECALL_TARGET = 0.9
PRECISION_TARGET = 0.95


def _score(found: list[list[str]], truth: list[list[str]]) -> tuple[float, float]:
    """Recall: share of true groups found whole. Precision: share of pairs inside found groups that are true."""
    label = {f: k for k, g in enumerate(found) for f in g}
    whole = sum(1 for g in truth if len({label.get(f, f) for f in g}) == 1)
    source = {f: k for k, g in enumerate(truth) for f in g}
    pairs = [(a, b) for g in found for i, a in enumerate(g) for b in g[i + 1:]]
    right = sum(1 for a, b in pairs if source.get(a, -1) == source.get(b, -2))
    return whole / len(truth), right / max(len(pairs), 1)


@pytest.fixture(scope="module")
def variant_export(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # Sources from position 60 on: none of the photos the thresholds were chosen on.
    out = tmp_path_factory.mktemp("variants")
    return make_variant_export(shared_dir / "datasets" / "sign-language-digits", out, per_class=12, first=60, seed=5)


@pytest.mark.slow
def test_variants_of_real_hand_photos_are_found_with_target_recall_and_precision(variant_export) -> None:
    root = variant_export.root
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    found = nearcopies.file_groups(files)
    rel = [[str(Path(f).relative_to(root)) for f in g] for g in found]
    recall, precision = _score(rel, variant_export.groups)
    assert recall >= RECALL_TARGET, (recall, precision)
    assert precision >= PRECISION_TARGET, (recall, precision)


@pytest.mark.slow
def test_group_aware_split_keeps_every_group_in_one_split_and_a_random_split_does_not(variant_export, tmp_path) -> None:
    for seed in (0, 1, 2):
        ds = load_dataset(str(variant_export.root), SplitConfig(seed=seed), home=tmp_path)
        copies = health_report(ds).near_copies
        assert copies["num_groups"] >= 0.9 * len(variant_export.groups)
        assert all(len(g["splits"]) == 1 for g in copies["groups"])
        assert copies["val_in_train"] == copies["test_in_train"] == 0
    random = health_report(load_dataset(str(variant_export.root), SplitConfig(group_near_copies=False),
                                        home=tmp_path)).near_copies
    assert random["val_in_train"] > 0 and random["test_in_train"] > 0
    assert any(len(g["splits"]) > 1 for g in random["groups"])


def test_units_move_together_and_singletons_give_the_plain_split() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    plain = _stratified(labels, 0.15, 0.15, 7)
    singletons = _stratified(labels, 0.15, 0.15, 7, [f"u{i}" for i in range(len(labels))])
    assert all(np.array_equal(a, b) for a, b in zip(plain, singletons))
    units = [f"g{i // 3}" for i in range(len(labels))]  # groups of three, sometimes of mixed labels
    parts = _stratified(labels, 0.15, 0.15, 7, units)
    where = {}
    for k, part in enumerate(parts):
        for i in part.tolist():
            where.setdefault(units[i], set()).add(k)
    assert all(len(s) == 1 for s in where.values())
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    sizes = [len(p) for p in parts]
    assert abs(sizes[1] - 45) <= 6 and abs(sizes[2] - 45) <= 6


def test_test_pictures_copying_training_ones_are_reported_and_set_aside(tmp_path: Path) -> None:
    root, pairs = make_copied_splits(tmp_path / "data", classes=2, train=12, test=6, copied=3)
    report = health_report(load_dataset(str(root), SplitConfig(), home=tmp_path / "home")).to_dict()
    copies = report["near_copies"]
    found = {frozenset(i["file"] for i in g["items"]) for g in copies["groups"]}
    assert {frozenset(p) for p in pairs} <= found
    assert copies["test_in_train"] == len(pairs)
    assert any("near-copies" in w and "set them aside" in w for w in report["warnings"])
    ds = load_dataset(str(root), SplitConfig(drop_duplicates=True), home=tmp_path / "home")
    assert len(ds.splits["test"]) == 12 - len(pairs)
    assert any(f"{len(pairs)} of the 12 test pictures" in n and "set aside" in n for n in ds.notes)
    assert health_report(ds).near_copies["test_in_train"] == 0


def test_different_pictures_are_not_grouped(tmp_path: Path) -> None:
    root, _ = make_copied_splits(tmp_path / "data", classes=3, train=15, test=5, copied=0)
    ds = load_dataset(str(root), SplitConfig(), home=tmp_path / "home")
    assert health_report(ds).near_copies["num_groups"] == 0


def test_groups_are_cached_on_disk_and_not_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, pairs = make_copied_splits(tmp_path / "data", classes=2, train=6, test=3, copied=2)
    files = sorted(str(p) for p in root.rglob("*.*"))
    cache = tmp_path / "cache"
    first = nearcopies.file_groups(files, cache_dir=cache)
    assert len(first) == len(pairs) and list(cache.glob("*.json"))
    nearcopies._MEMORY.clear()

    def boom(*_a, **_k):
        raise AssertionError("recomputed although the files did not change")

    monkeypatch.setattr(nearcopies, "find_groups", boom)
    assert nearcopies.file_groups(files, cache_dir=cache) == first
    Path(files[0]).touch()  # a changed file is a new question
    nearcopies._MEMORY.clear()
    with pytest.raises(AssertionError, match="recomputed"):
        nearcopies.file_groups(files, cache_dir=cache)


def test_inspect_json_lists_every_group_with_relative_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.cli import main

    root, pairs = make_copied_splits(tmp_path / "data", classes=2, train=14, test=7, copied=6)
    assert main(["inspect", str(root), "--json", "--home", str(tmp_path / "home")]) == 0
    copies = json.loads(capsys.readouterr().out)["near_copies"]
    assert copies["num_groups"] == len(copies["groups"]) == len(pairs) > 10
    files = {i["file"] for g in copies["groups"] for i in g["items"]}
    assert files == {f for p in pairs for f in p}
    assert main(["inspect", str(root), "--home", str(tmp_path / "home")]) == 0
    text = capsys.readouterr().out
    assert f"near-copy groups: {len(pairs)}" in text and "all of them in --json" in text
