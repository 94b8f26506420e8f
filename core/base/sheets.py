"""Image intake: validate and normalize every upload before anything is stored.

One function, `prepare_image`, turns raw upload bytes into a `PreparedImage` (RGB PNG, longest
side capped, a JPEG thumbnail, a sha256) or raises `ImageRejected` with a human message.
Everything downstream (storage, prompts, the pixel cache) can then trust the image.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.base.errors import UserError

ACCEPTED_FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}
UPLOAD_EXTENSIONS: list[str] = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
STORED_MIME = "image/png"

# Never let Pillow quietly load half a file.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(UserError):
    """An upload we will not store. `code` selects the message; `params` fill it in."""

    namespace = "image"

    def __init__(self, code: str, name: str = "", **params: Any) -> None:
        super().__init__(code, name=name or "file", **params)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 2048
    thumbnail_side: int = 256


@dataclass(frozen=True)
class Picture:
    """A normalized picture, as the model sees it and pages name it: its PNG bytes, identified by their
    sha256 (the pixel cache's and a server's prefix cache's key), with the name people know it by."""

    sha256: str
    data: bytes = field(repr=False, compare=False)
    name: str = field(default="", compare=False)

    @classmethod
    def of(cls, stored: Any) -> Picture:
        """From a stored one (`storage.images.Stored`: its row and full bytes)."""
        return cls(stored.row.sha256, stored.data, stored.row.original_name)

    def pixels(self) -> Image.Image:
        """The picture decoded (RGB); a damaged one is `ImageRejected` naming it, never a bare OSError."""
        return decode(self.data, self.name)


@dataclass(frozen=True, kw_only=True)
class PreparedImage(Picture):
    """An upload validated and normalized (RGB PNG, longest side capped), with what a stored row keeps
    beside it: a small JPEG thumbnail, its size, and the format it came in."""

    thumbnail: bytes = field(repr=False)
    width: int
    height: int
    original_format: str = ""
    mime_type: str = STORED_MIME

    @property
    def original_name(self) -> str:
        """The name as a stored row keeps it (`storage.tables.ImageData`)."""
        return self.name


def safe_name(name: str, limit: int = 120) -> str:
    """An upload's name as it may be stored and shown: the last path part only (no `../`), without
    control or format characters (no terminal escapes, no bidi tricks), at most `limit` characters."""
    last = re.split(r"[\\/]", name or "")[-1]
    cleaned = "".join(ch for ch in last if unicodedata.category(ch) not in ("Cc", "Cf", "Cs")).strip()
    cleaned = cleaned.lstrip(".") or "image"
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def prepare_image(data: bytes, name: str = "", limits: ImageLimits | None = None) -> PreparedImage:
    """Validate `data` as an image and normalize it, or raise `ImageRejected`."""
    limits = limits or ImageLimits()
    name = safe_name(name) if name else ""
    if not data:
        raise ImageRejected("empty", name)
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", name, size_mb=_megabytes(len(data)), limit_mb=_megabytes(limits.max_bytes))
    image, fmt = _open(data, name, limits)
    image = _to_rgb(ImageOps.exif_transpose(image))
    if max(image.size) > limits.max_side:
        image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    png = _encode(image, "PNG", optimize=False, compress_level=6)
    thumb = image.copy()
    thumb.thumbnail((limits.thumbnail_side, limits.thumbnail_side), Image.Resampling.LANCZOS)
    return PreparedImage(
        data=png,
        thumbnail=_encode(thumb, "JPEG", quality=85),
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(png).hexdigest(),
        name=name,
        original_format=fmt,
    )


def check_uploads(
    uploads: Iterable[tuple[str, bytes]], limits: ImageLimits | None = None
) -> tuple[list[PreparedImage], list[ImageRejected]]:
    """The one upload validator: every (name, bytes) prepared, or the reason it was refused.

    Callers store nothing unless the second list is empty, so a batch is kept whole or not at all."""
    good: list[PreparedImage] = []
    bad: list[ImageRejected] = []
    for name, data in uploads:
        try:
            good.append(prepare_image(data, name, limits))
        except ImageRejected as exc:
            bad.append(exc)
    return good, bad


def decode(data: bytes, name: str = "") -> Image.Image:
    """Open a stored (already normalized) image as RGB. One damaged in storage (written by another
    program, a disk fault) is `ImageRejected` naming it, so the reply says which picture to replace."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ImageRejected("damaged_stored", name or "?") from exc
    return image.convert("RGB") if image.mode != "RGB" else image


def declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as the file's header declares them, read without decoding any pixels.

    Pillow's own decompression-bomb guard refuses to open a very large image before saying how
    large it is; each accepted format's reader, made directly, reads just the header."""
    Image.init()
    for fmt in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # noqa: BLE001 - not this format, or a broken header: the next reader, or None
            continue
    return None


def _too_many_pixels(name: str, size: tuple[int, int], limits: ImageLimits) -> ImageRejected:
    width, height = size
    megapixels, limit = f"{width * height / 1e6:.0f}", f"{limits.max_pixels / 1e6:.0f}"
    return ImageRejected("too_many_pixels", name, width=width, height=height, megapixels=megapixels, limit=limit)


def _open(data: bytes, name: str, limits: ImageLimits) -> tuple[Image.Image, str]:
    size = declared_size(data)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise _too_many_pixels(name, size, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected("unsupported", name, format=fmt or "?")
            width, height = image.size
            if width * height > limits.max_pixels:
                raise _too_many_pixels(name, image.size, limits)
            if width == 0 or height == 0:
                raise ImageRejected("corrupt", name)
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            return image, fmt
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_image", name) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # past our own check: frames
        raise ImageRejected("corrupt", name) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageRejected("corrupt", name) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB, transparency flattened onto white (the model has no alpha channel)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f}".removesuffix(".0")


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()
