"""A generated corpus of hostile inputs: each kind gets a plain sentence (or is safely converted/skipped).

For every kind the test also checks that nothing was written outside the app's folders (the sandbox's
``home`` and ``inputs``) and that an earlier finished run is still intact. At the end the module prints
``hostile inputs: N kinds tried, M handled``. Decoder and zip edge cases are covered in more depth by
tests/test_images.py, tests/test_photos.py, tests/test_zip.py and tests/test_model_import.py.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from core.config import ConvBlock, CustomArchitecture, ModelSpec, SplitConfig, TrainConfig
from core.data.health import health_report
from core.data.images import decode_image
from core.data.sources import load_dataset
from core.data.zips import extract_zip
from core.errors import UserError
from core.store.runs import RunStore
from core.training.manager import TrainingManager

WAIT = 120.0
TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                   epochs=1, seed=0)


@dataclass
class Sandbox:
    """The app's folders (``home``, ``inputs``) inside a root nothing else may be written to."""

    root: Path
    home: Path
    inputs: Path
    store: RunStore
    earlier_run: str
    earlier_files: dict[str, str]
    earlier_epochs: list[dict]


@dataclass
class Outcome:
    """How a hostile input was handled: ``refused`` / ``skipped`` / ``converted`` / ``failed-run`` + its sentence."""

    how: str
    sentence: str


KINDS: dict[str, Callable[[Sandbox], Outcome]] = {}
RESULTS: dict[str, bool] = {}


def kind(name: str) -> Callable[[Callable[[Sandbox], Outcome]], Callable[[Sandbox], Outcome]]:
    def register(fn: Callable[[Sandbox], Outcome]) -> Callable[[Sandbox], Outcome]:
        KINDS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------- helpers


def _png(size: tuple[int, int] = (8, 8), mode: str = "RGB", color: int | tuple = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size: tuple[int, int] = (16, 8), mode: str = "RGB", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 10, 10) if mode == "RGB" else (0, 200, 200, 0)).save(buf, "JPEG", **save)
    return buf.getvalue()


