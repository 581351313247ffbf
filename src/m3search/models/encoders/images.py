"""Decoding images with Pillow (the ``images`` extra) and turning them into a vision tower's pixel values.

:func:`pixel_values` reproduces ``transformers.CLIPImageProcessor`` step for step: transparency composited onto
white, the shortest edge resized to ``size`` with Pillow's bicubic filter (the long edge truncated to an integer),
a centre crop, pixels scaled to [0, 1] in float64 and normalised per channel in float32. Decoding problems are
:class:`~m3search.errors.ImageError` naming the file; nothing is decoded past :data:`MAX_PIXELS`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m3search._optional import require
from m3search.errors import ImageError
from m3search.models.registry import ImageFacts
from m3search.types import FloatArray

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
MAX_PIXELS = 50_000_000  # about 7000 x 7000: larger files are refused before their pixels are decoded
ImageInput = str | Path | bytes | np.ndarray[Any, Any]


def _pil() -> Any:
    return require("PIL.Image", "images", "Reading images")


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes m3search indexes."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(source: str | Path | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image:
    """Decode an image file (path or bytes) fully into an RGB Pillow image (first frame of animations).

    Raises:
        ImageError: not an image, truncated or corrupt, or more than ``max_pixels`` pixels; names the file.
    """
    pil = _pil()
    where = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise ImageError(where, f"unreadable ({exc.strerror or exc})") from exc
    with io.BytesIO(data) as handle, warnings.catch_warnings():
        warnings.simplefilter("error", pil.DecompressionBombWarning)
        try:
            image = pil.open(handle)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(where, f"{width}x{height} pixels is more than the {max_pixels} allowed "
                                        f"(a decompression bomb?); resize it first")
            image.seek(0)
            image.load()
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
            raise ImageError(where, f"too many pixels ({exc}); resize it first") from exc
        except pil.UnidentifiedImageError as exc:
            raise ImageError(where, f"not an image Pillow can read (use {', '.join(IMAGE_SUFFIXES)})") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's decoders raise these when truncated
            raise ImageError(where, f"truncated or corrupt image ({exc})") from exc
    return to_rgb(image)


def probe(data: bytes, name: str) -> tuple[int, int, str]:
    """(width, height, format) of an encoded image, after checking that it decodes (:class:`ImageError` if not)."""
    decoded = open_image(data, name=name)
    with io.BytesIO(data) as handle, _pil().open(handle) as header:
        kind = str(header.format or "unknown").lower()
    return decoded.width, decoded.height, kind


def to_rgb(image: Image) -> Image:
    """RGB, with any transparency composited onto white (as ``CLIPImageProcessor`` does)."""
    pil = _pil()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
        return pil.alpha_composite(background, rgba).convert("RGB")  # type: ignore[no-any-return]
    return image if image.mode == "RGB" else image.convert("RGB")


def from_array(array: np.ndarray[Any, Any], name: str = "array") -> Image:
    """A uint8 array (H x W, H x W x 3 or H x W x 4) as an RGB Pillow image."""
    pil = _pil()
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, f"an image array must be uint8 of shape HxW, HxWx3 or HxWx4, not {array.dtype} "
                               f"{array.shape}")
    if min(array.shape[:2]) < 1:
        raise ImageError(name, "the image is empty")
    return to_rgb(pil.fromarray(np.ascontiguousarray(array)))


def load(item: ImageInput, name: str | None = None) -> Image:
    """Any accepted input (path, encoded bytes, uint8 array) as an RGB Pillow image."""
    if isinstance(item, np.ndarray):
        return from_array(item, name or "array")
    if isinstance(item, str | Path | bytes):
        return open_image(item, name=name)
    raise ImageError(name or "image", f"expected a path, bytes or a uint8 array, not {type(item).__name__}")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shortest edge at ``size`` and the long edge scaled and truncated (transformers')."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def pixel_values(image: Image, facts: ImageFacts) -> FloatArray:
    """One RGB image as the vision tower's input: float32, channels first, ``(3, size, size)``."""
    pil = _pil()
    resample = {"bicubic": pil.Resampling.BICUBIC, "bilinear": pil.Resampling.BILINEAR}[facts.resample]
    size = facts.size
    resized = np.asarray(image.resize(resized_size(*image.size, size), resample=resample))
    height, width = resized.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    crop = resized[top : top + size, left : left + size].transpose(2, 0, 1)
    scaled = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(facts.mean, dtype=np.float32), np.asarray(facts.std, dtype=np.float32)
    result: FloatArray = ((scaled.T - mean) / std).T
    return np.ascontiguousarray(result, dtype=np.float32)


def batch_pixels(images: Sequence[Image], facts: ImageFacts) -> FloatArray:
    """Several images as one ``(N, 3, size, size)`` float32 batch."""
    return np.stack([pixel_values(image, facts) for image in images]).astype(np.float32, copy=False)
