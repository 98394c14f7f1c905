"""The region a user confines an edit to: a mask image or pixel XYXY boxes.

``region_mask`` turns the caller's ``mask`` or ``boxes`` into one HxW bool array in the frame of
the input image (True = may change), refusing anything unusable with ``InvalidInputError``
naming the argument and its value. ``paste_inside`` keeps an edited image's pixels inside the
region and the original's outside, so outside the region the result equals the input exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tools.contracts import Box
from tools.errors import InvalidInputError
from tools.images import DEFAULT_MAX_INPUT_BYTES, SUPPORTED_URI_SCHEMES, load_image

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from tools.artifacts import ArtifactStore

__all__ = ["region_mask", "paste_inside", "region_boxes"]


def _check_boxes(boxes: Any, width: int, height: int) -> list[tuple[int, int, int, int]]:
    if not isinstance(boxes, Sequence) or isinstance(boxes, str) or not boxes:
        raise InvalidInputError(
            f"boxes must be a non-empty list of [x1, y1, x2, y2], got {boxes!r}"
        )
    out = []
    for box in boxes:
        ok = (
            isinstance(box, Sequence)
            and not isinstance(box, str)
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        )
        if not ok:
            raise InvalidInputError(
                f"boxes item {box!r} is not four integer pixels [x1, y1, x2, y2] (boxes={boxes!r})"
            )
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise InvalidInputError(
                f"boxes item {list(box)!r} must have 0 <= x1 < x2 <= {width} and "
                f"0 <= y1 < y2 <= {height} (the image is {width}x{height}; x2, y2 exclusive)"
            )
        out.append((x1, y1, x2, y2))
    return out


def region_mask(
    *,
    mask: Any = None,
    boxes: Any = None,
    size: tuple[int, int],
    store: ArtifactStore | None = None,
    allowed_schemes: tuple[str, ...] | list[str] = SUPPORTED_URI_SCHEMES,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    file_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> np.ndarray | None:
    """The user's region as an HxW bool array for an image of ``size`` (width, height), or
    ``None`` when neither ``mask`` nor ``boxes`` is given.

    ``mask``: an image (path, ``file://``/``data:`` URI, ``ImageRef`` or PIL image) of the
    input's size, read under the same limits as the image (``load_image``: schemes, size,
    file roots); pixels brighter than mid-grey are inside. ``boxes``: pixel XYXY boxes
    (x2, y2 exclusive); their union is the region. Giving both, an empty region, or a mask of
    another size raises ``InvalidInputError``.
    """
    import numpy as np

    if mask is None and boxes is None:
        return None
    if mask is not None and boxes is not None:
        raise InvalidInputError(
            f"give mask or boxes, not both (mask={str(mask)[:60]!r}, boxes={boxes!r})"
        )
    width, height = size
    if boxes is not None:
        region = np.zeros((height, width), dtype=bool)
        for x1, y1, x2, y2 in _check_boxes(boxes, width, height):
            region[y1:y2, x1:x2] = True
        return region
    try:
        image = load_image(
            mask,
            store=store,
            allowed_schemes=allowed_schemes,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
            file_roots=file_roots,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"mask cannot be read: {exc}") from exc
    if image.size != (width, height):
        raise InvalidInputError(
            f"mask is {image.width}x{image.height}, the image is {width}x{height}: they must match"
        )
    region = np.asarray(image.convert("L")) > 127  # (H, W)
    if not region.any():
        raise InvalidInputError(f"mask {str(mask)[:60]!r} is empty: no pixel above mid-grey")
    return region


def paste_inside(region: np.ndarray, edited: Image.Image, original: Image.Image) -> Image.Image:
    """``edited`` inside ``region`` (HxW bool), ``original`` everywhere else."""
    import numpy as np
    from PIL import Image

    if edited.size != original.size:
        edited = edited.resize(original.size, Image.Resampling.LANCZOS)
    a = np.asarray(edited.convert("RGB"))  # (H, W, 3) uint8
    b = np.asarray(original.convert("RGB"))
    return Image.fromarray(np.where(region[..., None], a, b))


def region_boxes(region: np.ndarray) -> list[Box]:
    """The bounding box of ``region`` (pixel XYXY, x2/y2 exclusive), as a one-item list."""
    import numpy as np

    ys, xs = np.nonzero(region)
    return [Box(x1=int(xs.min()), y1=int(ys.min()), x2=int(xs.max()) + 1, y2=int(ys.max()) + 1)]
