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
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tools.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import Image

    from tools.artifacts import ArtifactStore

__all__ = [
    "load_image",
    "check_instruction",
    "SUPPORTED_URI_SCHEMES",
    "DEFAULT_MAX_INPUT_BYTES",
    "FIRST_FRAME_NOTE",
]

#: The schemes this package can read. Nothing is ever fetched over a network.
SUPPORTED_URI_SCHEMES = ("file", "data")
#: Largest input file (or decoded data URL) read, in bytes: checked before reading anything.
DEFAULT_MAX_INPUT_BYTES = 256 * 1024 * 1024
#: Key of ``Image.info`` that says an animation or multi-page file was cut to its first frame.
FIRST_FRAME_NOTE = "mira_input_note"

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
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    file_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> Image.Image:
    """Read ``image`` (see module docstring) into an upright 8-bit RGB PIL image.

    Raises ``InvalidInputError`` naming the problem: unknown type, forbidden scheme, missing
    or unreadable file (every ``OSError`` is mapped, naming the path), more than ``max_bytes``
    bytes (checked before reading), not an image, truncated data, a decompression or
    text-chunk bomb, or more than ``max_pixels`` pixels. An animation or a multi-page file
    gives its first frame, and the result's ``info[FIRST_FRAME_NOTE]`` says so.

    ``file_roots``: ``None`` reads any file; otherwise only files that lie (links resolved)
    under one of these folders, and an empty sequence reads no file at all (a served graph).
    A missing file and a file outside the roots then get the same error text, so a client
    cannot probe which server paths exist. Data URLs and ImageRefs are not files: unaffected.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return _normalise(image, source="the given PIL image", max_pixels=max_pixels)
    if isinstance(image, dict):
        if store is None or "sha256" not in image:
            raise InvalidInputError(
                f"image dict is not an ImageRef of this agent's store: {image!r}"
            )
        try:
            data = store.read_bytes(image)  # type: ignore[arg-type]
        except (ValueError, OSError, TypeError) as exc:
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
        hint = (
            ""
            if scheme in SUPPORTED_URI_SCHEMES
            else ("; nothing is fetched over a network: download the image and pass its path")
        )
        raise InvalidInputError(
            f"image URI scheme {scheme!r} is not allowed (allowed_uri_schemes="
            f"{list(allowed_schemes)!r}){hint}"
        )
    if match is None:
        return _read_path(
            Path(os.path.expanduser(image)),
            max_pixels=max_pixels,
            max_bytes=max_bytes,
            roots=file_roots,
        )
    if scheme == "file":
        parsed = urlparse(image)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"file URI names a remote host {parsed.netloc!r}: {image[:80]!r}"
            )
        return _read_path(
            Path(unquote(parsed.path)), max_pixels=max_pixels, max_bytes=max_bytes, roots=file_roots
        )
    if scheme == "data":
        return _read_data_url(image, max_pixels=max_pixels, max_bytes=max_bytes)
    raise InvalidInputError(
        f"image URI scheme {scheme!r} is not supported; use one of {SUPPORTED_URI_SCHEMES!r}"
    )


def _os_error(path: Path, exc: OSError) -> InvalidInputError:
    if isinstance(exc, FileNotFoundError):
        return InvalidInputError(f"image file not found: {str(path)!r}")
    why = exc.strerror or type(exc).__name__
    return InvalidInputError(f"image file {str(path)!r} cannot be read: {why}")


def _not_found_or_not_allowed(path: Path) -> InvalidInputError:
    return InvalidInputError(
        f"image file not found or not allowed: {str(path)!r} (files are read only under the "
        "configured allowed_file_roots)"
    )


def _under(path: Path, roots: Sequence[str | os.PathLike[str]]) -> bool:
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


def _read_path(
    path: Path,
    *,
    max_pixels: int,
    max_bytes: int,
    roots: Sequence[str | os.PathLike[str]] | None = None,
) -> Image.Image:
    import stat

    if "\x00" in str(path):  # os.stat would raise ValueError("embedded null byte")
        raise InvalidInputError(f"image path contains a NUL byte: {str(path)!r}")
    if roots is not None:
        if not _under(path, roots):
            raise _not_found_or_not_allowed(path)
        try:
            os.stat(path)
        except FileNotFoundError:
            raise _not_found_or_not_allowed(path) from None
        except OSError:
            pass  # reported below, like any read error

    try:
        st = os.stat(path)  # follows links: a loop or a dangling link is an OSError here
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"image path is not a file (not a regular file): {str(path)!r}")
        if st.st_size > max_bytes:  # before reading: a huge (or sparse) file is never loaded
            raise InvalidInputError(
                f"image file {str(path)!r} is {st.st_size} bytes, over the limit "
                f"max_input_bytes={max_bytes}"
            )
        with open(path, "rb") as f:  # read-only: the caller's file is never touched again
            data = f.read(max_bytes + 1)  # the file may grow between stat and read
    except OSError as exc:
        raise _os_error(path, exc) from exc
    if len(data) > max_bytes:
        raise InvalidInputError(
            f"image file {str(path)!r} is over the limit max_input_bytes={max_bytes}"
        )
    return _decode(data, source=repr(str(path)), max_pixels=max_pixels)


def _read_data_url(url: str, *, max_pixels: int, max_bytes: int) -> Image.Image:
    match = _DATA_URL.match(url)
    if match is None or match.group(1) is None:
        raise InvalidInputError(f"data URL must be data:image/<type>;base64,...: {url[:40]!r}")
    params = (match.group(2) or "").lower()
    if "base64" not in params:
        raise InvalidInputError(f"data URL must be base64-encoded: {url[:40]!r}")
    if len(match.group(3)) // 4 * 3 > max_bytes:  # before decoding
        raise InvalidInputError(
            f"data URL holds about {len(match.group(3)) // 4 * 3} bytes, over the limit "
            f"max_input_bytes={max_bytes}"
        )
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"data URL holds invalid base64: {exc}") from exc
    return _decode(data, source="the data URL", max_pixels=max_pixels)


def _decode(data: bytes, *, source: str, max_pixels: int) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our own limit (max_pixels) is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # header claims far more pixels than allowed
        raise InvalidInputError(
            f"{source} claims too many pixels (a decompression bomb?), over the limit "
            f"max_input_pixels={max_pixels}: {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidInputError(f"{source} is not an image PIL can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # e.g. a PNG text chunk that decompresses past PIL's limit ("Decompressed Data Too
        # Large"), or a header PIL recognises but cannot parse.
        raise InvalidInputError(f"{source} is not an image PIL can read: {exc}") from exc
    _check_size(image, source=source, max_pixels=max_pixels)  # before decoding any pixels
    frames = getattr(image, "n_frames", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # the first frame only, on purpose
    except Image.DecompressionBombWarning as exc:
        raise InvalidInputError(f"{source} is a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        raise InvalidInputError(f"{source} is truncated or corrupt: {exc}") from exc
    result = _normalise(image, source=source, max_pixels=max_pixels)
    if isinstance(frames, int) and frames > 1:
        result.info[FIRST_FRAME_NOTE] = (
            f"{source} has {frames} frames (an animation or a multi-page file): "
            "the first frame is used"
        )
    return result


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
