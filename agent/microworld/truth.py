"""Cases and their exact ground truth.

A ``Case`` is one benchmark sample: the original scene, 1-5 atomic edits, their phrasings in
one language split (``agent.microworld.grammar``), each phrasing's referring-expression kind,
and the joined instruction. From it follow the final scene and image, each edit's target box and
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

from agent.microworld.edits import (
    Edit,
    NoRoomError,
    apply_edit,
    apply_edits,
    cell_coords,
    sample_edits,
)
from agent.microworld.grammar import LANGUAGES, Language, Phrase, compose, describe
from agent.microworld.render import object_box, object_mask, render
from agent.microworld.scene import DEFAULT_SIZE, Scene, cell_box, generate_scene

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
    "tight_box",
    "tight_mask",
    "object_truth",
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
    ref_kinds: tuple[str, ...] = Field(
        default=(),
        description="the referring-expression kind of each atomic phrasing (grammar.REF_KINDS)",
    )
    language: Language = Field(default="train", description="the language split of the words")
    structure: str = Field(default="", description="the sentence structure joining the parts")


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a run seeded ``seed``: case i does not depend on how many
    cases are generated, so a longer run extends a shorter one."""
    return random.Random(f"microworld|{seed}|{index}").randrange(2**63)


def make_case(
    seed: int,
    *,
    n_edits: int | tuple[int, int] = 3,
    size: int = DEFAULT_SIZE,
    language: Language = "train",
    case_id: str | None = None,
) -> Case:
    """A deterministic case from ``seed``: ``n_edits`` edits, or a number drawn from the
    inclusive range ``(lo, hi)``; canvas ``size`` pixels (64..512); words from the
    ``language`` split. The scene and edits depend on ``seed`` only, so both language splits
    of one seed are the same task in other words."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    if isinstance(n_edits, tuple):
        if len(n_edits) != 2 or not 1 <= n_edits[0] <= n_edits[1] <= 5:
            raise ValueError(
                f"n_edits must be in 1..5 or a range (lo, hi) inside it, got {n_edits!r}"
            )
    elif not 1 <= n_edits <= 5:
        raise ValueError(f"n_edits must be in 1..5 or a range (lo, hi) inside it, got {n_edits!r}")
    scene, edits, parts, instruction, structure = draw_case(
        seed, n_edits=n_edits, size=size, language=language
    )
    return Case(
        id=case_id or f"mw-{seed}",
        seed=seed,
        scene=scene,
        edits=tuple(edits),
        atomic=tuple(p.text for p in parts),
        instruction=instruction,
        ref_kinds=tuple(p.ref_kind for p in parts),
        language=language,
        structure=structure,
    )


def draw_case(
    seed: int,
    *,
    n_edits: int | tuple[int, int] = 3,
    size: int = DEFAULT_SIZE,
    language: Language = "train",
) -> tuple[Scene, list[Edit], list[Phrase], str, str]:
    """What ``make_case`` builds a case from (arguments checked there): (scene, edits in the
    instruction's order, their ``grammar.Phrase`` objects, instruction, structure name)."""
    attempt = 0
    while True:
        # a scene without room for n edits is drawn again from a derived stream (rare: a few
        # scenes in ten thousand at 5 edits); every other seed's case is unchanged
        rng = random.Random(seed if attempt == 0 else f"{seed}|redraw|{attempt}")
        scene = generate_scene(rng, size=size)
        n = rng.randint(*n_edits) if isinstance(n_edits, tuple) else n_edits
        try:
            edits = sample_edits(scene, n, rng)
        except NoRoomError:
            attempt += 1
            continue
        break
    order = list(range(n))
    rng.shuffle(order)  # the instruction's order is not the sampling order
    edits = [edits[i] for i in order]
    words = random.Random(f"microworld-words|{seed}|{language}")
    parts = []
    for edit in edits:
        part = describe(scene, edit, words, language)
        if part is None:  # every object of an original scene has a name; a bug if not
            raise AssertionError(f"seed {seed}: no words for {edit!r}")
        parts.append(part)
    instruction, structure = compose(parts, words, language)
    return scene, edits, parts, instruction, structure


def generate_cases(
    n: int,
    *,
    seed: int = 0,
    n_edits: int | tuple[int, int] = 3,
    size: int = DEFAULT_SIZE,
    start: int = 0,
    language: Language = "train",
) -> Iterator[Case]:
    """Cases ``start .. n-1`` of the run seeded ``seed``, ids ``mw{seed}-{index:05d}``. (For
    data with a purpose use the split seeds of ``agent.microworld.splits`` and ``make_case``.)"""
    for i in range(start, n):
        yield make_case(
            case_seed(seed, i),
            n_edits=n_edits,
            size=size,
            language=language,
            case_id=f"mw{seed}-{i:05d}",
        )


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


def object_truth(scene: Scene, edit: Edit) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(tight box, tight mask) of ``edit`` on ``scene``: the pixels of its object before and
    after the edit (for add: the new object; for remove: the old one), from the rendered
    alpha. Box pixel XYXY (x2/y2 exclusive), mask HxW bool; the box bounds the mask."""
    after = apply_edit(scene, edit)
    mask = None
    box = None
    for s in (scene, after):
        obj = s.get(edit.cell)
        if obj is None:
            continue
        m = object_mask(scene.size, obj)
        mask = m if mask is None else mask | m
        b = object_box(scene.size, obj)
        box = (
            b
            if box is None
            else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
        )
    assert mask is not None and box is not None  # an edit has an object before or after
    return box, mask


def tight_box(scene: Scene, edit: Edit) -> tuple[int, int, int, int]:
    """Tight pixel XYXY box of the edit's object before and after (see ``object_truth``)."""
    return object_truth(scene, edit)[0]


def tight_mask(scene: Scene, edit: Edit) -> np.ndarray:
    """HxW bool: the edit's object before and after (the same as ``shape_mask``)."""
    return object_truth(scene, edit)[1]
