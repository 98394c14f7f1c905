"""Reading a planner's words back into an edit, and judging a step by executing it."""

from __future__ import annotations

from agent.microworld import formats
from agent.microworld.edits import Edit, apply_edit
from agent.microworld.reader import edit_meaning, expressions, judge_step, read_edit
from agent.microworld.scene import COLS, Scene
from agent.microworld.splits import seeds
from agent.microworld.truth import draw_case


def _case(seed: int = 200_001):
    scene, edits, parts, instruction, _ = draw_case(seed, n_edits=3, size=224)
    return scene, edits, parts


def test_expressions_name_one_object_each():
    scene, _, _ = _case()
    table = expressions(scene)
    ids = {o.id for o in scene.objects}
    assert table and set(table.values()) <= ids
    # every object is reachable by some expression
    assert set(table.values()) == ids


def test_the_instructions_own_words_read_back_into_its_edits():
    """Each part of a test case's instruction reads back into exactly the edit it was written
    for (same kind, target and values), in both language splits."""
    read = total = 0
    for seed in seeds("test", 15):
        for language in ("train", "heldout"):
            scene, edits, parts, _, _ = draw_case(seed, n_edits=3, size=224, language=language)
            for edit, part in zip(edits, parts):
                total += 1
                got = read_edit(part.text, scene)
                if got is not None:
                    assert got.model_copy(update={"ref": edit.ref}) == edit, (part.text, got, edit)
                    read += 1
    assert read / total >= 0.95  # it may miss a phrasing; it never misreads one


def test_a_text_that_names_no_value_removes_and_two_values_are_unreadable():
    scene, _, _ = _case()
    obj = scene.objects[0]
    ref = next(e for e, oid in expressions(scene).items() if oid == obj.id)
    assert read_edit(f"{ref} has to go", scene) == Edit(kind="remove", ref=ref, target=obj.id)
    assert read_edit("make the purple unicorn red", scene) is None
    assert edit_meaning("make it red") == {("colour", "red")}


def test_judge_step_by_execution():
    """progress / away / no change / refused / unread, judged on scenes, not strings."""
    scene, edits, parts = _case()
    goal = scene
    for e in edits:
        goal = apply_edit(goal, e)
    assert judge_step(parts[0].text, scene, goal) == "progress"
    assert judge_step("the weather is nice", scene, goal) == "unread"
    keep = next(
        o for o in scene.objects if goal.get(o.id) == o and o.id not in {e.cell for e in edits}
    )
    ref = next(e for e, oid in expressions(scene).items() if oid == keep.id)
    # recolouring an object to its own colour changes nothing
    assert judge_step(f"make {ref} {keep.colour}", scene, goal) == "no change"
    # removing an object the goal keeps moves away from it
    assert judge_step(f"remove {ref}", scene, goal) == "away"
    # adding into a taken cell is read but refused
    anchor, relation = next(
        (o, rel)
        for o in scene.objects
        for rel, dc in (("left of", -1), ("right of", 1))
        if 0 <= o.col + dc < COLS and scene.at(o.row, o.col + dc) is not None
    )
    ref2 = next(e for e, oid in expressions(scene).items() if oid == anchor.id)
    assert judge_step(f"add a red striped star {relation} {ref2}", scene, goal) == "refused"


def test_reference_planner_answers_are_mostly_judged_progress():
    """The judge's ceiling: the reference next steps of test planner samples, read on the scene
    the sample's image shows, make progress towards the goal."""
    verdicts = []
    for r in formats.planner_samples(list(seeds("test", 8))):
        if r["answer"].startswith("NEXT_EDITING_INSTRUCTION"):
            verdicts.append(
                judge_step(
                    r["answer"].split(": ", 1)[1],
                    Scene.model_validate(r["scene"]),
                    Scene.model_validate(r["goal"]),
                )
            )
    assert verdicts.count("progress") / len(verdicts) >= 0.95
    assert "away" not in verdicts or verdicts.count("away") <= len(verdicts) // 20 + 1


def test_shared_draws_list_what_drawing_on_each_scene_lists():
    """``expressions`` reuses ``grammar._simple``'s draws across scenes by ``_simple_key``; the
    table must equal drawing afresh on each scene (states of one case, and other cases, where
    keys repeat with other neighbours)."""
    import random

    from agent.microworld import reader
    from agent.microworld.edits import referring_expressions
    from agent.microworld.grammar import LANGUAGES, _simple

    def fresh(scene: Scene) -> dict[str, str]:
        out: dict[str, str] = {}
        for obj in scene.objects:
            for text in referring_expressions(scene, obj):
                out.setdefault(text.lower(), obj.id)
            for language in LANGUAGES:
                for k in range(reader.DRAWS):
                    for _, text in _simple(scene, obj, random.Random(f"reader|{k}"), language):
                        out.setdefault(text.lower(), obj.id)
        return out

    reader._expressions.cache_clear()  # so every scene below is listed here, not remembered
    reader._SIMPLE_TEXTS.clear()
    scenes = []
    for seed in (200_001, 200_002, 200_003):
        scene, edits, _ = _case(seed)
        scenes += [scene, apply_edit(scene, edits[0]), apply_edit(scene, edits[-1])]
    hits = 0
    for scene in scenes:
        before = len(reader._SIMPLE_TEXTS)
        assert expressions(scene) == fresh(scene)
        hits += len(scene.objects) - (len(reader._SIMPLE_TEXTS) - before)
    assert hits > 0  # some keys were shared, so the reuse itself was checked
