"""Scenes of the micro-world: a row of 3-5 similar instances plus a few other objects.

A scene is a 3 x 7 grid of square cells on a square canvas (default 224 px: 32 px cells, so
cell edges fall on the 16 px grid of an 8x autoencoder's 2x2-patched latents). The middle row
holds the instances (one category, left to right, with gaps); the top and bottom rows hold 0-2 other
objects and the objects that "add" edits place. An object is named by its cell
(``id = "r{row}c{col}"``), so an object keeps its id through every edit and an object put
back where one was removed gets the old id again.

Coordinates: pixel XYXY boxes on the canvas, ``x2``/``y2`` exclusive. Colours are RGB.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CATEGORIES",
    "PALETTE",
    "PATTERNS",
    "ROWS",
    "COLS",
    "DEFAULT_SIZE",
    "INSTANCE_ROW",
    "Obj",
    "Background",
    "Scene",
    "cell_box",
    "generate_scene",
]

CATEGORIES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "diamond",
    "hexagon",
    "cross",
)
#: Named palette, RGB. Any two colours differ by > 60 in some channel, so the pixel scorer's
#: tolerance (48) can tell them apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 160, 60),
    "teal": (20, 150, 150),
    "blue": (40, 80, 210),
    "purple": (130, 60, 180),
    "pink": (235, 110, 170),
    "brown": (120, 75, 35),
    "black": (30, 30, 30),
}
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
ROWS, COLS, INSTANCE_ROW = 3, 7, 1
#: Default canvas: 7 columns x 32 px cells.
DEFAULT_SIZE = 224
#: Light background tones (the palette's colours stay readable on all of them).
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (236, 236, 230),
    (250, 244, 225),
    (225, 238, 245),
    (235, 245, 230),
    (246, 232, 236),
    (222, 222, 228),
)


class Obj(BaseModel):
    """One object: a category filled with a colour in a pattern, in one grid cell."""

    model_config = ConfigDict(frozen=True)

    role: Literal["instance", "other", "added"] = Field(
        description="instance = one of the row of similar objects (ordinals count these)"
    )
    category: str
    colour: str
    pattern: str
    row: int = Field(ge=0, lt=ROWS)
    col: int = Field(ge=0, lt=COLS)

    @model_validator(mode="after")
    def _known(self) -> Obj:
        for name, value, known in (
            ("category", self.category, CATEGORIES),
            ("colour", self.colour, tuple(PALETTE)),
            ("pattern", self.pattern, PATTERNS),
        ):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; known: {known}")
        return self

    @property
    def id(self) -> str:
        return f"r{self.row}c{self.col}"

    @property
    def look(self) -> tuple[str, str, str]:
        """What an edit can change: (category, colour, pattern)."""
        return (self.category, self.colour, self.pattern)


class Background(BaseModel):
    """Flat colour, vertical gradient (top -> bottom), or flat with seeded block noise."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["flat", "gradient", "texture"]
    top: tuple[int, int, int]
    bottom: tuple[int, int, int]
    seed: int = 0


class Scene(BaseModel):
    """A square canvas of ``size`` pixels with objects in a 3 x 7 grid of cells."""

    model_config = ConfigDict(frozen=True)

    size: int = Field(
        default=DEFAULT_SIZE, ge=64, le=512, description="canvas width = height, pixels"
    )
    category: str = Field(description="the category of the instances")
    background: Background
    objects: tuple[Obj, ...]

    @field_validator("objects")
    @classmethod
    def _one_per_cell(cls, objects: tuple[Obj, ...]) -> tuple[Obj, ...]:
        ids = [o.id for o in objects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two objects share a cell: {sorted(ids)}")
        return tuple(sorted(objects, key=lambda o: (o.row, o.col)))

    def get(self, obj_id: str) -> Obj | None:
        return next((o for o in self.objects if o.id == obj_id), None)

    def at(self, row: int, col: int) -> Obj | None:
        return self.get(f"r{row}c{col}")

    def instances(self) -> list[Obj]:
        """The row of instances, left to right."""
        return sorted((o for o in self.objects if o.role == "instance"), key=lambda o: o.col)

    def with_object(self, obj: Obj) -> Scene:
        """A copy with ``obj`` put in its cell (replacing whatever was there)."""
        rest = tuple(o for o in self.objects if o.id != obj.id)
        return self.model_copy(
            update={"objects": tuple(sorted(rest + (obj,), key=lambda o: (o.row, o.col)))}
        )

    def without(self, obj_id: str) -> Scene:
        return self.model_copy(update={"objects": tuple(o for o in self.objects if o.id != obj_id)})


def cell_box(size: int, row: int, col: int) -> tuple[int, int, int, int]:
    """Pixel XYXY box of a grid cell. The canvas is a 7 x 7 lattice of square cells; the
    scene's rows are lattice rows 1, 3 and 5 (one empty lattice row between them), so at
    224 px every cell box is 32 px aligned on both axes."""
    cw = size / COLS
    top = (2 * row + 1) * cw
    return (round(col * cw), round(top), round((col + 1) * cw), round(top + cw))


def generate_scene(rng: random.Random, *, size: int = DEFAULT_SIZE) -> Scene:
    """A random scene: 3-5 instances of one category in the middle row (random colours and
    patterns, so some attributes are unique and some are not), 0-2 other objects of other
    categories in the top/bottom rows, and a random background."""
    category = rng.choice(CATEGORIES)
    n = rng.randint(3, 5)
    cols = sorted(rng.sample(range(COLS), n))
    colours = list(PALETTE)
    # Draw colours from a small subset so that repeats (and so ordinal references) are common.
    subset = rng.sample(colours, rng.randint(2, 4))
    objects = [
        Obj(
            role="instance",
            category=category,
            colour=rng.choice(subset),
            pattern=rng.choice(PATTERNS),
            row=INSTANCE_ROW,
            col=c,
        )
        for c in cols
    ]
    others = rng.sample([c for c in CATEGORIES if c != category], rng.randint(0, 2))
    free = [(r, c) for r in (0, 2) for c in range(COLS)]
    for other, (r, c) in zip(others, rng.sample(free, len(others))):
        objects.append(
            Obj(
                role="other",
                category=other,
                colour=rng.choice(colours),
                pattern=rng.choice(PATTERNS),
                row=r,
                col=c,
            )
        )
    kind = rng.choice(("flat", "gradient", "texture"))
    top, bottom = rng.sample(_BACKGROUNDS, 2)
    background = Background(
        kind=kind, top=top, bottom=bottom if kind == "gradient" else top, seed=rng.randrange(2**31)
    )
    return Scene(size=size, category=category, background=background, objects=tuple(objects))
