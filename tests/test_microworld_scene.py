"""Micro-world scenes, referring expressions, edits and ground truth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.microworld import (
    Background,
    EditError,
    Obj,
    Scene,
    apply_edits,
    generate_cases,
    goal_scene,
    intermediate,
    make_case,
    referring_expressions,
    render,
    resolve,
    shape_mask,
    target_mask,
)
from agent.microworld.scene import cell_box


def hand_scene() -> Scene:
    """Five circles (red solid, blue striped, red solid, green dotted, blue solid) and a star."""
    looks = [
        (0, "red", "solid"),
        (1, "blue", "striped"),
        (3, "red", "solid"),
        (4, "green", "dotted"),
        (6, "blue", "solid"),
    ]
    objects = [
        Obj(role="instance", category="circle", colour=c, pattern=p, row=1, col=col)
        for col, c, p in looks
    ]
    objects.append(
        Obj(role="other", category="star", colour="yellow", pattern="checkered", row=0, col=2)
    )
    return Scene(
        category="circle",
        objects=tuple(objects),
        background=Background(kind="flat", top=(240, 240, 240), bottom=(240, 240, 240)),
    )


@pytest.mark.parametrize(
    "ref, cell",
    [
        ("the leftmost circle", "r1c0"),
        ("the rightmost circle", "r1c6"),
        ("the middle circle", "r1c3"),
        ("the second circle from the left", "r1c1"),
        ("the third circle from the left", "r1c3"),
        ("the fourth circle from the left", "r1c4"),
        ("the second circle from the right", "r1c4"),
        ("the third circle from the right", "r1c3"),
        ("the fourth circle from the right", "r1c1"),
        ("the green circle", "r1c4"),
        ("the striped circle", "r1c1"),
        ("the dotted circle", "r1c4"),
        ("the blue solid circle", "r1c6"),
        ("the blue striped circle", "r1c1"),
        ("the star", "r0c2"),
        ("the yellow star", "r0c2"),
        ("the square above the leftmost circle", "r0c0"),
        ("the heart to the right of the star", "r0c3"),
        ("The  Leftmost Circle", "r1c0"),
    ],
)
def test_every_referring_expression_form_resolves_to_its_instance(ref, cell):
    assert resolve(hand_scene(), ref) == cell


@pytest.mark.parametrize(
    "ref",
    [
        "the red circle",
        "the circle",
        "the solid circle",
        "the fifth circle from the left",
        "the leftmost star",
        "the square",
        "the star above the star",
        "a red circle",
    ],
)
def test_ambiguous_or_empty_references_are_refused(ref):
    with pytest.raises(EditError):
        resolve(hand_scene(), ref)


def test_generated_expressions_name_their_object_and_only_it():
    scene = hand_scene()
    assert referring_expressions(scene, scene.get("r1c3")) == [
        "the middle circle",
        "the third circle from the left",
        "the third circle from the right",
    ]
    for case in generate_cases(40, seed=5):
        for obj in case.scene.objects:
            refs = referring_expressions(case.scene, obj)
            assert obj.role != "instance" or refs  # every instance has an ordinal at least
            assert all(resolve(case.scene, r) == obj.id for r in refs)


def test_generation_is_deterministic_per_seed():
    a = [c.model_dump_json() for c in generate_cases(6, seed=3, n_edits=(1, 5))]
    b = [c.model_dump_json() for c in generate_cases(6, seed=3, n_edits=(1, 5))]
    c = [c.model_dump_json() for c in generate_cases(6, seed=4, n_edits=(1, 5))]
    assert a == b and a != c
    assert [x.model_dump_json() for x in generate_cases(8, seed=3, n_edits=(1, 5), start=6)] == [
        make_case(x.seed, n_edits=(1, 5), case_id=x.id).model_dump_json()
        for x in generate_cases(8, seed=3, n_edits=(1, 5), start=6)
    ]
    case = make_case(11)
    assert np.array_equal(np.asarray(render(case.scene)), np.asarray(render(make_case(11).scene)))


def test_scenes_follow_the_spec():
    for case in generate_cases(30, seed=0, n_edits=(1, 5)):
        row = case.scene.instances()
        assert 3 <= len(row) <= 5 and len({o.category for o in row}) == 1
        assert [o.col for o in row] == sorted(o.col for o in row)
        assert 0 <= len(case.scene.objects) - len(row) <= 2
        assert 1 <= len(case.edits) <= 5 and len(case.atomic) == len(case.edits)
        assert len({e.cell for e in case.edits}) == len(case.edits)  # distinct targets
    for size in (64, 256, 512):
        image = render(make_case(1, size=size).scene)
        assert image.size == (size, size) and image.mode == "RGB"


def test_rendering_is_anti_aliased():
    image = np.asarray(render(hand_scene()))
    background = np.array([240, 240, 240])
    red = np.array([215, 40, 40])
    # pixels strictly between background and fill exist at the edges of the red circle (in
    # its cell r1c0: the rows moved to lattice rows 1/3/5 with the 224 px canvas)
    x1, y1, x2, y2 = cell_box(hand_scene().size, 1, 0)
    patch = image[y1:y2, x1:x2].reshape(-1, 3).astype(int)
    between = [
        p
        for p in patch
        if not (p == background).all()
        and np.abs(p - red).max() > 30
        and np.abs(p - background).max() > 30
    ]
    assert between


def test_intermediates_after_any_subset_in_any_order():
    case = make_case(7, n_edits=3)
    full = np.asarray(intermediate(case))
    for order in itertools.permutations(range(3)):
        assert np.array_equal(np.asarray(intermediate(case, order)), full)
    assert np.array_equal(np.asarray(intermediate(case, [])), np.asarray(render(case.scene)))
    one = goal_scene(case, [1])
    assert one == apply_edits(case.scene, [case.edits[1]])


def test_target_masks_cover_the_change():
    case = make_case(9, n_edits=3)
    src, gt = (np.asarray(im, dtype=int) for im in (render(case.scene), intermediate(case)))
    changed = np.abs(src - gt).max(-1) > 0
    cells = np.zeros_like(changed)
    for edit in case.edits:
        cells |= target_mask(case.scene, edit)
        assert (shape_mask(case.scene, edit) <= target_mask(case.scene, edit)).all()
    assert changed.any() and not (changed & ~cells).any()


def test_impossible_edits_are_refused():
    from agent.microworld import Edit, apply_edit

    scene = hand_scene()
    with pytest.raises(EditError, match="taken"):
        apply_edit(
            scene,
            Edit(
                kind="add",
                ref="the leftmost circle",
                target="r1c0",
                relation="right of",
                category="star",
                colour="red",
                pattern="solid",
            ),
        )
    with pytest.raises(EditError, match="outside"):
        apply_edit(
            scene,
            Edit(
                kind="add",
                ref="the star",
                target="r0c2",
                relation="above",
                category="heart",
                colour="red",
                pattern="solid",
            ),
        )
    with pytest.raises(ValueError):
        Edit(kind="remove", ref="the star", target="r0c2", colour="red")


def test_a_scene_without_room_for_n_edits_is_redrawn_not_a_hang():
    """Seed 1002574 draws 5 edits for a scene with room for fewer: sample_edits used to loop
    forever. It now raises NoRoomError and draw_case redraws from a derived stream."""
    import random

    from agent.microworld.edits import NoRoomError, sample_edits
    from agent.microworld.scene import generate_scene
    from agent.microworld.truth import draw_case

    rng = random.Random(1002574)
    scene = generate_scene(rng, size=224)
    n = rng.randint(1, 5)
    with pytest.raises(NoRoomError, match=f"of {n} edits fit"):
        sample_edits(scene, n, rng)
    _, edits, _, instruction, _ = draw_case(1002574, n_edits=(1, 5), size=224)
    assert 1 <= len(edits) <= 5 and instruction
    # a seed with room is drawn exactly as before: its first edit consumes the same stream
    rng = random.Random(1002575)
    scene = generate_scene(rng, size=224)
    first = sample_edits(scene, rng.randint(1, 5), rng)
    assert draw_case(1002575, n_edits=(1, 5), size=224)[1] != [] and sorted(
        e.cell for e in first
    ) == sorted(e.cell for e in draw_case(1002575, n_edits=(1, 5), size=224)[1])
