"""The compositional instruction grammar, its train / held-out split, and seed splits."""

from __future__ import annotations

import random
import re

import pytest

from agent.microworld import KINDS, SEED_RANGES, make_case, seeds, split_of
from agent.microworld.grammar import (
    CATEGORY_WORDS,
    COLOUR_WORDS,
    PATTERN_ADJECTIVES,
    PATTERN_NOUNS,
    REF_KINDS,
    RELATION_WORDS,
    STRUCTURES,
    TEMPLATES,
    VERBS,
    compose,
    describe,
    heldout_markers,
    referring,
    vocabulary,
)
from agent.microworld.scene import CATEGORIES, PALETTE, PATTERNS
from tests.test_microworld_scene import hand_scene


def test_seed_ranges_are_disjoint_and_named():
    names = list(SEED_RANGES)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = SEED_RANGES[a], SEED_RANGES[b]
            assert ra.stop <= rb.start or rb.stop <= ra.start, (a, b)
    assert split_of(0) == "benchmark" and split_of(SEED_RANGES["test"].start) == "test"
    assert all(split_of(s) == "train" for s in seeds("train", 5, offset=10))
    with pytest.raises(ValueError, match="lies in no split"):
        split_of(500_000)


def test_at_least_25_templates_per_edit_type_in_both_splits():
    assert set(TEMPLATES) == set(KINDS)
    for kind, templates in TEMPLATES.items():
        texts = [t for t, _ in templates]
        assert len(set(texts)) == len(texts) >= 25, kind
        assert {s for _, s in templates} == {"train", "heldout"}, kind


def test_every_category_colour_pattern_verb_and_relation_has_synonyms_in_both_splits():
    tables = [
        (CATEGORY_WORDS, CATEGORIES),
        (COLOUR_WORDS, tuple(PALETTE)),
        (PATTERN_ADJECTIVES, PATTERNS),
        (PATTERN_NOUNS, PATTERNS),
        (VERBS, ("add", "remove", "replace", "recolour")),
        (RELATION_WORDS, ("above", "below", "left of", "right of")),
    ]
    for table, keys in tables:
        assert set(table) == set(keys)
        for key, words in table.items():
            splits = [s for _, s in words]
            assert "train" in splits and "heldout" in splits, key
            assert len(words) >= 2, key
    assert {s for s in STRUCTURES.values()} == {"train", "heldout"}
    # no word is both a train and a held-out synonym
    train, held = vocabulary("train"), vocabulary("heldout")
    for table in train:
        assert not train[table] & held[table], table


def test_referring_expressions_of_many_kinds_name_the_object():
    from agent.microworld import Obj

    scene = hand_scene()  # circles at columns 0, 1, 3, 4, 6 (row 1); a star at r0c2
    kinds: set[str] = set()
    for seed in range(30):
        rng = random.Random(seed)
        middle = referring(scene, scene.get("r1c3"), rng)
        assert {"middle", "ordinal_left", "ordinal_right", "between"} <= set(middle)
        assert re.search(r"\b(third|3rd|3)\b", middle["ordinal_left"])
        first = referring(scene, scene.get("r1c0"), rng)
        assert "extreme" in first and "ordinal_right" in first  # fifth from the right
        kinds |= set(first) | set(middle) | set(referring(scene, scene.get("r0c2"), rng))
        kinds |= set(referring(scene, scene.get("r1c4"), rng))  # the only green circle
        heart = Obj(role="other", category="heart", colour="pink", pattern="solid", row=0, col=4)
        with_heart = scene.with_object(heart)
        beside = referring(with_heart, heart, rng)  # the star is its only row neighbour
        assert "next_to" in beside and "category" in beside
        # the star (only one) is named by its category; no ordinal for a lone object
        star = referring(scene, scene.get("r0c2"), rng)
        assert "category" in star and not any(k.startswith("ordinal") for k in star)
    assert kinds >= {
        "ordinal_left",
        "ordinal_right",
        "extreme",
        "middle",
        "attribute",
        "category",
        "between",
        "next_to",
    }
    assert kinds <= set(REF_KINDS)
    # the red solid circles (r1c0, r1c3) share colour and pattern: no attribute form
    assert "attribute" not in referring(scene, scene.get("r1c3"), random.Random(0))
    # relational: the star sits above the empty r1c2, so the object below it has no such name
    below = referring(scene, scene.get("r1c1"), random.Random(0))
    assert "relational" not in below


def test_relational_expressions_use_the_object_directly_above_or_below():
    scene = hand_scene()
    from agent.microworld import Obj

    scene = scene.with_object(
        Obj(role="other", category="heart", colour="pink", pattern="solid", row=2, col=3)
    )
    found = [
        referring(scene, scene.get("r2c3"), random.Random(s)).get("relational") for s in range(20)
    ]
    found = [f for f in found if f]
    assert found and all(re.search(r"\b(below|under|directly below)\b", f) for f in found)


def test_cases_record_words_kinds_and_language_and_share_the_task_across_languages():
    a, b = make_case(1_000_123, language="train"), make_case(1_000_123, language="heldout")
    assert a.scene == b.scene and a.edits == b.edits
    assert a.instruction != b.instruction and a.language == "train" and b.language == "heldout"
    assert len(a.ref_kinds) == len(a.edits) and set(a.ref_kinds) <= set(REF_KINDS)
    for text in a.atomic:  # every part is inside the instruction (up to capitals)
        assert text.lower() in a.instruction.lower()
    with pytest.raises(ValueError, match="language"):
        make_case(1, language="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_edits"):
        make_case(1, n_edits=6)


def _train_texts(n: int):
    from agent.microworld import editor_records

    for record in editor_records(seeds("train", n)):
        yield record["instruction"]


def test_no_heldout_template_or_synonym_in_training_text():
    markers = heldout_markers()
    assert len(markers) >= 60  # every held-out synonym, template and structure leaves a mark
    pattern = re.compile(
        r"(?<![\w-])(?:"
        + "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
        + r")(?![\w-])"
    )
    train_hits = [t for t in _train_texts(400) if pattern.search(t.lower())]
    assert not train_hits, train_hits[:3]
    # ...while held-out text carries them (so the check above can fail)
    held = [make_case(s, language="heldout").instruction.lower() for s in seeds("train", 50)]
    assert sum(bool(pattern.search(t)) for t in held) >= 45


def test_structures_and_templates_vary():
    cases = [make_case(s, n_edits=(2, 5)) for s in seeds("train", 300)]
    assert len({c.structure for c in cases}) >= 12
    assert len({c.instruction.split()[0] for c in cases}) >= 10
    held = [make_case(s, n_edits=(2, 5), language="heldout") for s in seeds("train", 300)]
    assert {c.structure for c in held} <= {k for k, v in STRUCTURES.items() if v == "heldout"}
    assert {c.structure for c in cases} <= {k for k, v in STRUCTURES.items() if v == "train"}


def test_describe_refuses_an_unknown_language_and_names_nothing_missing():
    scene = hand_scene()
    from agent.microworld import Edit

    edit = Edit(kind="remove", ref="the star", target="r0c2")
    assert describe(scene.without("r0c2"), edit, random.Random(0)) is None
    with pytest.raises(ValueError, match="language"):
        describe(scene, edit, random.Random(0), "klingon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        compose([], random.Random(0))
