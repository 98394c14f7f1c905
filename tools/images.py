"""Reading the caller's image: every accepted form, every refusal, before any model work.

Accepted: a filesystem path, a ``file://`` URI, a ``data:image/...;base64,`` URL, an
``ImageRef`` of the artifact store, or a PIL image. The result is always an 8-bit RGB PIL
image, upright (EXIF orientation applied), with transparency flattened onto white. The source
file is only ever opened for reading.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tools.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image

    from tools.artifacts import ArtifactStore

__all__ = ["load_image", "check_instruction", "SUPPORTED_URI_SCHEMES"]

#: The schemes this package can read. Nothing is ever fetched over a network.
SUPPORTED_URI_SCHEMES = ("file", "data")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")
_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+)?(;[^,]*)?,(.*)$", re.DOTALL)


def check_instruction(instruction: Any, *, max_chars: int) -> str:
    """Return the instruction stripped, or raise ``InvalidInputError`` saying what is wrong."""
    if not isinstance(instruction, str):
        raise InvalidInputError(f"instruction must be a string, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise InvalidInputError(f"instruction is empty: {instruction!r}")
    if len(text) > max_chars:
        raise InvalidInputError(
            f"instruction is {len(text)} characters long; the limit (max_instruction_chars) "
            f"is {max_chars}"
        )
    return text


def load_image(
    image: Any,
    *,
    store: ArtifactStore | None = None,
    allowed_schemes: tuple[str, ...] | list[str] = SUPPORTED_URI_SCHEMES,
    max_pixels: int,
) -> Image.Image:
    """Read ``image`` (see module docstring) into an upright 8-bit RGB PIL image.

    Raises ``InvalidInputError`` naming the problem: unknown type, forbidden scheme, missing
    file, not an image, truncated data, or more than ``max_pixels`` pixels.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return _normalise(image, source="the given PIL image", max_pixels=max_pixels)
    if isinstance(image, dict):
        if store is None or "sha256" not in image:
            raise InvalidInputError(f"image dict is not an ImageRef of this agent's store: {image!r}")
        try:
            data = store.read_bytes(image)  # type: ignore[arg-type]
        except (ValueError, FileNotFoundError, TypeError) as exc:
            raise InvalidInputError(f"image ImageRef cannot be read: {exc}") from exc
        return _decode(data, source=f"artifact {image['sha256'][:12]}", max_pixels=max_pixels)
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if not isinstance(image, str):
        raise InvalidInputError(
            "image must be a path, a file:// or data: URI, an ImageRef or a PIL image; "
            f"got {type(image).__name__}"
        )
    if not image.strip():
        raise InvalidInputError(f"image is empty: {image!r}")

    match = _SCHEME.match(image)
    # A plain path is a file read like a file:// URI (one-letter "schemes" are drive letters).
    scheme = match.group(1).lower() if match is not None else "file"
    if scheme not in allowed_schemes:
        hint = "" if scheme in SUPPORTED_URI_SCHEMES else (
            "; nothing is fetched over a network: download the image and pass its path")
        raise InvalidInputError(
            f"image URI scheme {scheme!r} is not allowed (allowed_uri_schemes="
            f"{list(allowed_schemes)!r}){hint}"
        )
    if match is None:
        return _read_path(Path(image).expanduser(), max_pixels=max_pixels)
    if scheme == "file":
        parsed = urlparse(image)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidInputError(f"file URI names a remote host {parsed.netloc!r}: {image[:80]!r}")
        return _read_path(Path(unquote(parsed.path)), max_pixels=max_pixels)
    if scheme == "data":
        return _read_data_url(image, max_pixels=max_pixels)
    raise InvalidInputError(f"image URI scheme {scheme!r} is not supported; use one of {SUPPORTED_URI_SCHEMES!r}")


def _read_path(path: Path, *, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise InvalidInputError(f"image file not found: {str(path)!r}")
    if not path.is_file():
        raise InvalidInputError(f"image path is not a file: {str(path)!r}")
    with open(path, "rb") as f:  # read-only: the caller's file is never touched again
        data = f.read()
    return _decode(data, source=repr(str(path)), max_pixels=max_pixels)


def _read_data_url(url: str, *, max_pixels: int) -> Image.Image:
    match = _DATA_URL.match(url)
    if match is None or match.group(1) is None:
        raise InvalidInputError(f"data URL must be data:image/<type>;base64,...: {url[:40]!r}")
    params = (match.group(2) or "").lower()
    if "base64" not in params:
        raise InvalidInputError(f"data URL must be base64-encoded: {url[:40]!r}")
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"data URL holds invalid base64: {exc}") from exc
    return _decode(data, source="the data URL", max_pixels=max_pixels)


def _decode(data: bytes, *, source: str, max_pixels: int) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise InvalidInputError(f"{source} is not an image PIL can read") from exc
    _check_size(image, source=source, max_pixels=max_pixels)  # before decoding any pixels
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"{source} is truncated or corrupt: {exc}") from exc
    return _normalise(image, source=source, max_pixels=max_pixels)


def _check_size(image: Image.Image, *, source: str, max_pixels: int) -> None:
    w, h = image.size
    if w < 1 or h < 1:
        raise InvalidInputError(f"{source} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise InvalidInputError(
            f"{source} is {w}x{h} = {w * h} pixels, over the limit max_input_pixels={max_pixels}"
        )


def _normalise(image: Image.Image, *, source: str, max_pixels: int) -> Image.Image:
    import numpy as np
    from PIL import Image, ImageOps

    _check_size(image, source=source, max_pixels=max_pixels)
    image = ImageOps.exif_transpose(image)  # returns a copy; also for images without EXIF
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits (convert("L") would clip, not scale).
        arr = np.asarray(image).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(image)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        image = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, L, 1, YCbCr, LAB, HSV
    return image
