"""A compositional instruction generator with a train / held-out split of its language.

An instruction is built from parts, each drawn at random:

- a **sentence structure** joining 1-5 atomic edits (lists, numbered and bulleted lists,
  "then", "before that", "after you ...", polite and first-person requests, "leave everything
  else as it is", ...);
- per edit, an **atomic template** of its type (>= 25 per type: imperatives, wishes, passives,
  questions, ...) with slots for verbs, the referring expression and the new values;
- a **referring expression** of one of ``REF_KINDS`` (ordinals from either side in words and
  digits, first / last / far left, the middle one, attribute combinations, the bare category,
  "the X above the Y", "the X next to the Y", "the X between the Y and the Z"), which names
  the object and nothing else on the scene it is read against;
- **synonyms** for every category, colour, pattern (adjective and noun), verb and relation.

Every template, structure and synonym carries a split tag. ``language="train"`` draws from the
train items only; ``language="heldout"`` draws every choice from the held-out items where a
slot has any (a slot without held-out items, e.g. ordinal words, falls back to train). Held-out
items are real synonyms and paraphrases a person reads without effort ("lozenge", "beneath",
"once that is done, ..."), so a held-out score measures generalisation, not guessing.

The generator returns words and the structure behind them; nothing here parses text (the
oracle tools take a case's structured edits, see ``agent.microworld.tools``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal, get_args

from agent.microworld.edits import Edit
from agent.microworld.scene import INSTANCE_ROW, Obj, Scene

__all__ = [
    "Language",
    "LANGUAGES",
    "REF_KINDS",
    "CATEGORY_WORDS",
    "COLOUR_WORDS",
    "PATTERN_ADJECTIVES",
    "PATTERN_NOUNS",
    "VERBS",
    "RELATION_WORDS",
    "TEMPLATES",
    "REF_TEMPLATES",
    "STRUCTURES",
    "SINGLE_STRUCTURES",
    "Phrase",
    "describe",
    "referring",
    "compose",
    "vocabulary",
    "heldout_markers",
]

Language = Literal["train", "heldout"]
LANGUAGES: tuple[str, ...] = get_args(Language)
T, H = "train", "heldout"

#: Kinds of referring expression, as recorded per edit (``Case.ref_kinds``).
REF_KINDS: tuple[str, ...] = (
    "ordinal_left",
    "ordinal_right",
    "extreme",
    "middle",
    "attribute",
    "category",
    "relational",
    "next_to",
    "between",
)

Words = tuple[tuple[str, str], ...]  # ((text, split), ...)

CATEGORY_WORDS: dict[str, Words] = {
    "circle": (("circle", T), ("disc", T), ("round shape", T), ("disk", H), ("circular shape", H)),
    "square": (("square", T), ("square shape", T), ("block", H)),
    "triangle": (("triangle", T), ("three-sided shape", T), ("triangular shape", H)),
    "star": (("star", T), ("five-pointed star", T), ("star shape", H)),
    "heart": (("heart", T), ("heart shape", T), ("love heart", H)),
    "diamond": (("diamond", T), ("rhombus", T), ("lozenge", H)),
    "hexagon": (("hexagon", T), ("six-sided shape", T), ("hex", H)),
    "cross": (("cross", T), ("plus sign", T), ("plus", H)),
}
COLOUR_WORDS: dict[str, Words] = {
    "red": (("red", T), ("scarlet", T), ("crimson", H)),
    "orange": (("orange", T), ("tangerine", H)),
    "yellow": (("yellow", T), ("lemon yellow", T), ("golden", H)),
    "green": (("green", T), ("grass green", T), ("emerald", H)),
    "teal": (("teal", T), ("turquoise", T), ("blue-green", H)),
    "blue": (("blue", T), ("royal blue", T), ("cobalt", H)),
    "purple": (("purple", T), ("violet", H)),
    "pink": (("pink", T), ("rose", H)),
    "brown": (("brown", T), ("chocolate", H)),
    "black": (("black", T), ("jet-black", H)),
}
PATTERN_ADJECTIVES: dict[str, Words] = {
    "solid": (("solid", T), ("plain", T), ("uniform", H)),
    "striped": (("striped", T), ("stripy", H)),
    "dotted": (("dotted", T), ("spotted", T), ("polka-dotted", H)),
    "checkered": (("checkered", T), ("chequered", T), ("checked", H)),
}
PATTERN_NOUNS: dict[str, Words] = {
    "solid": (("a plain fill", T), ("a solid fill", T), ("a single flat colour", H)),
    "striped": (("stripes", T), ("diagonal stripes", T), ("bands", H)),
    "dotted": (("polka dots", T), ("dots", T), ("spots", H)),
    "checkered": (("a checkerboard pattern", T), ("checks", T), ("a chessboard pattern", H)),
}
#: Verb slots of the atomic templates.
VERBS: dict[str, Words] = {
    "add": (("add", T), ("put", T), ("place", T), ("draw", T), ("insert", H), ("include", H)),
    "remove": (
        ("remove", T),
        ("delete", T),
        ("erase", T),
        ("get rid of", T),
        ("take out", H),
        ("eliminate", H),
    ),
    "replace": (("turn", T), ("change", T), ("transform", T), ("convert", H), ("morph", H)),
    "recolour": (("make", T), ("colour", T), ("paint", T), ("turn", T), ("dye", H), ("tint", H)),
}
#: How a relation is written, for adding beside an anchor and in "the X above the Y".
RELATION_WORDS: dict[str, Words] = {
    "above": (("above", T), ("directly above", T), ("immediately above", H)),
    "below": (("below", T), ("under", T), ("directly below", T), ("beneath", H), ("underneath", H)),
    "left of": (("to the left of", T), ("left of", T), ("on the left side of", H)),
    "right of": (("to the right of", T), ("right of", T), ("on the right side of", H)),
}
_SIDES: dict[str, Words] = {
    "left": (("left", T), ("left-hand side", H)),
    "right": (("right", T), ("right-hand side", H)),
}
_ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth")
_ORDINAL_DIGITS = ("1st", "2nd", "3rd", "4th", "5th")

Templates = tuple[tuple[str, str], ...]

#: Atomic templates per edit type. Slots: {v} the type's verb, {ref} the referring expression,
#: {new} the added object ("a red striped star"), {rel} a relation, {a_cat} "a star",
#: {colour}, {a_colour} "an orange", {adj} a pattern adjective, {noun} a pattern noun phrase.
TEMPLATES: dict[str, Templates] = {
    "add": (
        ("{v} {new} {rel} {ref}", T),
        ("{rel} {ref}, {v} {new}", T),
        ("there should be {new} {rel} {ref}", T),
        ("i want {new} {rel} {ref}", T),
        ("please {v} {new} {rel} {ref}", T),
        ("can you {v} {new} {rel} {ref}", T),
        ("{rel} {ref}, there should be {new}", T),
        ("{v} {new} in the empty spot {rel} {ref}", T),
        ("the empty space {rel} {ref} needs {new}", T),
        ("fill the space {rel} {ref} with {new}", T),
        ("i'd like {new} {rel} {ref}", T),
        ("{v} one more object, {new}, {rel} {ref}", T),
        ("draw in {new} {rel} {ref}", T),
        ("let there be {new} {rel} {ref}", T),
        ("{new} should appear {rel} {ref}", T),
        ("{new} goes {rel} {ref}", T),
        ("{v} {new} {rel} {ref}, leaving the rest unchanged", T),
        ("create {new} {rel} {ref}", T),
        ("{v} a new shape {rel} {ref}: {new}", T),
        ("next, {v} {new} {rel} {ref}", T),
        ("could you {v} {new} {rel} {ref}", H),
        ("{rel} {ref} i would like to see {new}", H),
        ("sketch {new} {rel} {ref}", H),
        ("{new} belongs {rel} {ref}", H),
        ("introduce {new} {rel} {ref}", H),
        ("position {new} {rel} {ref}", H),
        ("the spot {rel} {ref} should hold {new}", H),
    ),
    "remove": (
        ("{v} {ref}", T),
        ("{v} {ref} from the image", T),
        ("{v} {ref} from the picture", T),
        ("please {v} {ref}", T),
        ("{ref} should be removed", T),
        ("{ref} has to go", T),
        ("make {ref} disappear", T),
        ("i want {ref} gone", T),
        ("can you {v} {ref}", T),
        ("{v} {ref} entirely", T),
        ("{v} {ref} and keep the background", T),
        ("the image should no longer contain {ref}", T),
        ("i'd like you to {v} {ref}", T),
        ("{v} {ref} completely", T),
        ("{ref} must be deleted", T),
        ("let's {v} {ref}", T),
        ("{v} {ref}, please", T),
        ("{v} only {ref}", T),
        ("get {ref} out of the image", T),
        ("{ref} is not needed, so remove it", H),
        ("i no longer want {ref} in the picture", H),
        ("would you {v} {ref}", H),
        ("{ref} needs to vanish", H),
        ("clear away {ref}", H),
        ("do away with {ref}", H),
        ("{v} {ref} from the scene", H),
    ),
    "replace": (
        ("replace {ref} with {a_cat}", T),
        ("{v} {ref} into {a_cat}", T),
        ("swap {ref} for {a_cat}", T),
        ("make {ref} {a_cat} instead", T),
        ("put {a_cat} in place of {ref}", T),
        ("{ref} should become {a_cat}", T),
        ("exchange {ref} for {a_cat}", T),
        ("change {ref} to {a_cat}", T),
        ("use {a_cat} instead of {ref}", T),
        ("i want {a_cat} where {ref} is", T),
        ("{v} {ref} into {a_cat}, keeping its colour", T),
        ("replace {ref} by {a_cat} of the same colour", T),
        ("please {v} {ref} into {a_cat}", T),
        ("can you replace {ref} with {a_cat}", T),
        ("{ref} should be {a_cat}", T),
        ("redraw {ref} as {a_cat}", T),
        ("i'd like {ref} replaced with {a_cat}", T),
        ("swap out {ref} for {a_cat}", T),
        ("{v} {ref} into {a_cat} with the same colour and pattern", T),
        ("substitute {a_cat} for {ref}", H),
        ("have {a_cat} take the place of {ref}", H),
        ("{ref} ought to be {a_cat}", H),
        ("reshape {ref} into {a_cat}", H),
        ("in place of {ref}, draw {a_cat}", H),
        ("could you {v} {ref} into {a_cat}", H),
        ("trade {ref} for {a_cat}", H),
    ),
    "recolour": (
        ("{v} {ref} {colour}", T),
        ("change the colour of {ref} to {colour}", T),
        ("recolour {ref} to {colour}", T),
        ("recolour {ref} {colour}", T),
        ("{ref} should be {colour}", T),
        ("give {ref} {a_colour} colour", T),
        ("fill {ref} with {colour}", T),
        ("please {v} {ref} {colour}", T),
        ("i want {ref} in {colour}", T),
        ("switch the colour of {ref} to {colour}", T),
        ("set the colour of {ref} to {colour}", T),
        ("{v} {ref} {colour}, keeping its pattern", T),
        ("{ref} needs to be {colour}", T),
        ("can you {v} {ref} {colour}", T),
        ("change {ref} to {colour}", T),
        ("let {ref} be {colour}", T),
        ("i'd like {ref} to be {colour}", T),
        ("repaint {ref} {colour}", T),
        ("{v} {ref} {colour} instead", T),
        ("{ref} ought to be {colour}", H),
        ("could you {v} {ref} {colour}", H),
        ("apply {colour} to {ref}", H),
        ("give {ref} a coat of {colour}", H),
        ("{ref} would look better in {colour}", H),
        ("shade {ref} {colour}", H),
        ("have {ref} coloured {colour}", H),
    ),
    "material": (
        ("make {ref} {adj}", T),
        ("give {ref} {noun}", T),
        ("change the pattern of {ref} to {noun}", T),
        ("cover {ref} in {noun}", T),
        ("switch {ref} to a {adj} texture", T),
        ("re-texture {ref} with {noun}", T),
        ("{ref} should be {adj}", T),
        ("fill {ref} with {noun}", T),
        ("change the texture of {ref} to {noun}", T),
        ("put {noun} on {ref}", T),
        ("i want {ref} {adj}", T),
        ("{ref} needs {noun}", T),
        ("please make {ref} {adj}", T),
        ("can you give {ref} {noun}", T),
        ("set the pattern of {ref} to {noun}", T),
        ("decorate {ref} with {noun}", T),
        ("make {ref} {adj}, keeping its colour", T),
        ("change {ref} to a {adj} pattern", T),
        ("i'd like {ref} with {noun}", T),
        ("let {ref} have {noun}", T),
        ("{ref} ought to have {noun}", H),
        ("could you make {ref} {adj}", H),
        ("apply {noun} to {ref}", H),
        ("pattern {ref} with {noun}", H),
        ("{ref} would look better {adj}", H),
        ("give {ref} a {adj} finish", H),
        ("swap the pattern of {ref} for {noun}", H),
    ),
}

#: The added object's description. Slots: {a} article, {colour}, {adj}, {cat}, {noun}.
_NEW_TEMPLATES: Templates = (
    ("{a} {colour} {adj} {cat}", T),
    ("{a} {adj} {colour} {cat}", T),
    ("{a} {colour} {cat} with {noun}", T),
    ("{a} {cat} that is {colour} and {adj}", H),
    ("{a} {colour} {cat} covered in {noun}", H),
)

#: Referring-expression templates per kind. Slots: {cat} the category word, {ord} an ordinal
#: (word or digit), {num} a number, {side} left / right, {colour}, {adj}, {noun}, {rel} a
#: vertical relation, {anchor} / {anchor2} another object's simple expression.
REF_TEMPLATES: dict[str, Templates] = {
    "ordinal": (
        ("the {ord} {cat} from the {side}", T),
        ("the {ord} {cat} counting from the {side}", T),
        ("the {ord} {cat} from the {side} end", T),
        ("{cat} number {num} from the {side}", H),
        ("the {cat} that is {ord} when counting from the {side}", H),
    ),
    "extreme_left": (
        ("the leftmost {cat}", T),
        ("the {cat} on the far left", T),
        ("the first {cat}", T),
        ("the left-most {cat}", T),
        ("the {cat} furthest to the left", H),
        ("the {cat} at the left end", H),
    ),
    "extreme_right": (
        ("the rightmost {cat}", T),
        ("the {cat} on the far right", T),
        ("the last {cat}", T),
        ("the right-most {cat}", T),
        ("the {cat} furthest to the right", H),
        ("the {cat} at the right end", H),
    ),
    "middle": (
        ("the middle {cat}", T),
        ("the {cat} in the middle", T),
        ("the central {cat}", H),
        ("the {cat} in the centre", H),
    ),
    "colour": (("the {colour} {cat}", T), ("the {cat} that is {colour}", H)),
    "pattern": (
        ("the {adj} {cat}", T),
        ("the {cat} with {noun}", T),
        ("the {cat} covered in {noun}", H),
    ),
    "colour_pattern": (
        ("the {colour} {adj} {cat}", T),
        ("the {colour} {cat} with {noun}", T),
        ("the {adj} {cat} in {colour}", H),
    ),
    "category": (("the {cat}", T), ("the only {cat}", H)),
    "relational": (("the {cat} {rel} {anchor}", T), ("the {cat} sitting {rel} {anchor}", H)),
    "next_to": (
        ("the {cat} next to {anchor}", T),
        ("the {cat} beside {anchor}", T),
        ("the {cat} adjacent to {anchor}", H),
    ),
    "between": (
        ("the {cat} between {anchor} and {anchor2}", T),
        ("the one between {anchor} and {anchor2}", H),
        ("the {cat} in between {anchor} and {anchor2}", H),
    ),
}

#: Sentence structures joining 2+ atomic parts. ``imperative`` ones need every part to start
#: with a verb ("please remove ..."); see ``compose``.
STRUCTURES: dict[str, str] = {
    "list_and": T,
    "then": T,
    "first_finally": T,
    "semicolons": T,
    "sentences": T,
    "please": T,
    "and_then": T,
    "after_that": T,
    "numbered": T,
    "bullets": T,
    "before_that": T,
    "after_you": T,
    "keep_rest": T,
    "first_person": T,
    "once_done": H,
    "steps": H,
    "additionally": H,
    "while_at_it": H,
    "changes_count": H,
    "touch_nothing": H,
}
SINGLE_STRUCTURES: dict[str, str] = {
    "plain": T,
    "please_one": T,
    "keep_rest_one": T,
    "could_you_one": H,
    "nothing_else_one": H,
}
_IMPERATIVE_STRUCTURES = {"please", "after_you", "first_person", "please_one", "could_you_one"}
#: First words of a part that is not a bare imperative.
_NOT_IMPERATIVE = {
    "please",
    "can",
    "could",
    "would",
    "i",
    "i'd",
    "there",
    "the",
    "let",
    "let's",
    "next,",
    "{ref}",
    "{rel}",
    "{new}",
    "{a_cat}",
    "in",
}


def _pick(rng: random.Random, options: Sequence[tuple[str, str]], language: str) -> str:
    """A random text of ``options`` in ``language``; train ones when the slot has none."""
    pool = [text for text, split in options if split == language] or [
        text for text, split in options if split == T
    ]
    return rng.choice(pool)


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def _squash(text: str) -> str:
    return " ".join(text.split())


# -- referring expressions --------------------------------------------------------------------
def _group(scene: Scene, obj: Obj) -> list[Obj] | None:
    """The objects an ordinal counts: every object of ``obj``'s category, left to right, when
    they all sit in the instances' row (else ordinals would be ambiguous)."""
    same = [o for o in scene.objects if o.category == obj.category]
    if len(same) < 2 or any(o.row != INSTANCE_ROW for o in same):
        return None
    return sorted(same, key=lambda o: o.col)


