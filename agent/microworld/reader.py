"""Reading an atomic edit written in the micro-world's words back into an ``Edit``.

A planner writes its next step as free text ("make the first triangle from the left dotted").
To judge it by what it does, not by string match, ``read_edit`` turns the text into the
``Edit`` it asks for on the scene it is meant for:

1. the referring expression: the longest expression for some object of ``scene`` that occurs
   in the text, word for word. Simple ones (ordinal, extreme, middle, attribute, category)
   come from the grammar itself (both language splits, many random draws, plus the canonical
   ``referring_expressions``); composite ones (relational, next to, between) are parsed with
   the grammar's templates around simple anchors and resolved on the grid as the grammar
   defines them. Every expression names exactly one object;
   When the rest of the text still names an object ("the ... circle"), the match was only an
   anchor of a longer expression the list lacks, and the text is unreadable;
2. the rest of the text, read with the word tables (``edit_meaning``): the category, colour,
   pattern and relation it names, and whether it removes;
3. the kind from what was named: remove (a remove verb, or no value named at all); add
   (relation + category + colour + pattern, beside the named object); replace (category);
   recolour (colour); material (pattern). Anything else (two values of a change) is
   unreadable: ``None``.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from agent.microworld.edits import Edit, referring_expressions
from agent.microworld.scene import Obj, Scene

__all__ = ["edit_meaning", "expressions", "judge_step", "read_edit"]

DRAWS = 400  # random draws per object and language when listing expressions
MAX_KEYS = 50_000  # ``_simple_key``s whose draws are kept (about 45 texts each)


@lru_cache(maxsize=1)
def _phrases() -> list[tuple[str, tuple[str, str]]]:
    from agent.microworld import grammar

    tables = {
        "category": grammar.CATEGORY_WORDS,
        "colour": grammar.COLOUR_WORDS,
        "pattern": grammar.PATTERN_ADJECTIVES,
        "relation": grammar.RELATION_WORDS,
        "remove": {"remove": grammar.VERBS["remove"]},
    }
    phrases = [
        (word, (slot, value))
        for slot, table in tables.items()
        for value, words in table.items()
        for word, _ in words
    ]
    phrases += [(w, ("pattern", v)) for v, ws in grammar.PATTERN_NOUNS.items() for w, _ in ws]
    phrases.sort(key=lambda p: -len(p[0]))  # longest first: "grass green" before "green"
    return phrases


def _words(text: str) -> str:
    """Lowercase words separated by single spaces, punctuation dropped, padded with spaces."""
    return f" {' '.join(re.sub(r'[,.:;!?]', ' ', text.lower()).split())} "


def edit_meaning(text: str) -> frozenset[tuple[str, str]]:
    """What an edit's words name, read with the word tables of both language splits: the
    category, colour, pattern and relation, and ("remove", "remove"). So "paint it orange" and
    "make it orange" mean the same; "make it dotted" and "make it chequered" do not."""
    rest = _words(text)
    found = set()
    for word, meaning in _phrases():
        key = f" {word} "
        while key in rest:
            found.add(meaning)
            rest = rest.replace(key, " | ", 1)
    return frozenset(found)


def expressions(scene: Scene) -> dict[str, str]:
    """{expression (lowercase): object id} of the simple expressions (ordinal, extreme,
    middle, attribute, category) of every object of ``scene``, drawn from the grammar, and
    the canonical ``referring_expressions``; each names one object and nothing else there.
    Composite expressions are parsed around these (``_composites``), not listed."""
    return dict(_expressions(scene.model_dump_json()))


@lru_cache(maxsize=256)
def _expressions(scene_json: str) -> tuple[tuple[str, str], ...]:
    from agent.microworld.grammar import LANGUAGES, _simple

    scene = Scene.model_validate_json(scene_json)
    out: dict[str, str] = {}
    for obj in scene.objects:
        for text in referring_expressions(scene, obj):
            out.setdefault(text.lower(), obj.id)
        key = _simple_key(scene, obj)
        texts = _SIMPLE_TEXTS.get(key)
        if texts is None:
            # distinct texts in first-drawn order (the draws repeat each text ~60 times)
            texts = list(
                dict.fromkeys(
                    text.lower()
                    for language in LANGUAGES
                    for k in range(DRAWS)
                    for _, text in _simple(scene, obj, random.Random(f"reader|{k}"), language)
                )
            )
            if len(_SIMPLE_TEXTS) >= MAX_KEYS:
                _SIMPLE_TEXTS.clear()  # a bound on memory; drawing again gives the same texts
            _SIMPLE_TEXTS[key] = texts
        for text in texts:
            out.setdefault(text, obj.id)
    return tuple(out.items())


# the draws of ``grammar._simple`` by ``_simple_key``: they depend on the scene only through it,
# and most states of a case (and many cases) share keys, so each key is drawn once per process
_SIMPLE_TEXTS: dict[tuple[object, ...], list[str]] = {}


def _simple_key(scene: Scene, o: Obj) -> tuple[object, ...]:
    """Everything ``grammar._simple`` reads of ``scene`` for ``obj``: the object's attributes,
    its place among its category's objects (``grammar._group``), how many objects share its
    category, and how many of those share its colour, its pattern and both."""
    from agent.microworld.grammar import _group

    same = [x for x in scene.objects if x.category == o.category]
    group = _group(scene, o)
    return (
        o.category,
        o.colour,
        o.pattern,
        None if group is None else (len(group), group.index(o)),
        len(same),
        sum(1 for x in same if x.colour == o.colour),
        sum(1 for x in same if x.pattern == o.pattern),
        sum(1 for x in same if (x.colour, x.pattern) == (o.colour, o.pattern)),
    )


@lru_cache(maxsize=1)
def _definite_object() -> re.Pattern[str]:
    from agent.microworld import grammar

    words = sorted(
        (w for ws in grammar.CATEGORY_WORDS.values() for w, _ in ws), key=len, reverse=True
    )
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf" the (?:\S+ ){{0,4}}?(?:{alternatives}) ")


def _names_another_object(rest: str) -> bool:
    """True when the text outside the matched expression still names an object ("the ...
    circle"): new objects are indefinite ("a red star"), so the match was not the whole
    expression."""
    return _definite_object().search(rest) is not None


def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def _composites(scene: Scene, words: str) -> list[tuple[str, str]]:
    """(expression, object id) of every relational / next-to / between expression in
    ``words``, parsed with the grammar's templates: the anchors are simple expressions of the
    scene, the target is found on the grid as ``grammar.referring`` defines it (above = the
    cell directly above the anchor; next to / between = the nearest objects in the row)."""
    from agent.microworld import grammar

    # only anchors written in ``words`` can match: filtering first keeps the patterns small
    # (compiling them over every expression of the scene cost ~0.2 s per call)
    anchors = {e: oid for e, oid in expressions(scene).items() if e in words}
    if not anchors:
        return []
    cat_of = {w: c for c, ws in grammar.CATEGORY_WORDS.items() for w, _ in ws}
    rel_of = {
        w: r for r, ws in grammar.RELATION_WORDS.items() for w, _ in ws if r in ("above", "below")
    }
    slots = {
        "cat": f"(?P<cat>{_alternation(list(cat_of))})",
        "rel": f"(?P<rel>{_alternation(list(rel_of))})",
        "anchor": f"(?P<anchor>{_alternation(list(anchors))})",
        "anchor2": f"(?P<anchor2>{_alternation(list(anchors))})",
    }
    found: list[tuple[str, str]] = []
    for kind in ("relational", "next_to", "between"):
        for template, _ in grammar.REF_TEMPLATES[kind]:
            pattern = re.escape(template)
            for name, rx in slots.items():
                pattern = pattern.replace(re.escape("{" + name + "}"), rx)
            for m in re.finditer(f"(?= ({pattern}) )", words):
                g = m.groupdict()
                anchor = scene.get(anchors[g["anchor"]])
                cat = cat_of.get(g.get("cat") or "")
                target = None
                if anchor is None:
                    continue
                if kind == "relational":
                    dr = -1 if rel_of[g["rel"]] == "above" else 1
                    target = (
                        scene.at(anchor.row + dr, anchor.col) if 0 <= anchor.row + dr < 3 else None
                    )
                elif kind == "next_to":
                    beside = [
                        o
                        for o in grammar._row_neighbours(scene, anchor)
                        if o is not None and o.category == cat
                    ]
                    target = beside[0] if len(beside) == 1 else None
                else:
                    other = scene.get(anchors[g["anchor2"]])
                    for o in scene.objects:
                        if other is not None and {
                            x.id for x in grammar._row_neighbours(scene, o) if x
                        } == {anchor.id, other.id}:
                            target = o
                if target is not None and (cat is None or target.category == cat):
                    found.append((m.group(1), target.id))
    return found


def read_edit(text: str, scene: Scene) -> Edit | None:
    """The ``Edit`` that ``text`` asks for on ``scene``, or None when it cannot be read."""
    words = _words(text)
    found = [(e, oid) for e, oid in expressions(scene).items() if f" {e} " in words]
    found += _composites(scene, words)
    if not found:
        return None
    ref, target = max(found, key=lambda p: len(p[0]))
    rest = words.replace(f" {ref} ", " | ", 1)
    if _names_another_object(rest):
        return None  # the match was only an anchor of a longer expression the list lacks
    meaning = dict(edit_meaning(rest))
    try:
        # every other kind names a value, so a text that names none removes ("... has to go")
        if "remove" in meaning or not meaning:
            if len(meaning) > 1:
                return None
            return Edit(kind="remove", ref=ref, target=target)
        if "relation" in meaning:
            return Edit(
                kind="add",
                ref=ref,
                target=target,
                relation=meaning["relation"],  # type: ignore[arg-type]
                category=meaning.get("category"),
                colour=meaning.get("colour"),
                pattern=meaning.get("pattern"),
            )
        if len(meaning) != 1:
            return None
        ((slot, value),) = meaning.items()
        kind = {"category": "replace", "colour": "recolour", "pattern": "material"}[slot]
        return Edit(kind=kind, ref=ref, target=target, **{slot: value})  # type: ignore[arg-type]
    except ValueError:  # a kind without the values it needs (e.g. an add with no colour)
        return None


def _distance(a: Scene, b: Scene, cell: str) -> int:
    """How far cell ``cell`` of ``a`` is from ``b``'s: attributes that differ (category,
    colour, pattern), 3 when one side is empty and the other not."""
    x, y = a.get(cell), b.get(cell)
    if x is None or y is None:
        return 0 if x is y else 3
    return sum(getattr(x, k) != getattr(y, k) for k in ("category", "colour", "pattern"))


def judge_step(text: str, scene: Scene, goal: Scene) -> str:
    """What the atomic edit ``text`` does when executed on ``scene``, against ``goal``:
    "progress" (some cell comes closer to the goal, none moves away), "away" (a cell moves
    away from it), "no change", "refused" (read, but it cannot apply: the cell is taken) or
    "unread" (``read_edit`` cannot read it)."""
    from agent.microworld.edits import EditError, apply_edit

    edit = read_edit(text, scene)
    if edit is None:
        return "unread"
    try:
        after = apply_edit(scene, edit)
    except EditError:
        return "refused"
    cells = {o.id for o in scene.objects} | {o.id for o in after.objects}
    moved = [
        (_distance(scene, goal, c), _distance(after, goal, c))
        for c in cells
        if _distance(scene, after, c)
    ]
    if not moved:
        return "no change"
    return "progress" if all(new < old for old, new in moved) else "away"
