"""Decode any image file safely into a uint8 array: the pipeline and the Classify page share this."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import UserError, short_error

MAX_PIXELS: int = 100_000_000
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
     ".heic", ".heif", ".avif"}
)
# Files a verification pass may decode at reduced size (JPEG DCT scaling) to stay fast on photos.
_VERIFY_DRAFT_EDGE = 1024
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")

try:  # HEIC photos from phones: decodable only with pillow-heif's opener registered.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False

_HEIC_HINT = (
    " Convert it to JPEG or PNG first (on an iPhone: Settings > Camera > Formats > Most Compatible;"
    " on a Mac: open it in Preview and choose File > Export > JPEG), or install pillow-heif."
)


class ImageDecodeError(UserError):
    """A file that cannot become an image; ``reason`` is the short cause shown in health reports."""

    def __init__(self, reason: str, name: str | None = None, hint: str = "") -> None:
        self.reason = reason
        self.name = name
        who = f"'{name}'" if name else "The file"
        super().__init__(f"{who} could not be read as an image: {reason}.{hint}")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a file's header says: size after EXIF rotation, source mode and the channels it decodes to."""

    width: int
    height: int
    mode: str
    channels: int
    format: str
    orientation: int = 1
    transparency: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tf_decoder(self) -> str | None:
        """'jpeg' or 'png' when TensorFlow's own decoder yields exactly what ``decode_image`` does."""
        if self.orientation not in (0, 1) or self.transparency or self.mode not in ("L", "RGB"):
            return None
        return {"JPEG": "jpeg", "PNG": "png"}.get(self.format)


def _read_bytes(data: bytes | str | Path | BinaryIO) -> tuple[bytes, str | None]:
    """The raw bytes and a display name of whatever the caller handed us."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), None
    if isinstance(data, (str, Path)):
        path = Path(data)
        try:
            return path.read_bytes(), path.name
        except FileNotFoundError:
            raise ImageDecodeError("the file does not exist", path.name) from None
        except IsADirectoryError:
            raise ImageDecodeError("it is a folder, not a file", path.name) from None
        except OSError as err:
            raise ImageDecodeError(f"it cannot be opened ({err.strerror or err})", path.name) from None
    raw = data.read()
    name = getattr(data, "name", None)
    return bytes(raw), (Path(name).name if isinstance(name, str) else None)


def _looks_like_heif(raw: bytes) -> bool:
    return len(raw) >= 12 and raw[4:8] == b"ftyp" and raw[8:12] in _HEIF_BRANDS


def _open(raw: bytes, name: str | None) -> Image.Image:
    """Open (header only) with the pixel limit enforced before any pixel is decoded."""
    if not raw:
        raise ImageDecodeError("the file is empty (0 bytes)", name)
    try:
        with warnings.catch_warnings():
            # We enforce our own MAX_PIXELS below; Pillow's own warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError:
        raise ImageDecodeError("it has too many pixels to decode safely", name) from None
    except UnidentifiedImageError:
        if _looks_like_heif(raw):
            raise ImageDecodeError("it is a HEIC/HEIF photo and HEIC support is not installed", name,
                                   _HEIC_HINT) from None
        raise ImageDecodeError("it is not an image file (unknown format)", name) from None
    except Exception as err:  # noqa: BLE001 - any parser failure on user bytes means a damaged file
        raise _damaged(err, name) from None
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageDecodeError("it has no pixels", name)
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"it has too many pixels ({width} x {height}, the limit is {MAX_PIXELS:,})", name
        )
    return im


def _damaged(err: BaseException, name: str | None) -> ImageDecodeError:
    """Truncated files (the commonest damage: an interrupted copy) get their own reason."""
    text = str(err).lower()
    if "truncat" in text or isinstance(err, EOFError) or "premature" in text:
        return ImageDecodeError("the file is truncated (incomplete download or copy)", name)
    return ImageDecodeError(f"the file is damaged ({short_error(err, 80)})", name)


def _load(im: Image.Image, name: str | None) -> Image.Image:
    """Decode the pixels (first frame of animations) and apply the EXIF orientation."""
    try:
        im.seek(0)
        im.load()
    except Exception as err:  # noqa: BLE001 - truncated/corrupt streams raise many types
        raise _damaged(err, name) from None
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose a good image
        return im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001
        return 1


def _source_channels(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _over_white(im: Image.Image) -> Image.Image:
    """Transparent pixels become white: what a person sees in a viewer, and stable for training."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _wide_gray_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grayscale to 8 bits, scaling by the depth rather than clipping."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        arr = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
        out = np.nan_to_num(arr).clip(0, 255)
    elif im.mode.startswith("I;16") or (im.mode == "I" and int(arr.max(initial=0)) > 255):
        out = arr.astype(np.float64) / 257.0
    else:
        out = arr.clip(0, 255)
    return Image.fromarray(np.rint(out).astype(np.uint8), mode="L")