def _row_neighbours(scene: Scene, obj: Obj) -> tuple[Obj | None, Obj | None]:
    """The nearest object to the left and to the right of ``obj`` in its row."""
    row = sorted((o for o in scene.objects if o.row == obj.row), key=lambda o: o.col)
    i = row.index(obj)
    return (row[i - 1] if i > 0 else None), (row[i + 1] if i + 1 < len(row) else None)


def _simple(scene: Scene, obj: Obj, rng: random.Random, language: str) -> list[tuple[str, str]]:
    """(kind, text) of every non-relational expression that names ``obj`` alone on ``scene``,
    one text per kind (and per attribute form)."""
    out: list[tuple[str, str]] = []
    cat = _pick(rng, CATEGORY_WORDS[obj.category], language)
    fill = {
        "cat": cat,
        "colour": _pick(rng, COLOUR_WORDS[obj.colour], language),
        "adj": _pick(rng, PATTERN_ADJECTIVES[obj.pattern], language),
        "noun": _pick(rng, PATTERN_NOUNS[obj.pattern], language),
    }
    group = _group(scene, obj)
    if group is not None:
        n, i = len(group), group.index(obj)
        for side, k in (("left", i + 1), ("right", n - i)):
            if k <= len(_ORDINAL_WORDS):
                ordinal = rng.choice((_ORDINAL_WORDS, _ORDINAL_DIGITS))[k - 1]
                out.append(
                    (
                        f"ordinal_{side}",
                        _pick(rng, REF_TEMPLATES["ordinal"], language).format(
                            ord=ordinal, num=k, side=_pick(rng, _SIDES[side], language), **fill
                        ),
                    )
                )
            if k == 1:
                out.append(
                    (
                        "extreme",
                        _pick(rng, REF_TEMPLATES[f"extreme_{side}"], language).format(**fill),
                    )
                )
        if n % 2 == 1 and i == n // 2:
            out.append(("middle", _pick(rng, REF_TEMPLATES["middle"], language).format(**fill)))
    same = [o for o in scene.objects if o.category == obj.category]
    attribute_forms = [
        ("colour", lambda o: o.colour),
        ("pattern", lambda o: o.pattern),
        ("colour_pattern", lambda o: (o.colour, o.pattern)),
    ]
    for form, key in attribute_forms:
        if len(same) > 1 and sum(1 for o in same if key(o) == key(obj)) == 1:
            out.append(("attribute", _pick(rng, REF_TEMPLATES[form], language).format(**fill)))
    if len(same) == 1:
        out.append(("category", _pick(rng, REF_TEMPLATES["category"], language).format(**fill)))
    return out


