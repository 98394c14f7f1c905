"""Input image and instruction checks, re-exported from ``tools.images`` (where they live)."""

from tools.images import SUPPORTED_URI_SCHEMES, check_instruction, load_image

__all__ = ["load_image", "check_instruction", "SUPPORTED_URI_SCHEMES"]
