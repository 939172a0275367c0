"""The headless CLI over the training engine: train --json shape, then runs / evaluate / predict on that run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main

TRAIN = ["train", "--data", "builtin:digits", "--model", "tiny", "--epochs", "2", "--limit-per-class", "20",
         "--image-size", "12", "--batch-size", "10", "--seed", "0", "--json"]


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_train_json_then_runs_evaluate_predict(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(capsys, [*TRAIN, "--home", str(home)])
    assert code == 0
    summary = json.loads(out)
    assert set(summary) >= {"run_id", "status", "classes", "history", "test", "timing", "params"}
    assert summary["status"] == "finished" and summary["classes"] == [str(i) for i in range(10)]
    assert all(len(summary["history"][k]) == 2 for k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    test = summary["test"]
    assert set(test) >= {"accuracy", "precision", "recall", "f1", "macro_f1", "per_class", "confusion_matrix"}
    assert [row["label"] for row in test["per_class"]] == summary["classes"]
    cm = np.array(test["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == sum(row["support"] for row in test["per_class"])
    assert test["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert summary["timing"]["fit_seconds"] > 0 and summary["timing"]["train_images_per_second"] > 0
    assert summary["params"]["total"] == summary["params"]["trainable"] + summary["params"]["non_trainable"] > 0
    split = summary["split"]
    assert split["sizes"]["test"] == test["n_images"] and sum(split["sizes"].values()) == 200  # 20 a class
    assert split["origin"] == {"val": "random", "test": "random"} and split["test_from_folder"] is False
    assert sum(split["train_class_counts"]) == split["sizes"]["train"] and len(split["hash"]) == 64
    assert summary["verdicts"] and all(set(v) == {"kind", "epoch", "sentence", "advice"} for v in summary["verdicts"])
    run_id = summary["run_id"]

    code, out, _ = _run(capsys, ["runs", "--json", "--home", str(home)])
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [run_id]

    code, out, _ = _run(capsys, ["evaluate", run_id, "--json", "--home", str(home)])
    assert code == 0 and json.loads(out)["accuracy"] == test["accuracy"]

    img = tmp_path / "seven.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(img)
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"hello")
    code, out, _ = _run(capsys, ["predict", run_id, str(img), str(bad), "--top", "2", "--json", "--home", str(home)])
    rows = json.loads(out)
    assert code == 1  # one file could not be read
    assert rows[0]["file"] == str(img) and len(rows[0]["top"]) == 2
    probs = [t["probability"] for t in rows[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert {t["label"] for t in rows[0]["top"]} <= set(summary["classes"])
    assert "error" in rows[1]


@pytest.mark.slow
def test_a_collapsed_run_reports_not_learning_in_its_json_and_its_text(home: Path, capsys: pytest.CaptureFixture) -> None:
    """A learning rate of 1.0 throws the tiny CNN to one answer for every picture (recorded: test accuracy 10 %)."""
    collapse = ["train", "--data", "builtin:digits", "--model", "tiny", "--epochs", "5", "--limit-per-class", "40",
                "--image-size", "12", "--batch-size", "10", "--seed", "0", "--lr", "1.0", "--home", str(home)]
    code, out, _ = _run(capsys, [*collapse, "--json"])
    summary = json.loads(out)
    majority = max(summary["split"]["train_class_counts"]) / summary["split"]["sizes"]["train"]
    assert code == 0 and summary["test"]["accuracy"] <= majority + 0.05
    verdict = summary["verdicts"][0]
    assert verdict["kind"] == "not_learning" and "is not learning" in verdict["sentence"]
    assert "learning rate 10 times lower (0.1 instead of 1)" in verdict["advice"]
    code, out, _ = _run(capsys, [*collapse, "--quiet"])
    assert code == 0 and "the model is not learning" in out


def test_unknown_run_is_one_sentence(home: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _run(capsys, ["evaluate", "20990101-000000-0000", "--home", str(home)])
    assert code == 2 and out == "" and err.startswith("error: There is no run")


def test_a_failed_training_reports_its_sentence(home: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(capsys, ["train", "--data", str(home / "missing"), "--json", "--home", str(home)])
    summary = json.loads(out)
    assert code == 1 and summary["status"] == "failed" and "does not exist" in summary["message"]
    assert summary["test"] is None
