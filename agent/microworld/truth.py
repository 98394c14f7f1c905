"""Cases and their exact ground truth.

A ``Case`` is one benchmark sample: the original scene, 1-5 atomic edits, their phrasings and
the joined instruction. From it follow the final scene and image, each edit's target box and
masks, and the image after any subset of the edits in any order (the edits of a case touch
distinct cells, so order does not change the result; ``intermediate`` applies them in the
order given all the same).

Boxes are pixel XYXY (x2, y2 exclusive) on the case's canvas; masks are HxW bool.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from agent.microworld.edits import Edit, apply_edits, cell_coords, sample_edits
from agent.microworld.language import PHRASINGS, join, phrase
from agent.microworld.render import object_mask, render
from agent.microworld.scene import Scene, cell_box, generate_scene

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "Case",
    "make_case",
    "generate_cases",
    "case_seed",
    "goal_scene",
    "target_box",
    "target_mask",
    "shape_mask",
    "intermediate",
]


class Case(BaseModel):
    """One micro-world sample. ``atomic[i]`` is the phrasing of ``edits[i]`` inside
    ``instruction``."""

    model_config = ConfigDict(frozen=True)

    id: str
    seed: int = Field(description="the seed the case was generated from")
    scene: Scene
    edits: tuple[Edit, ...]
    atomic: tuple[str, ...]
    instruction: str


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a run seeded ``seed``: case i does not depend on how many
    cases are generated, so a longer run extends a shorter one."""
    return random.Random(f"microworld|{seed}|{index}").randrange(2**63)


def make_case(
    seed: int, *, n_edits: int | tuple[int, int] = 3, size: int = 128, case_id: str | None = None
) -> Case:
    """A deterministic case from ``seed``: ``n_edits`` edits, or a number drawn from the
    inclusive range ``(lo, hi)``; canvas ``size`` pixels (64..512)."""
    rng = random.Random(seed)
    scene = generate_scene(rng, size=size)
    n = rng.randint(*n_edits) if isinstance(n_edits, tuple) else n_edits
    edits = sample_edits(scene, n, rng)
    atomic = [phrase(e, rng.randrange(len(PHRASINGS[e.kind]))) for e in edits]
    order = list(range(n))
    rng.shuffle(order)  # the instruction's order is not the sampling order
    edits = [edits[i] for i in order]
    atomic = [atomic[i] for i in order]
    return Case(
        id=case_id or f"mw-{seed}",
        seed=seed,
        scene=scene,
        edits=tuple(edits),
        atomic=tuple(atomic),
        instruction=join(atomic, rng),
    )


def generate_cases(
    n: int, *, seed: int = 0, n_edits: int | tuple[int, int] = 3, size: int = 128, start: int = 0
) -> Iterator[Case]:
    """Cases ``start .. n-1`` of the run seeded ``seed``, ids ``mw{seed}-{index:05d}``."""
    for i in range(start, n):
        yield make_case(case_seed(seed, i), n_edits=n_edits, size=size, case_id=f"mw{seed}-{i:05d}")


def goal_scene(case: Case, subset: Sequence[int] | None = None) -> Scene:
    """The scene after the edits ``subset`` (indices into ``case.edits``, applied in that
    order); all edits when None."""
    edits = case.edits if subset is None else [case.edits[i] for i in subset]
    return apply_edits(case.scene, list(edits))


def intermediate(case: Case, subset: Sequence[int] | None = None) -> Image.Image:
    """The ground-truth image after the edits ``subset`` in the order given (None = all)."""
    return render(goal_scene(case, subset))


def target_box(scene: Scene, edit: Edit) -> tuple[int, int, int, int]:
    """Pixel XYXY box of the cell the edit changes: it holds the object before and after."""
    r, c = cell_coords(edit.cell)
    return cell_box(scene.size, r, c)


def target_mask(scene: Scene, edit: Edit) -> np.ndarray:
    """HxW bool: the edit's cell. The scorer allows change only inside these."""
    import numpy as np

    x1, y1, x2, y2 = target_box(scene, edit)
    mask = np.zeros((scene.size, scene.size), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def shape_mask(scene: Scene, edit: Edit) -> np.ndarray:
    """HxW bool: the pixels of the object before and after the edit (their union), for
    exports and mask-conditioned models."""
    import numpy as np

    after = apply_edits(scene, [edit])
    mask = np.zeros((scene.size, scene.size), bool)
    for s in (scene, after):
        obj = s.get(edit.cell)
        if obj is not None:
            mask |= object_mask(scene.size, obj)
    return mask