def _anchor_text(scene: Scene, anchor: Obj, rng: random.Random, language: str) -> str | None:
    options = _simple(scene, anchor, rng, language)
    return rng.choice(options)[1] if options else None


def referring(
    scene: Scene, obj: Obj, rng: random.Random, language: Language = "train"
) -> dict[str, str]:
    """One expression per available kind that names ``obj`` and nothing else on ``scene``:
    ``{kind: text}``, kinds from ``REF_KINDS``. Ordinals count the objects of ``obj``'s
    category left to right (all must share the instances' row); "first" / "last" mean
    leftmost / rightmost; relations are read on the grid (above = the cell directly above;
    next to / between = the nearest objects on either side in the same row)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    out: dict[str, str] = {}
    for kind, text in _simple(scene, obj, rng, language):
        out.setdefault(kind, text)
    cat = _pick(rng, CATEGORY_WORDS[obj.category], language)
    # relational: the object directly above / below another object
    for relation, dr in (("above", 1), ("below", -1)):
        anchor = scene.at(obj.row + dr, obj.col) if 0 <= obj.row + dr < 3 else None
        if anchor is not None and (text := _anchor_text(scene, anchor, rng, language)):
            out.setdefault(
                "relational",
                _pick(rng, REF_TEMPLATES["relational"], language).format(
                    cat=cat, rel=_pick(rng, RELATION_WORDS[relation], language), anchor=text
                ),
            )
    left, right = _row_neighbours(scene, obj)
    for anchor in (left, right):
        if anchor is None:
            continue
        a_left, a_right = _row_neighbours(scene, anchor)
        beside = [o for o in (a_left, a_right) if o is not None and o.category == obj.category]
        if beside == [obj] and (text := _anchor_text(scene, anchor, rng, language)):
            out.setdefault(
                "next_to",
                _pick(rng, REF_TEMPLATES["next_to"], language).format(cat=cat, anchor=text),
            )
            break
    if left is not None and right is not None:
        a, b = _anchor_text(scene, left, rng, language), _anchor_text(scene, right, rng, language)
        if a and b:
            out["between"] = _pick(rng, REF_TEMPLATES["between"], language).format(
                cat=cat, anchor=a, anchor2=b
            )
    return out


# -- atomic phrasings -------------------------------------------------------------------------
class Phrase(tuple):
    """(text, ref_kind, template, ref, words) of one atomic edit: lowercase, no end
    punctuation. ``ref`` is the referring expression as it appears in ``text``; ``words`` the
    slot fillers used (verb, new values)."""

    __slots__ = ()

    def __new__(
        cls,
        text: str,
        ref_kind: str,
        template: str,
        ref: str = "",
        words: dict[str, str] | None = None,
    ) -> Phrase:
        return super().__new__(cls, (text, ref_kind, template, ref, dict(words or {})))

    text = property(lambda self: self[0])
    ref_kind = property(lambda self: self[1])
    template = property(lambda self: self[2])
    ref = property(lambda self: self[3])
    words = property(lambda self: self[4])


def describe(
    scene: Scene,
    edit: Edit,
    rng: random.Random,
    language: Language = "train",
    *,
    ref_kind: str | None = None,
) -> Phrase | None:
    """Words for ``edit`` read against ``scene`` (the image it is applied to): a random
    template of its type in ``language`` with a referring expression of a random available
    kind (or ``ref_kind``) for its object (for add: its anchor). None when nothing on
    ``scene`` can be named that way."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    obj = scene.get(edit.target)
    if obj is None:
        return None
    refs = referring(scene, obj, rng, language)
    if ref_kind is not None:
        refs = {k: v for k, v in refs.items() if k == ref_kind}
    if not refs:
        return None
    kind = rng.choice(sorted(refs))
    template = _pick(rng, TEMPLATES[edit.kind], language)
    fill: dict[str, str] = {"ref": refs[kind]}
    if edit.kind in VERBS:
        fill["v"] = _pick(rng, VERBS[edit.kind], language)
    if edit.kind == "add":
        colour = _pick(rng, COLOUR_WORDS[edit.colour], language)  # type: ignore[index]
        new = _pick(rng, _NEW_TEMPLATES, language)
        first = new.split()[1].strip("{}")
        words = {
            "colour": colour,
            "adj": _pick(rng, PATTERN_ADJECTIVES[edit.pattern], language),  # type: ignore[index]
            "cat": _pick(rng, CATEGORY_WORDS[edit.category], language),  # type: ignore[index]
            "noun": _pick(rng, PATTERN_NOUNS[edit.pattern], language),
        }  # type: ignore[index]
        fill["new"] = new.format(a=_article(words[first]), **words)
        fill["rel"] = _pick(rng, RELATION_WORDS[edit.relation], language)  # type: ignore[index]
    elif edit.kind == "replace":
        cat = _pick(rng, CATEGORY_WORDS[edit.category], language)  # type: ignore[index]
        fill["a_cat"] = f"{_article(cat)} {cat}"
    elif edit.kind == "recolour":
        colour = _pick(rng, COLOUR_WORDS[edit.colour], language)  # type: ignore[index]
        fill["colour"], fill["a_colour"] = colour, f"{_article(colour)} {colour}"
    elif edit.kind == "material":
        fill["adj"] = _pick(rng, PATTERN_ADJECTIVES[edit.pattern], language)  # type: ignore[index]
        fill["noun"] = _pick(rng, PATTERN_NOUNS[edit.pattern], language)  # type: ignore[index]
    return Phrase(_squash(template.format(**fill)), kind, template, refs[kind], fill)


