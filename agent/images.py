"""Input image and instruction checks, re-exported from ``tools.images`` (where they live)."""

from tools.images import (
    DEFAULT_MAX_INPUT_BYTES,
    FIRST_FRAME_NOTE,
    SUPPORTED_URI_SCHEMES,
    check_instruction,
    load_image,
)

__all__ = [
    "load_image",
    "check_instruction",
    "SUPPORTED_URI_SCHEMES",
    "DEFAULT_MAX_INPUT_BYTES",
    "FIRST_FRAME_NOTE",
]
