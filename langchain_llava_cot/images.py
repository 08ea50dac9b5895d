"""Image input: read images from content blocks, validate them, decode them.

Every image is checked here, before any model work: it must decode, it must not be
truncated, and it must not be a decompression bomb. What passes is kept as its
original encoded bytes. What backends need from those bytes is made once per picture
and remembered (one search asks for the same picture at every stage and judge call):
:func:`decode_image` gives an RGB picture (the one validation decoded), :func:`image_key`
its content hash (the key of every cache), :func:`image_base64` its base64 text and
:func:`image_mime_type` its MIME type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from langchain_core.messages import HumanMessage

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageTooLargeError",
    "decode_image",
    "image_base64",
    "image_block",
    "image_key",
    "image_message",
    "image_mime_type",
    "read_base64_image",
    "read_image_bytes",
    "validate_image",
]

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels (width x height)."""


class ImageError(ValueError):
    """An image in the input cannot be used."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the limit, or is a decompression bomb."""


_REMEMBERED = 64
"""Distinct pictures whose key, base64 text, MIME type and decoded picture are kept."""


@lru_cache(maxsize=_REMEMBERED)
def image_key(data: bytes) -> str:
    """A picture's identity: the SHA-256 of its encoded bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=_REMEMBERED)
def image_base64(data: bytes) -> str:
    """The picture's encoded bytes as base64 text."""
    return base64.b64encode(data).decode()


@lru_cache(maxsize=_REMEMBERED)
def image_mime_type(data: bytes) -> str:
    """The MIME type of image bytes (``image/png``, ``image/jpeg``...); PNG when unknown."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "", "image/png")
    except (UnidentifiedImageError, OSError):
        return "image/png"  # not an image: validation rejects it with a clear error later


def image_block(data: bytes) -> dict[str, str]:
    """A LangChain image content block holding ``data`` as base64."""
    return {"type": "image", "base64": image_base64(data), "mime_type": image_mime_type(data)}


def image_message(image: bytes | Path, question: str) -> HumanMessage:
    """A user message with one image (its bytes, or a path to read) and then ``question``."""
    from langchain_core.messages import HumanMessage

    if isinstance(image, Path):
        image = image.read_bytes()
    if not isinstance(image, bytes):
        msg = f"image_message takes the image's bytes or a Path, got {type(image).__name__}."
        raise TypeError(msg)
    return HumanMessage(content=[image_block(image), {"type": "text", "text": question}])


def validate_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Check that ``data`` is a whole, decodable image of reasonable size; return it.

    The picture is decoded here, once: :func:`decode_image` keeps it for the backends.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    msg = (
                        f"Image of {width}x{height} pixels is larger than the limit of "
                        f"{max_pixels:,} pixels (a possible decompression bomb). Resize it "
                        "before sending, or raise `max_image_pixels`."
                    )
                    raise ImageTooLargeError(msg)
            decode_image(data)  # the one decode: kept for whoever reads the picture next
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        msg = f"Image rejected as a decompression bomb: {e}. Resize it before sending."
        raise ImageTooLargeError(msg) from e
    except UnidentifiedImageError as e:
        msg = "Image data is not a readable image. Send PNG, JPEG, GIF or WebP bytes."
        raise ImageError(msg) from e
    except (OSError, SyntaxError, ValueError) as e:
        msg = f"Image data is truncated or corrupt ({e}). Re-encode the image and send it again."
        raise ImageError(msg) from e
    return data


def read_image_bytes(
    source: str, *, allow_local_paths: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """Read an image from base64, a ``data:`` URL or (when allowed) a local path."""
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if ";base64" not in header:
            msg = "Image data URLs must be base64: 'data:image/png;base64,<data>'."
            raise ImageError(msg)
        return validate_image(_b64decode(payload), max_pixels=max_pixels)
    if source.startswith(("http://", "https://")):
        msg = (
            "Image URLs are not fetched (this package works offline). Download the image "
            "and send it as base64 or a data URL."
        )
        raise ImageError(msg)
    if source.startswith("file://") or _looks_like_path(source):
        path = Path(source.removeprefix("file://")).expanduser()
        if not allow_local_paths:
            msg = (
                f"Local image paths are off, so {source!r} was not read. Pass "
                "`allow_local_images=True` to ChatLlavaCoT, or send the image as base64."
            )
            raise ImageError(msg)
        if not path.is_file():
            msg = f"Image file {str(path)!r} does not exist."
            raise ImageError(msg)
        return validate_image(path.read_bytes(), max_pixels=max_pixels)
    return read_base64_image(source, max_pixels=max_pixels)


def read_base64_image(payload: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode and check base64 image data."""
    return validate_image(_b64decode(payload), max_pixels=max_pixels)


@lru_cache(maxsize=_REMEMBERED)
def decode_image(data: bytes) -> Image.Image:
    """Decode validated image bytes to RGB (cached: callers must not modify the result).

    A picture with transparency is laid on white first, as a viewer shows it (dropping the
    alpha channel would turn a transparent background black).
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")


def _b64decode(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = "Image is not valid base64. Encode the image bytes with base64.b64encode."
        raise ImageError(msg) from e


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or (
        len(source) < 4096
        and Path(source).suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
    )