def _refused(fn: Callable[[], object]) -> Outcome:
    """Run ``fn``; it must raise ``UserError`` (and nothing else)."""
    with pytest.raises(UserError) as info:
        fn()
    return Outcome("refused", str(info.value))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _class_folders(root: Path, classes: dict[str, int]) -> Path:
    """``root/<class>/<i>.png`` with distinct tiny images."""
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _write(root / name / f"{i}.png", _png((8, 8), "RGB", (c * 60 % 256, i * 7 % 256, 50)))
    return root


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _bomb_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring ``width x height`` pixels, with almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _files_under(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- image files with image extensions


@kind("zero-byte .png")
def _zero_byte(sb: Sandbox) -> Outcome:
    return _refused(lambda: decode_image(_write(sb.inputs / "zero.png", b"")))


@kind("truncated PNG")
def _truncated_png(sb: Sandbox) -> Outcome:
    data = _png((64, 64), "RGB", (1, 2, 3))
    return _refused(lambda: decode_image(_write(sb.inputs / "cut.png", data[: len(data) // 2])))


@kind("truncated JPEG")
def _truncated_jpeg(sb: Sandbox) -> Outcome:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return _refused(lambda: decode_image(_write(sb.inputs / "cut.jpg", buf.getvalue()[:600])))


@kind("text file named .jpg")
def _text_as_jpg(sb: Sandbox) -> Outcome:
    return _refused(lambda: decode_image(_write(sb.inputs / "notes.jpg", b"hello, this is not a photo\n" * 20)))


@kind("HTML/script named .png")
def _html_as_png(sb: Sandbox) -> Outcome:
    return _refused(lambda: decode_image(_write(sb.inputs / "x.png", b"<script>alert(1)</script>")))


@kind("random bytes named .gif")
def _random_gif(sb: Sandbox) -> Outcome:
    data = b"GIF89a" + np.random.default_rng(1).bytes(200)
    return _refused(lambda: decode_image(_write(sb.inputs / "noise.gif", data)))


@kind("30000x30000 PNG header (decompression bomb)")
def _bomb_header(sb: Sandbox) -> Outcome:
    out = _refused(lambda: decode_image(_write(sb.inputs / "bomb.png", _bomb_png_header(30_000, 30_000))))
    assert "too many pixels" in out.sentence
    return out


@kind("CMYK JPEG")
def _cmyk(sb: Sandbox) -> Outcome:
    img = decode_image(_write(sb.inputs / "cmyk.jpg", _jpeg((16, 8), "CMYK")))
    assert img.dtype == np.uint8 and img.shape == (8, 16, 3)
    return Outcome("converted", "A CMYK JPEG decodes to an 8 x 16 RGB image.")


@kind("16-bit grayscale PNG")
def _sixteen_bit(sb: Sandbox) -> Outcome:
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    img = decode_image(_write(sb.inputs / "deep.png", buf.getvalue()), channels=None)
    assert img.dtype == np.uint8 and img.shape == (8, 8, 1)
    assert img.min() == 0 and img.max() == 255  # scaled, not clipped to 255 everywhere
    return Outcome("converted", "A 16-bit PNG decodes to 8-bit gray with its full range kept.")


@kind("palette PNG with transparency")
def _palette(sb: Sandbox) -> Outcome:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.info["transparency"] = 0
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    img = decode_image(_write(sb.inputs / "pal.png", buf.getvalue()))
    assert img.shape == (8, 8, 3) and (img == 255).all()  # transparent red composited over white
    return Outcome("converted", "A transparent palette PNG decodes to RGB over white.")


@kind("EXIF-rotated JPEG")
def _exif_rotated(sb: Sandbox) -> Outcome:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = decode_image(_write(sb.inputs / "rot.jpg", _jpeg((16, 8), "RGB", exif=exif.tobytes())))
    assert img.shape == (16, 8, 3)  # stored 16 wide x 8 high, displayed 8 wide x 16 high
    return Outcome("converted", "An EXIF-rotated photo is turned upright.")


@kind("bad files inside a dataset folder")
def _bad_files_in_dataset(sb: Sandbox) -> Outcome:
    root = _class_folders(sb.inputs / "mixed", {"cats": 6, "dogs": 6})
    _write(root / "cats" / "empty.png", b"")
    _write(root / "dogs" / "fake.jpg", b"not an image")
    _write(root / "dogs" / "bomb.png", _bomb_png_header(30_000, 30_000))
    ds = load_dataset(str(root), SplitConfig(val_fraction=0.2, test_fraction=0.2), home=sb.home)
    assert ds.total_images == 12 and len(ds.skipped) == 3
    reasons = " / ".join(s.reason for s in ds.skipped)
    assert "empty" in reasons and "too many pixels" in reasons
    return Outcome("skipped", f"Three bad files were skipped with reasons: {reasons}.")


# ---------------------------------------------------------------- zip files


@kind("zip with ../ entry")
def _zip_parent(sb: Sandbox) -> Outcome:
    z = _zip(sb.inputs / "dotdot.zip", [("a/ok.png", _png()), ("../../escaped.png", _png())])
    out = _refused(lambda: load_dataset(str(z), home=sb.home))
    assert not (sb.root / "escaped.png").exists() and not list(sb.root.rglob("escaped.png"))
    return out


@kind("zip with absolute entry")
def _zip_absolute(sb: Sandbox) -> Outcome:
    z = _zip(sb.inputs / "abs.zip", [("a/ok.png", _png()), (str(sb.root / "abs-escaped.png"), _png())])
    out = _refused(lambda: extract_zip(z, sb.home))
    assert not list(sb.root.rglob("abs-escaped.png"))
    return out


@kind("zip with symlink entry")
def _zip_symlink(sb: Sandbox) -> Outcome:
    link = zipfile.ZipInfo("a/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(sb.inputs / "link.zip", [("a/ok.png", _png()), (link, b"/etc/passwd")])
    out = _refused(lambda: extract_zip(z, sb.home))
    assert not [p for p in sb.home.rglob("*") if p.is_symlink()]
    return out


@kind("zip bomb (compression ratio > 1000)")
def _zip_bomb(sb: Sandbox) -> Outcome:
    z = _zip(sb.inputs / "bomb.zip", [("a/ok.png", _png()), ("a/huge.png", b"\0" * (4 << 20))])
    assert z.stat().st_size < 64 << 10
    out = _refused(lambda: extract_zip(z, sb.home))
    assert "zip bomb" in out.sentence
    return out


@kind("zip of 10,000 files")
def _zip_many(sb: Sandbox) -> Outcome:
    one = _png((8, 8), "L", 0)
    z = sb.inputs / "many.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10_000):
            zf.writestr(f"c{i % 2}/{i}.png", one)
    target = extract_zip(z, sb.home)
    assert sum(1 for p in target.rglob("*.png")) == 10_000
    import core.data.zips as zips

    limit = zips.ZIP_MAX_FILES
    zips.ZIP_MAX_FILES = 5_000  # the same zip against a lower, configured limit
    try:
        (target / ".complete").unlink()  # forget the finished extraction so the limit is checked again
        out = _refused(lambda: extract_zip(z, sb.home))
    finally:
        zips.ZIP_MAX_FILES = limit
    assert "more than the limit" in out.sentence
    return Outcome("refused", f"Under the default limit all 10,000 files extract; above a lower limit: {out.sentence}")


@kind("zip entry with a 300-character name")
def _zip_long_name(sb: Sandbox) -> Outcome:
    z = _zip(sb.inputs / "long.zip", [("a/ok.png", _png()), ("a/" + "x" * 300 + ".png", _png())])
    return _refused(lambda: extract_zip(z, sb.home))


@kind("zip that is not a zip")
def _zip_fake(sb: Sandbox) -> Outcome:
    z = _write(sb.inputs / "fake.zip", b"PK\x03\x04" + b"\0" * 100)
    return _refused(lambda: load_dataset(str(z), home=sb.home))


# ---------------------------------------------------------------- names and dataset shapes


@kind("unicode and very long file names")
def _unicode_names(sb: Sandbox) -> Outcome:
    root = sb.inputs / "unicode"
    for c, cls in enumerate(("chat_猫", "ñandú 🐦")):
        for i in range(5):
            _write(root / cls / f"{'é' * 3}_{i}_{'y' * 230}.png", _png((8, 8), "RGB", (c * 200, i * 30, 9)))
    ds = load_dataset(str(root), SplitConfig(val_fraction=0.2, test_fraction=0.2), home=sb.home)
    assert sorted(ds.class_names) == ["chat_猫", "ñandú 🐦"] and ds.total_images == 10
    assert decode_image(ds.splits["train"].files[0]).shape == (8, 8, 3)
    return Outcome("converted", "Unicode class names and 240-character file names load normally.")


@kind("empty dataset folder")
def _empty_dataset(sb: Sandbox) -> Outcome:
    root = sb.inputs / "empty"
    (root / "cats").mkdir(parents=True)
    _write(root / "readme.txt", b"nothing here")
    return _refused(lambda: load_dataset(str(root), home=sb.home))


@kind("one-class dataset")
def _one_class(sb: Sandbox) -> Outcome:
    root = _class_folders(sb.inputs / "oneclass", {"cats": 10})
    manager = TrainingManager(sb.store)
    snap = manager.wait(manager.start(TINY.replace(data=str(root))), WAIT)
    assert snap.status == "failed"
    return Outcome("failed-run", snap.message or "")


@kind("a class with one image")
def _single_image_class(sb: Sandbox) -> Outcome:
    root = _class_folders(sb.inputs / "lonely", {"cats": 10, "dogs": 1})
    ds = load_dataset(str(root), SplitConfig(val_fraction=0.2, test_fraction=0.2), home=sb.home)
    report = health_report(ds)
    assert ds.total_images == 11 and report.warnings
    return Outcome("converted", f"The dataset loads with a warning: {report.warnings[0]}")


@kind("train/test folders with different classes")
def _mismatched(sb: Sandbox) -> Outcome:
    root = sb.inputs / "mismatch"
    _class_folders(root / "train", {"cats": 4, "dogs": 4})
    _class_folders(root / "test", {"cats": 2, "birds": 2})
    out = _refused(lambda: load_dataset(str(root), home=sb.home))
    assert "birds" in out.sentence
    return out


@kind("missing dataset path")
def _missing_path(sb: Sandbox) -> Outcome:
    return _refused(lambda: load_dataset(str(sb.inputs / "nowhere"), home=sb.home))


@kind("run id with ../")
def _bad_run_id(sb: Sandbox) -> Outcome:
    return _refused(lambda: sb.store.run_dir("../" + sb.earlier_run))


# ---------------------------------------------------------------- training and models


@kind("a learning rate that produces NaN")
def _nan_rate(sb: Sandbox) -> Outcome:
    broken = ModelSpec(name="custom", custom=CustomArchitecture(blocks=(ConvBlock(8),), dense_units=(16,), l2=0.5))
    manager = TrainingManager(sb.store)
    snap = manager.wait(manager.start(TINY.replace(model=broken, optimizer="sgd", learning_rate=9.0, epochs=3)), WAIT)
    assert snap.status == "failed" and "learning rate 10x lower" in (snap.message or "")
    return Outcome("failed-run", snap.message or "")


@kind(".keras with a Lambda layer")
def _keras_lambda(sb: Sandbox) -> Outcome:
    import keras

    from core.serving.model_import import load_user_model

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    path = sb.inputs / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    out = _refused(lambda: load_user_model(path))
    assert "Lambda" in out.sentence
    return out


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.write_text, (self.sentinel, "code ran"))


@kind(".h5 holding a pickled custom object")
def _pickled_h5(sb: Sandbox) -> Outcome:
    import h5py

    from core.serving.model_import import load_user_model

    sentinel = sb.inputs / "pickle-ran.txt"
    blob = pickle.dumps(_Payload(sentinel))
    path = sb.inputs / "pickled.h5"
    with h5py.File(path, "w") as f:  # an HDF5 "model" whose config is a pickle instead of JSON
        f.attrs["model_config"] = np.void(blob)
        f.attrs["keras_version"] = "2.15.0"
        f.create_group("model_weights")
    out = _refused(lambda: load_user_model(path))
    raw = sb.inputs / "raw-pickle.h5"
    raw.write_bytes(blob)  # a bare pickle with a model's extension
    second = _refused(lambda: load_user_model(raw))
    assert not sentinel.exists()
    return Outcome("refused", f"{out.sentence} / {second.sentence}")


@kind("damaged .keras file")
def _damaged_keras(sb: Sandbox) -> Outcome:
    from core.serving.model_import import load_user_model

    path = _write(sb.inputs / "damaged.keras", b"PK\x03\x04" + np.random.default_rng(3).bytes(500))
    return _refused(lambda: load_user_model(path))


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Sandbox:
    root = tmp_path_factory.mktemp("hostile")
    home, inputs = root / "home", root / "inputs"
    inputs.mkdir()
    store = RunStore(home)
    run_id = store.create_run(TINY, "earlier run")
    store.set_status(run_id, "running")
    store.add_epoch(run_id, 1, {"loss": 0.5, "accuracy": 0.8})
    (store.run_dir(run_id) / "model.keras").write_bytes(b"earlier model bytes")
    store.set_result(run_id, {"accuracy": 0.8})
    store.set_status(run_id, "finished")
    sb = Sandbox(root, home, inputs, store, run_id, _files_under(store.run_dir(run_id)), store.epochs(run_id))
    yield sb
    handled = sum(RESULTS.values())
    line = f"hostile inputs: {len(RESULTS)} kinds tried, {handled} handled"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)


def _assert_plain_sentence(text: str) -> None:
    assert text and "\n" not in text and "Traceback" not in text, text
    assert text[0].isupper() or text[0] in "'\"", text
    assert text.rstrip().endswith((".", ")")), text
    assert len(text) < 600, text


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.slow
def test_hostile_input_gets_a_plain_sentence(name: str, sandbox: Sandbox) -> None:
    RESULTS[name] = False
    outcome = KINDS[name](sandbox)
    _assert_plain_sentence(outcome.sentence)
    # Nothing outside the app's folders; the earlier run is untouched.
    stray = [p for p in sandbox.root.rglob("*") if p.is_file()
             and sandbox.home not in p.parents and sandbox.inputs not in p.parents]
    assert stray == []
    record = sandbox.store.get(sandbox.earlier_run)
    assert record is not None and record.status == "finished" and record.result == {"accuracy": 0.8}
    assert sandbox.store.epochs(sandbox.earlier_run) == sandbox.earlier_epochs
    assert _files_under(sandbox.store.run_dir(sandbox.earlier_run)) == sandbox.earlier_files
    RESULTS[name] = True


def test_the_corpus_covers_every_kind_the_issue_lists() -> None:
    wanted = ["zero-byte", "truncated", "named .jpg", "CMYK", "16-bit", "palette", "EXIF", "30000x30000",
              "../", "absolute", "symlink", "zip bomb", "10,000", "unicode", "one-class", "empty dataset",
              "one image", "different classes", "NaN", "Lambda", "pickled"]
    names = " | ".join(KINDS)
    assert [w for w in wanted if w not in names] == []
    assert len(KINDS) >= 25
