"""MIRAGE region geometry, shared by every model family (``docs/mirage.md``: prepare and handover).

Cells: a latent token covers ``cell`` x ``cell`` pixels (16 for FLUX.2: 8x VAE, 2x2 patches).
A region's box is snapped outward to whole cells, grown to a minimum size, shifted inward at
the image edges, and kept inside the canvas, so a branch latent maps 1:1 onto its cells.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tools.contracts import Box

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "Region",
    "CellBox",
    "snap_box",
    "batch_by_shape",
    "owner_map",
    "smooth3x3",
    "work_image",
    "scale_box",
    "MAX_AREA",
]

MAX_AREA = 1024 * 1024  # the FLUX pipelines resize larger references to ~1 MP


class Region(BaseModel):
    """One regional edit: where (pixel XYXY box in the source image) and what to do there."""

    instruction: str = Field(
        description="the atomic edit for this region, positional words dropped"
    )
    box: Box = Field(description="target box, pixel XYXY in the source image's frame")
    expression: str | None = Field(
        default=None, description="the referring expression it came from"
    )


@dataclass(frozen=True)
class CellBox:
    """A box in latent cells: columns ``x1..x2`` and rows ``y1..y2`` (ends exclusive)."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return (self.y2 - self.y1, self.x2 - self.x1)

    def to_pixels(self, cell: int) -> Box:
        return Box(x1=self.x1 * cell, y1=self.y1 * cell, x2=self.x2 * cell, y2=self.y2 * cell)


def snap_box(box: Box, *, cell: int, grid: tuple[int, int], min_cells: int = 4) -> CellBox:
    """Snap a pixel box outward to the cell grid of a canvas of ``grid`` = (rows, cols) cells.

    The result has at least ``min_cells`` cells per side (or the whole canvas side when the
    canvas is smaller), grows around the box's centre, and is shifted inward, never clipped,
    where it would leave the canvas.
    """
    rows, cols = grid
    if cell < 1 or rows < 1 or cols < 1:
        raise ValueError(f"bad cell grid: cell={cell!r}, grid={grid!r}")

    def axis(lo: int, hi: int, size: int) -> tuple[int, int]:
        a = max(0, lo // cell)
        b = min(size, -(-hi // cell))  # ceil
        if b <= a:  # box entirely outside the canvas on this axis
            raise ValueError(
                f"box {box.as_tuple()!r} lies outside the {cols * cell}x{rows * cell} canvas"
            )
        need = min(size, max(min_cells, b - a))
        if b - a < need:  # grow around the centre
            extra = need - (b - a)
            a -= extra // 2
            b += extra - extra // 2
        if a < 0:  # shift inward at the edges
            a, b = 0, b - a
        if b > size:
            a, b = a - (b - size), size
        return a, b

    x1, x2 = axis(box.x1, box.x2, cols)
    y1, y2 = axis(box.y1, box.y2, rows)
    return CellBox(x1=x1, y1=y1, x2=x2, y2=y2)


def batch_by_shape(boxes: list[CellBox], max_batch: int) -> list[list[int]]:
    """Indices of ``boxes`` grouped by cell shape, each group at most ``max_batch`` long, so
    same-shaped branches run in one transformer call."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, b in enumerate(boxes):
        groups[b.shape].append(i)
    return [
        idx[j : j + max_batch] for idx in groups.values() for j in range(0, len(idx), max_batch)
    ]


def smooth3x3(x: torch.Tensor) -> torch.Tensor:
    """Mean over each cell's 3x3 neighbourhood (edges averaged over the cells that exist).
    ``x``: (h, w) -> (h, w)."""
    import torch.nn.functional as F

    return F.avg_pool2d(x[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]


def owner_map(
    boxes: list[CellBox], strengths: list[torch.Tensor], grid: tuple[int, int]
) -> torch.Tensor:
    """Which branch owns each cell of the canvas: (rows, cols) int64, -1 where no box lies.

    ``strengths[k]`` is branch k's (h_k, w_k) edit strength (already smoothed). Where boxes
    overlap, the branch with the larger strength wins the cell; ties go to the earlier box.
    """
    import torch

    rows, cols = grid
    best = torch.full((rows, cols), float("-inf"))
    owner = torch.full((rows, cols), -1, dtype=torch.int64)
    for k, (b, s) in enumerate(zip(boxes, strengths)):
        if tuple(s.shape) != b.shape:
            raise ValueError(f"strength {k} has shape {tuple(s.shape)}, box needs {b.shape}")
        window = best[b.y1 : b.y2, b.x1 : b.x2]
        wins = s.float().cpu() > window
        window[wins] = s.float().cpu()[wins]
        owner[b.y1 : b.y2, b.x1 : b.x2][wins] = k
    return owner


def work_image(image: Image.Image, cell: int) -> Image.Image:
    """The source resized (only if needed) to sides that are multiples of ``cell``, <= ~1 MP."""
    from PIL import Image

    w, h = image.size
    scale = min(1.0, (MAX_AREA / (w * h)) ** 0.5)
    tw = max(cell, int(w * scale) // cell * cell)
    th = max(cell, int(h * scale) // cell * cell)
    return image if (tw, th) == (w, h) else image.resize((tw, th), Image.LANCZOS)


def scale_box(box: Box, sx: float, sy: float) -> Box:
    """``box`` scaled by (sx, sy), at least one pixel on each side."""
    if sx == 1 and sy == 1:
        return box
    return Box(
        x1=int(box.x1 * sx),
        y1=int(box.y1 * sy),
        x2=max(int(box.x1 * sx) + 1, round(box.x2 * sx)),
        y2=max(int(box.y1 * sy) + 1, round(box.y2 * sy)),
    )