def _normalise(im: Image.Image) -> Image.Image:
    """Any Pillow mode to plain 'L' or 'RGB' (alpha over white, palettes expanded, depth reduced)."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        return _over_white(im) if has_alpha else im.convert("RGB")
    if mode in ("LA", "La"):
        return _over_white(im).convert("L")
    if mode in ("RGBA", "RGBa"):
        return _over_white(im)
    if mode == "1":
        return im.convert("L")
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _wide_gray_to_l(im)
    if "transparency" in im.info:
        return _over_white(im)
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _to_array(im: Image.Image, channels: int | None) -> np.ndarray:
    plain = _normalise(im)
    want = channels if channels is not None else (1 if plain.mode == "L" else 3)
    if want not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None, not {channels!r}")
    if want == 1 and plain.mode != "L":
        plain = plain.convert("L")
    elif want == 3 and plain.mode != "RGB":
        plain = plain.convert("RGB")
    arr = np.asarray(plain, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def decode_image(data: bytes | str | Path | BinaryIO, channels: int | None = 3,
                 max_side: int | None = None) -> np.ndarray:
    """Any supported image (bytes, path or open file) as a uint8 H x W x C array.

    EXIF orientation is applied, transparency is composited over white, palette/16-bit/CMYK are
    converted; ``channels=None`` keeps 1 channel for grayscale sources and gives 3 otherwise.
    ``max_side`` lets a JPEG decode at a reduced scale (1/2 .. 1/8, never below ``max_side``): for
    analyses that look at small versions of photos, not for model pixels.
    """
    raw, name = _read_bytes(data)
    im = _open(raw, name)
    if max_side and im.format == "JPEG" and max(im.size) >= 2 * max_side:
        im.draft(im.mode if im.mode in ("L", "RGB") else None, (max_side, max_side))
    im = _load(im, name)
    try:
        return _to_array(im, channels)
    except ImageDecodeError:
        raise
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - exotic modes Pillow cannot convert
        raise ImageDecodeError(f"its colour format is not supported ({short_error(err, 80)})", name) from None


def resize_image(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (squash, no crop) to ``size`` or (height, width): area averaging down, bilinear up."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if img.shape[0] == height and img.shape[1] == width:
        return img
    shrinking = height <= img.shape[0] and width <= img.shape[1]
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def image_info(path: str | Path | bytes) -> ImageInfo:
    """Size, mode, channels and format from the header only (no pixel decoding)."""
    raw, name = _read_bytes(path)
    im = _open(raw, name)
    return _info_of(im)


def _info_of(im: Image.Image) -> ImageInfo:
    orientation = _orientation(im)
    width, height = im.size
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: the decoded image is transposed
        width, height = height, width
    transparency = "A" in im.mode or im.mode == "PA" or "transparency" in im.info
    return ImageInfo(
        width=width,
        height=height,
        mode=im.mode,
        channels=_source_channels(im.mode if im.mode != "P" else "RGB"),
        format=im.format or "",
        orientation=orientation,
        transparency=transparency,
    )


def verify_image(path: str | Path) -> tuple[ImageInfo, str]:
    """Fully decode a file to prove it is whole; returns its header info and a hash of its pixels.

    Large JPEGs are decoded at reduced scale (still reading every byte, so truncation shows).
    The hash is over the decoded pixels, so the same picture saved twice is found as a duplicate.
    """
    raw, name = _read_bytes(path)
    im = _open(raw, name)
    info = _info_of(im)
    if im.format == "PNG":  # Pillow decodes PNGs without checking chunk checksums; verify() does
        try:
            Image.open(io.BytesIO(raw)).verify()
        except Exception as err:  # noqa: BLE001
            raise _damaged(err, name) from None
    if im.format == "JPEG" and max(im.size) > _VERIFY_DRAFT_EDGE:
        im.draft(im.mode, (im.size[0] // 8 or 1, im.size[1] // 8 or 1))
    loaded = _load(im, name)
    try:
        pixels = _normalise(loaded)
    except Exception as err:  # noqa: BLE001
        raise ImageDecodeError(f"its colour format is not supported ({short_error(err, 80)})", name) from None
    digest = hashlib.sha1(f"{pixels.mode}{pixels.size}".encode())
    digest.update(pixels.tobytes())
    return info, digest.hexdigest()