# -- sentences --------------------------------------------------------------------------------
def _imperative(template: str) -> bool:
    return template.split()[0] not in _NOT_IMPERATIVE and "please" not in template


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


_COUNT = {2: "two", 3: "three", 4: "four", 5: "five"}


def compose(
    parts: Sequence[Phrase], rng: random.Random, language: Language = "train"
) -> tuple[str, str]:
    """(instruction, structure name): the atomic phrasings joined by a random sentence
    structure of ``language``. The edits of a case commute, so a structure may present them in
    another order ("b. before that, a") without changing the result."""
    if not parts:
        raise ValueError("compose needs at least one atomic phrasing")
    texts = [p.text for p in parts]
    imperative = all(_imperative(p.template) for p in parts)
    table = SINGLE_STRUCTURES if len(parts) == 1 else STRUCTURES
    pool = [
        name
        for name, split in table.items()
        if split == language and (imperative or name not in _IMPERATIVE_STRUCTURES)
    ]
    if not pool:
        pool = [
            name
            for name, split in table.items()
            if split == T and name not in _IMPERATIVE_STRUCTURES
        ]
    style = rng.choice(pool)
    head, last = texts[:-1], texts[-1]
    n = len(texts)
    if style == "plain":
        return _cap(texts[0]) + ".", style
    if style == "please_one":
        return f"Please {texts[0]}.", style
    if style == "keep_rest_one":
        return f"{_cap(texts[0])} and leave everything else as it is.", style
    if style == "could_you_one":
        return f"Could you {texts[0]}?", style
    if style == "nothing_else_one":
        return f"{_cap(texts[0])}, and change nothing else.", style
    if style == "list_and":
        text = ", ".join(head) + " and " + last
    elif style == "then":
        text = ", then ".join(texts)
    elif style == "first_finally":
        text = "first " + ", then ".join(head) + ", and finally " + last
    elif style == "semicolons":
        text = "; ".join(texts)
    elif style == "sentences":
        return " ".join(
            _cap(("also, " if i == n - 1 and i > 1 else "") + t) + "." for i, t in enumerate(texts)
        ), style
    elif style == "please":
        text = "please " + ", ".join(head) + (", and " if n > 2 else " and ") + last
    elif style == "and_then":
        text = " and then ".join(texts)
    elif style == "after_that":
        return f"{_cap(', '.join(head))}. After that, {last}.", style
    elif style == "numbered":
        return "\n".join(f"{i}. {_cap(t)}" for i, t in enumerate(texts, 1)), style
    elif style == "bullets":
        return "\n".join(f"- {t}" for t in texts), style
    elif style == "before_that":
        return f"{_cap(last)}. Before that, {', '.join(head)}.", style
    elif style == "after_you":
        return f"After you {texts[0]}, {', '.join(texts[1:])}.", style
    elif style == "keep_rest":
        text = ", ".join(head) + " and " + last + ", and leave everything else as it is"
    elif style == "first_person":
        text = "i'd like you to " + ", ".join(head) + " and " + last
    elif style == "once_done":
        return " ".join(
            [_cap(texts[0]) + "."] + [f"Once that is done, {t}." for t in texts[1:]]
        ), style
    elif style == "steps":
        return " ".join(f"Step {i}: {t}." for i, t in enumerate(texts, 1)), style
    elif style == "additionally":
        return " ".join([_cap(texts[0]) + "."] + [f"Additionally, {t}." for t in texts[1:]]), style
    elif style == "while_at_it":
        text = ", ".join(head) + ", and while you are at it, " + last
    elif style == "changes_count":
        return f"I need {_COUNT[n]} changes: " + "; ".join(texts) + ".", style
    else:  # touch_nothing
        text = "; ".join(texts) + ". do not touch anything else"
        return ". ".join(_cap(s) for s in text.split(". ")) + ".", style
    return _cap(text) + ".", style


