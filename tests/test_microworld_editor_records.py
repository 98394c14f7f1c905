"""``editor_records``: the editor's training stream (the lead's trainer calls it)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from agent.microworld import (
    REF_KINDS,
    apply_edit,
    editor_records,
    goal_scene,
    make_case,
    object_box,
    render,
    seeds,
)

KEYS = {"id", "seed", "kind", "ref_kind", "instruction", "source", "target", "box", "mask"}


def test_records_have_the_agreed_keys_and_types():
    stream = editor_records(seeds("train", 4))
    assert inspect.isgenerator(stream)
    records = list(stream)
    assert len(records) >= 4 * 2
    for r in records:
        assert set(r) == KEYS
        assert isinstance(r["id"], str) and isinstance(r["seed"], int)
        assert r["source"].mode == r["target"].mode == "RGB"
        assert r["source"].size == r["target"].size == (224, 224)
        assert r["mask"].shape == (224, 224) and r["mask"].dtype == bool
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
        assert r["kind"] in {"add", "remove", "replace", "recolour", "material", "multi"}
        assert r["ref_kind"] in set(REF_KINDS) | {"multi"}
        assert (r["kind"] == "multi") == (r["ref_kind"] == "multi")


def test_one_record_per_edit_on_intermediate_states_plus_the_whole_instruction():
    seed = seeds("train", 1, offset=7)[0]
    case = make_case(seed, n_edits=3)
    records = list(editor_records([seed], n_edits=3))
    atomic, whole = records[:-1], records[-1]
    assert [r["kind"] for r in atomic] == [e.kind for e in case.edits]
    assert whole["kind"] == "multi" and whole["instruction"] == case.instruction
    state = case.scene
    for i, (r, edit) in enumerate(zip(atomic, case.edits)):
        assert np.array_equal(np.asarray(r["source"]), np.asarray(render(state)))
        state = apply_edit(state, edit)
        assert np.array_equal(np.asarray(r["target"]), np.asarray(render(state)))
        if i > 0:  # sources after the first are not the pristine scene
            assert not np.array_equal(np.asarray(r["source"]), np.asarray(render(case.scene)))
    assert np.array_equal(np.asarray(whole["source"]), np.asarray(render(case.scene)))
    assert np.array_equal(np.asarray(whole["target"]), np.asarray(render(goal_scene(case))))
    assert len(list(editor_records([seed], n_edits=3, whole=False))) == len(atomic)


def test_box_and_mask_are_tight_and_cover_every_changed_pixel():
    for r in editor_records(seeds("train", 30), n_edits=(1, 3)):
        src = np.asarray(r["source"], dtype=int)
        tgt = np.asarray(r["target"], dtype=int)
        changed = np.abs(src - tgt).max(-1) > 0
        mask = r["mask"]
        assert changed.any() and not (changed & ~mask).any(), r["id"]
        ys, xs = np.nonzero(mask)
        assert r["box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        if r["kind"] != "multi":  # an object covers a good part of its tight box
            x1, y1, x2, y2 = r["box"]
            assert mask[y1:y2, x1:x2].mean() > 0.3


def test_object_box_is_tighter_than_the_cell():
    case = make_case(1_000_001)
    from agent.microworld.scene import cell_box

    for obj in case.scene.objects:
        bx = object_box(224, obj)
        cx = cell_box(224, obj.row, obj.col)
        assert cx[0] <= bx[0] < bx[2] <= cx[2] and cx[1] <= bx[1] < bx[3] <= cx[3]
        assert (bx[2] - bx[0]) * (bx[3] - bx[1]) < 0.8 * 32 * 32


def test_records_are_deterministic_per_seed_and_follow_the_language():
    s = list(seeds("train", 5, offset=100))
    a = [(r["id"], r["instruction"], r["box"]) for r in editor_records(s)]
    b = [(r["id"], r["instruction"], r["box"]) for r in editor_records(reversed(s))]
    assert sorted(a) == sorted(b)
    held = [(r["id"], r["instruction"]) for r in editor_records(s, language="heldout")]
    assert [i for i, _ in held] == [i for i, *_ in a]
    assert [t for _, t in held] != [t for _, t, _ in a]
    small = next(editor_records(s, size=128))
    assert small["source"].size == (128, 128) and small["mask"].shape == (128, 128)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="language"):
        next(editor_records([1], language="all"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_edits"):
        next(editor_records([1], n_edits=(0, 9)))
