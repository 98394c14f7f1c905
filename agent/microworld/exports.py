"""Training data from the micro-world, streamed: every exporter is a generator over cases
(themselves a generator), so nothing is held in memory beyond one case. ``write`` saves a
stream as JSONL plus PNG files.

- ``edit_pairs``: (source, atomic instruction, target) for single-edit editors.
- ``planner_tuples``: (original, current, full instruction, next atomic edit or ``<stop>``),
  MIRA's step-wise SFT tuples (the MIRA paper's training data format), including corrective
  samples where the current image holds a wrong edit and the answer is the edit that undoes it.
- ``grounding_pairs``: (image, referring expression, box) for every expression of every object.
- ``critic_tuples``: (source, edited, atomic instruction, scores) for a correct edit and for
  each of the noisy editor's mistakes (wrong object, bleed, no change).

Records hold PIL images and HxW bool masks under keys ``write`` turns into files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from agent.microworld.edits import (
    Edit,
    EditError,
    apply_edit,
    apply_edits,
    corrective_edit,
    other_targets,
    referring_expressions,
)
from agent.microworld.language import phrase
from agent.microworld.render import render
from agent.microworld.scene import Scene, cell_box
from agent.microworld.scoring import score_edits
from agent.microworld.truth import Case, goal_scene, make_case, object_truth, shape_mask, target_box

__all__ = [
    "editor_records",
    "edit_pairs",
    "planner_tuples",
    "grounding_pairs",
    "critic_tuples",
    "write",
    "STOP",
]

STOP = "<stop>"


def editor_records(
    seeds: Iterable[int],
    *,
    language: Literal["train", "heldout"] = "train",
    n_edits: int | tuple[int, int] = (1, 3),
    size: int = 224,
    whole: bool = True,
) -> Iterator[dict[str, Any]]:
    """Training records for an instruction-following editor, streamed, deterministic per seed.

    Per seed one case (``make_case(seed, n_edits=..., size=..., language=...)``). Its edits are
    applied one after another; each yields a record whose source is the state reached after the
    case's earlier edits (so sources are not only pristine scenes) and whose instruction is
    phrased afresh against that source (its referring expression names the object on the image
    the editor sees). With ``whole``, one more record: the case's full instruction on the
    original scene, target the final scene.

    Keys: ``id`` (str), ``seed`` (int), ``kind`` (edit type, ``"multi"`` for whole), ``ref_kind``
    (``grammar.REF_KINDS``, ``"multi"`` for whole), ``instruction`` (str), ``source`` and
    ``target`` (RGB PIL, ``size`` x ``size``; a record's target may be the next record's source
    object: copy before drawing on one), ``box`` (tight pixel XYXY [x1, y1, x2, y2], x2/y2
    exclusive: the union of the edited objects before and after), ``mask`` (HxW bool, the
    edited objects' pixels before and after). Pass train seeds
    (``agent.microworld.splits.seeds("train", n)``) for training.
    """
    from agent.microworld.grammar import LANGUAGES, describe

    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    for seed in seeds:
        case = make_case(seed, n_edits=n_edits, size=size, language=language)
        words = random.Random(f"microworld-editor|{seed}|{language}")
        state, source = case.scene, render(case.scene)
        union_box: list[int] | None = None
        union_mask = None
        for i, edit in enumerate(case.edits):
            after = apply_edit(state, edit)
            target = render(after)
            box, mask = object_truth(state, edit)
            union_box = (
                list(box)
                if union_box is None
                else [
                    min(union_box[0], box[0]),
                    min(union_box[1], box[1]),
                    max(union_box[2], box[2]),
                    max(union_box[3], box[3]),
                ]
            )
            union_mask = mask if union_mask is None else union_mask | mask
            part = case.atomic[i] if i == 0 else None
            ref_kind = case.ref_kinds[i] if i == 0 else None
            if i > 0 and (phrased := describe(state, edit, words, language)) is not None:
                part, ref_kind = phrased.text, phrased.ref_kind
            if part is not None:
                yield {
                    "id": f"mw-{seed}-e{i}",
                    "seed": seed,
                    "kind": edit.kind,
                    "ref_kind": ref_kind,
                    "instruction": part,
                    "source": source,
                    "target": target,
                    "box": list(box),
                    "mask": mask,
                }
            state, source = after, target
        if whole:
            yield {
                "id": f"mw-{seed}-all",
                "seed": seed,
                "kind": "multi",
                "ref_kind": "multi",
                "instruction": case.instruction,
                "source": render(case.scene),
                "target": source,
                "box": union_box,
                "mask": union_mask,
            }


def edit_pairs(cases: Iterable[Case]) -> Iterator[dict[str, Any]]:
    """One pair per atomic edit: the original image, the edit's words, the image after it,
    plus its target box (pixel XYXY) and shape mask."""
    for case in cases:
        source = render(case.scene)
        for i, (edit, text) in enumerate(zip(case.edits, case.atomic)):
            yield {
                "id": f"{case.id}-e{i}",
                "kind": edit.kind,
                "instruction": text,
                "source": source,
                "target": render(apply_edit(case.scene, edit)),
                "box": list(target_box(case.scene, edit)),
                "mask": shape_mask(case.scene, edit),
            }


def _wrong(
    original: Scene, scene: Scene, edit: Edit, rng: random.Random
) -> tuple[str, Scene] | None:
    """The edit made wrongly, as the noisy editor does: on another object, or bleeding onto
    the nearest one. None when there is no other object to confuse it with."""
    others = other_targets(original, scene, edit)
    if not others:
        return None
    try:
        if rng.random() < 0.5:
            return "wrong", apply_edit(
                scene, edit.model_copy(update={"target": rng.choice(others).id})
            )
        return "bleed", apply_edit(
            apply_edit(scene, edit), edit.model_copy(update={"target": others[0].id})
        )
    except EditError:
        return None


def planner_tuples(
    cases: Iterable[Case], *, seed: int = 0, corrective: bool = True
) -> Iterator[dict[str, Any]]:
    """For each case, the edits in the instruction's order: after t of them, the next one's
    words (or ``<stop>`` after all). With ``corrective``, also one sample per step whose
    current image holds that step's edit made wrongly; the answer is the corrective edit the
    oracle planner would issue."""
    rng = random.Random(seed)
    for case in cases:
        original = render(case.scene)
        goal = goal_scene(case)
        pending = {e.cell for e in case.edits}
        scene = case.scene
        for t in range(len(case.edits) + 1):
            nxt = case.atomic[t] if t < len(case.edits) else STOP
            yield {
                "id": f"{case.id}-p{t}",
                "original": original,
                "current": render(scene),
                "instruction": case.instruction,
                "next": nxt,
                "corrective": False,
            }
            if t == len(case.edits):
                break
            if corrective and (bad := _wrong(case.scene, scene, case.edits[t], rng)) is not None:
                mode, wrong = bad
                fix = corrective_edit(case.scene, wrong, goal, pending)
                if fix is not None:
                    yield {
                        "id": f"{case.id}-c{t}",
                        "original": original,
                        "current": render(wrong),
                        "instruction": case.instruction,
                        "next": phrase(fix),
                        "corrective": True,
                        "mistake": mode,
                    }
            scene = apply_edit(scene, case.edits[t])


def grounding_pairs(cases: Iterable[Case]) -> Iterator[dict[str, Any]]:
    """Every referring expression of every object of each original image, with its box
    (pixel XYXY, the object's cell)."""
    for case in cases:
        image = render(case.scene)
        for obj in case.scene.objects:
            for k, expression in enumerate(referring_expressions(case.scene, obj)):
                yield {
                    "id": f"{case.id}-{obj.id}-{k}",
                    "image": image,
                    "expression": expression,
                    "box": list(cell_box(case.scene.size, obj.row, obj.col)),
                }


def critic_tuples(cases: Iterable[Case], *, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Per atomic edit: the correct result, the edit on a wrong object, the edit bleeding onto
    a neighbour, and no change, each scored by the pixel scorer (``scores`` as the oracle
    critic's 0..10 fields)."""
    from agent.microworld.tools import critique_from_score

    rng = random.Random(seed)
    for case in cases:
        source_scene = case.scene
        source = render(source_scene)
        for i, (edit, text) in enumerate(zip(case.edits, case.atomic)):
            expected = render(apply_edit(source_scene, edit))
            others = other_targets(source_scene, source_scene, edit)
            variants = {"correct": apply_edit(source_scene, edit), "noop": source_scene}
            if others:
                for mode, edits in (
                    ("wrong", [edit.model_copy(update={"target": rng.choice(others).id})]),
                    ("bleed", [edit, edit.model_copy(update={"target": others[0].id})]),
                ):
                    try:
                        variants[mode] = apply_edits(source_scene, edits)
                    except EditError:
                        pass
            for mode, scene in variants.items():
                edited = render(scene)
                score = score_edits(
                    source, edited, expected, [target_box(source_scene, edit)], kinds=[edit.kind]
                )
                yield {
                    "id": f"{case.id}-e{i}-{mode}",
                    "source": source,
                    "edited": edited,
                    "instruction": text,
                    "mode": mode,
                    "success": score.success,
                    "scores": critique_from_score(score).summary(),
                }


def write(records: Iterable[dict[str, Any]], folder: str | Path, name: str) -> int:
    """Stream ``records`` to ``folder/name.jsonl``; PIL images and bool masks become PNGs
    under ``folder/name/`` (``<id>_<key>.png``) and the line holds their relative paths.
    Returns the number of records written."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    files = folder / name
    files.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(folder / f"{name}.jsonl", "w") as f:
        for record in records:
            line = {}
            for key, value in record.items():
                if isinstance(value, Image.Image) or isinstance(value, np.ndarray):
                    if isinstance(value, np.ndarray):
                        value = Image.fromarray(np.where(value, 255, 0).astype(np.uint8), "L")
                    rel = f"{name}/{record['id']}_{key}.png"
                    value.save(folder / rel)
                    line[key] = rel
                else:
                    line[key] = value
            f.write(json.dumps(line) + "\n")
            count += 1
    return count