# -- the split, for tests and exports ----------------------------------------------------------
def vocabulary(language: Language) -> dict[str, set[str]]:
    """Every item of ``language`` by table: words, templates and structure names."""
    words: dict[str, set[str]] = {}
    tables: dict[str, dict[str, Words]] = {
        "category": CATEGORY_WORDS,
        "colour": COLOUR_WORDS,
        "pattern_adjective": PATTERN_ADJECTIVES,
        "pattern_noun": PATTERN_NOUNS,
        "verb": VERBS,
        "relation": RELATION_WORDS,
        "side": _SIDES,
        "template": TEMPLATES,
        "ref_template": REF_TEMPLATES,
        "new_template": {"new": _NEW_TEMPLATES},
    }
    for name, table in tables.items():
        words[name] = {
            text for options in table.values() for text, split in options if split == language
        }
    words["structure"] = {
        k for k, v in {**STRUCTURES, **SINGLE_STRUCTURES}.items() if v == language
    }
    return words


def _literals(template: str) -> list[str]:
    return [
        " ".join(chunk.split())
        for chunk in re.split(r"\{\w+\}", template)
        if len(chunk.split()) >= 1 and chunk.strip(" ,.:")
    ]


#: Fixed words each sentence structure writes (lowercase).
_STRUCTURE_TEXTS: dict[str, str] = {
    "list_and": "and",
    "then": "then",
    "first_finally": "first then and finally",
    "semicolons": ";",
    "sentences": "also,",
    "please": "please and",
    "and_then": "and then",
    "after_that": "after that,",
    "numbered": "1.",
    "bullets": "-",
    "before_that": "before that,",
    "after_you": "after you",
    "keep_rest": "and leave everything else as it is",
    "first_person": "i'd like you to and",
    "once_done": "once that is done",
    "steps": "step 1:",
    "additionally": "additionally,",
    "while_at_it": "while you are at it",
    "changes_count": "changes:",
    "touch_nothing": "do not touch anything else",
    "plain": "",
    "please_one": "please",
    "keep_rest_one": "and leave everything else as it is",
    "could_you_one": "could you",
    "nothing_else_one": "and change nothing else",
}


def heldout_markers() -> set[str]:
    """Lowercase phrases that only held-out language writes: every held-out synonym and every
    literal run of a held-out template or structure, less those that also occur (as whole
    words) in some train item. A training text containing one of them leaked held-out
    language."""
    train = vocabulary("train")
    train_texts = [t for name, items in train.items() if name != "structure" for t in items]
    train_texts += [_STRUCTURE_TEXTS[name] for name in train["structure"]]
    held = vocabulary("heldout")
    candidates: set[str] = set()
    for name, items in held.items():
        if name == "structure":
            candidates |= {_STRUCTURE_TEXTS[name] for name in items}
        elif "template" in name:
            for template in items:
                candidates |= {c.strip(" ,.:") for c in _literals(template)}
        else:
            candidates |= items
    out = set()
    for c in candidates:
        if not c:
            continue
        pattern = re.compile(rf"(?<![\w-]){re.escape(c)}(?![\w-])")
        if not any(pattern.search(t) for t in train_texts):
            out.add(c)
    return out
