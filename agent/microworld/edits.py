"""The five MIRA-Bench edit types, referring expressions, and applying edits to scenes.

References are resolved on the ORIGINAL scene (as a person reads the instruction against the
image they were given): an ``Edit`` stores both the words (``ref``) and the id of the object
they name (``target``). Objects keep their cell id through edits, so edits whose objects are
distinct commute, and the generator only draws such sets.

Referring-expression grammar (lowercase):
- ordinal over the row of instances: "the leftmost circle", "the second circle from the
  left", "the third circle from the right", "the rightmost circle", "the middle circle" (odd
  rows only);
- attributes, when they single the object out: "the red circle", "the striped circle",
  "the red striped circle";
- the bare category when there is one object of it: "the star";
- relative to another object (corrective edits name cells that were empty in the original
  this way): "the star above the leftmost circle".
"""

from __future__ import annotations

import random
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, model_validator

from agent.microworld.scene import CATEGORIES, COLS, PALETTE, PATTERNS, ROWS, Obj, Scene

__all__ = [
    "Kind",
    "KINDS",
    "Relation",
    "RELATIONS",
    "ORDINALS",
    "Edit",
    "EditError",
    "NoRoomError",
    "referring_expressions",
    "relational_ref",
    "resolve",
    "neighbour",
    "cell_coords",
    "apply_edit",
    "apply_edits",
    "sample_edits",
    "corrective_edit",
    "other_targets",
]

Kind = Literal["add", "remove", "replace", "recolour", "material"]
KINDS: tuple[str, ...] = get_args(Kind)
Relation = Literal["above", "below", "left of", "right of"]
RELATIONS: tuple[str, ...] = get_args(Relation)
#: (d_row, d_col) of each relation: where the new object goes relative to its anchor.
_OFFSET = {"above": (-1, 0), "below": (1, 0), "left of": (0, -1), "right of": (0, 1)}
#: Relation as written inside a referring expression / an add phrasing.
REL_WORDS = {
    "above": "above",
    "below": "below",
    "left of": "to the left of",
    "right of": "to the right of",
}
ORDINALS = {"second": 2, "third": 3, "fourth": 4}


class EditError(ValueError):
    """An edit that cannot apply to a scene (no such object, cell taken, unknown words)."""


class NoRoomError(ValueError):
    """``sample_edits`` cannot place ``n`` edits: every object is taken and no cell is free."""


def cell_coords(obj_id: str) -> tuple[int, int]:
    """(row, col) of an object / cell id: ``"r1c3"`` -> ``(1, 3)``."""
    m = re.fullmatch(r"r(\d+)c(\d+)", obj_id)
    if m is None:
        raise EditError(f"not an object id: {obj_id!r}")
    return int(m.group(1)), int(m.group(2))


class Edit(BaseModel):
    """One atomic edit. ``target`` is the id the referring expression ``ref`` names on the
    original scene: the object to change, or for ``add`` the anchor beside which the new
    object goes (``relation``). ``category``/``colour``/``pattern`` are the new values the
    kind needs (add: all three; replace: category; recolour: colour; material: pattern)."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    ref: str
    target: str
    relation: Relation | None = None
    category: str | None = None
    colour: str | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Edit:
        need = {
            "add": ("relation", "category", "colour", "pattern"),
            "remove": (),
            "replace": ("category",),
            "recolour": ("colour",),
            "material": ("pattern",),
        }
        for name in ("relation", "category", "colour", "pattern"):
            given = getattr(self, name) is not None
            if given != (name in need[self.kind]):
                raise ValueError(
                    f"a {self.kind!r} edit {'needs' if not given else 'takes no'} {name!r}"
                )
        cell_coords(self.target)
        return self

    @property
    def cell(self) -> str:
        """Id of the cell the edit changes (for add: the anchor's neighbour; an add off the
        grid gives a cell no scene has, and ``apply_edit`` refuses it)."""
        if self.kind != "add":
            return self.target
        r, c = cell_coords(self.target)
        dr, dc = _OFFSET[self.relation]  # type: ignore[index]
        return f"r{r + dr}c{c + dc}"


def neighbour(obj_id: str, relation: str) -> str | None:
    """The cell ``relation`` of ``obj_id`` ("above" = the cell above), None off the grid."""
    r, c = cell_coords(obj_id)
    dr, dc = _OFFSET[relation]
    return f"r{r + dr}c{c + dc}" if 0 <= r + dr < ROWS and 0 <= c + dc < COLS else None


# -- referring expressions --------------------------------------------------------------------
def referring_expressions(scene: Scene, obj: Obj) -> list[str]:
    """Every expression that names ``obj`` and nothing else in ``scene``: ordinal forms first
    (instances only), then attribute forms, then the bare category."""
    out: list[str] = []
    row = scene.instances()
    if obj.role == "instance" and obj in row:
        n, i = len(row), row.index(obj)
        cat = obj.category
        if i == 0:
            out.append(f"the leftmost {cat}")
        if i == n - 1:
            out.append(f"the rightmost {cat}")
        if n % 2 == 1 and i == n // 2:
            out.append(f"the middle {cat}")
        for word, k in ORDINALS.items():
            if i == k - 1:
                out.append(f"the {word} {cat} from the left")
            if n - i == k:
                out.append(f"the {word} {cat} from the right")
    same = [o for o in scene.objects if o.category == obj.category]
    for words, key in (
        ((obj.colour,), lambda o: o.colour),
        ((obj.pattern,), lambda o: o.pattern),
        ((obj.colour, obj.pattern), lambda o: (o.colour, o.pattern)),
    ):
        if sum(1 for o in same if key(o) == key(obj)) == 1:
            out.append(f"the {' '.join(words)} {obj.category}")
    if len(same) == 1:
        out.append(f"the {obj.category}")
    return out


def relational_ref(original: Scene, cell: str, category: str) -> str | None:
    """ "the <category> <relation> <anchor>", naming ``cell`` through an object of the
    original scene next to it; None when no neighbour can be named."""
    r, c = cell_coords(cell)
    for relation, (dr, dc) in _OFFSET.items():
        anchor = original.at(r - dr, c - dc) if 0 <= r - dr < ROWS and 0 <= c - dc < COLS else None
        if anchor is not None and anchor.id != cell:
            refs = referring_expressions(original, anchor)
            if refs:
                return f"the {category} {REL_WORDS[relation]} {refs[0]}"
    return None


_CAT = "|".join(CATEGORIES)
_COL = "|".join(PALETTE)
_PAT = "|".join(PATTERNS)
_REL = "|".join(sorted(REL_WORDS.values(), key=len, reverse=True))
_SIMPLE = (
    rf"the (?:(?:leftmost|rightmost|middle) (?:{_CAT})"
    rf"|(?:{'|'.join(ORDINALS)}) (?:{_CAT}) from the (?:left|right)"
    rf"|(?:(?:{_COL}) )?(?:(?:{_PAT}) )?(?:{_CAT}))"
)
#: Regex of every referring expression (no groups; used inside the phrasing parser).
REF_PATTERN = rf"{_SIMPLE}(?: (?:{_REL}) {_SIMPLE})?"
_REL_OF = {v: k for k, v in REL_WORDS.items()}


def resolve(scene: Scene, ref: str) -> str:
    """The id of the object (or, for a relational expression, the cell) that ``ref`` names on
    ``scene``. Raises ``EditError`` when it names nothing or more than one object."""
    text = " ".join(ref.lower().split())
    m = re.fullmatch(rf"the ({_CAT}) ({_REL}) ({_SIMPLE})", text)
    if m is not None:
        r, c = cell_coords(resolve(scene, m.group(3)))
        dr, dc = _OFFSET[_REL_OF[m.group(2)]]
        if not (0 <= r + dr < ROWS and 0 <= c + dc < COLS):
            raise EditError(f"{ref!r} names a cell outside the grid")
        return f"r{r + dr}c{c + dc}"
    row = scene.instances()
    m = re.fullmatch(rf"the (leftmost|rightmost|middle) ({_CAT})", text)
    if m is not None:
        if not row or m.group(2) != row[0].category:
            raise EditError(f"{ref!r}: the row is not of {m.group(2)!r}")
        if m.group(1) == "middle" and len(row) % 2 == 0:
            raise EditError(f"{ref!r}: a row of {len(row)} has no middle")
        index = {"leftmost": 0, "rightmost": len(row) - 1, "middle": len(row) // 2}[m.group(1)]
        return row[index].id
    m = re.fullmatch(rf"the ({'|'.join(ORDINALS)}) ({_CAT}) from the (left|right)", text)
    if m is not None:
        k = ORDINALS[m.group(1)]
        if not row or m.group(2) != row[0].category or k > len(row):
            raise EditError(f"{ref!r} names no instance of the row")
        return row[k - 1].id if m.group(3) == "left" else row[-k].id
    m = re.fullmatch(rf"the (?:({_COL}) )?(?:({_PAT}) )?({_CAT})", text)
    if m is not None:
        colour, pattern, category = m.groups()
        hits = [
            o
            for o in scene.objects
            if o.category == category
            and colour in (None, o.colour)
            and pattern in (None, o.pattern)
        ]
        if len(hits) != 1:
            raise EditError(f"{ref!r} names {len(hits)} objects, not one")
        return hits[0].id
    raise EditError(f"not a referring expression: {ref!r}")


# -- applying ---------------------------------------------------------------------------------
def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after ``edit`` (targets by id). Raises ``EditError`` when it cannot apply."""
    if edit.kind == "add":
        if neighbour(edit.target, edit.relation) is None:  # type: ignore[arg-type]
            raise EditError(f"{edit.relation} {edit.ref!r} is outside the grid")
        r, c = cell_coords(edit.cell)
        if scene.get(edit.cell) is not None:
            raise EditError(f"the cell {edit.relation} {edit.ref!r} is taken")
        return scene.with_object(
            Obj(
                role="added",
                category=edit.category,
                colour=edit.colour,
                pattern=edit.pattern,
                row=r,
                col=c,
            )
        )
    obj = scene.get(edit.target)
    if obj is None:
        raise EditError(f"{edit.ref!r} is not in the image")
    if edit.kind == "remove":
        return scene.without(obj.id)
    field = {"replace": "category", "recolour": "colour", "material": "pattern"}[edit.kind]
    return scene.with_object(obj.model_copy(update={field: getattr(edit, field)}))


def apply_edits(scene: Scene, edits: list[Edit] | tuple[Edit, ...]) -> Scene:
    for edit in edits:
        scene = apply_edit(scene, edit)
    return scene


def sample_edits(scene: Scene, n: int, rng: random.Random) -> list[Edit]:
    """``n`` edits on distinct objects/cells, kinds drawn uniformly, each with a random valid
    referring expression. An add's anchor may also be recoloured, re-patterned or replaced
    (its cell stays), never removed. Raises ``NoRoomError`` when fewer than ``n`` fit (a
    small scene whose objects are all edited and whose free cells are all taken)."""
    if not 1 <= n <= 5:
        raise ValueError(f"n must be in 1..5, got {n!r}")
    edits: list[Edit] = []
    changed: set[str] = set()  # cells some edit changes
    anchors: set[str] = set()
    while len(edits) < n:
        kind = rng.choice(KINDS)
        if kind == "add":
            options = [
                (a, rel)
                for a in scene.objects
                if not _removed(edits, a.id)
                for rel in RELATIONS
                if (cell := neighbour(a.id, rel)) is not None
                and scene.get(cell) is None
                and cell not in changed
            ]
            if not options:
                _check_room(scene, edits, changed, n)
                continue
            anchor, relation = rng.choice(options)
            edit = Edit(
                kind="add",
                ref=rng.choice(referring_expressions(scene, anchor)),
                target=anchor.id,
                relation=relation,
                category=rng.choice([c for c in CATEGORIES if c != scene.category]),
                colour=rng.choice(list(PALETTE)),
                pattern=rng.choice(PATTERNS),
            )
        else:
            options = [
                o
                for o in scene.objects
                if o.id not in changed and not (kind == "remove" and o.id in anchors)
            ]
            if not options:
                _check_room(scene, edits, changed, n)
                continue
            obj = rng.choice(options)
            ref = rng.choice(referring_expressions(scene, obj))
            new: dict[str, str] = {}
            if kind == "replace":
                new["category"] = rng.choice(
                    [c for c in CATEGORIES if c not in (obj.category, scene.category)]
                )
            elif kind == "recolour":
                new["colour"] = rng.choice([c for c in PALETTE if c != obj.colour])
            elif kind == "material":
                new["pattern"] = rng.choice([p for p in PATTERNS if p != obj.pattern])
            edit = Edit(kind=kind, ref=ref, target=obj.id, **new)
        edits.append(edit)
        changed.add(edit.cell)
        if edit.kind == "add":
            anchors.add(edit.target)
    return edits


def _check_room(scene: Scene, edits: list[Edit], changed: set[str], n: int) -> None:
    """Raise ``NoRoomError`` when no kind of edit has an option left (draws nothing from the
    random stream, so every scene with room samples exactly as before)."""
    free_object = any(o.id not in changed for o in scene.objects)
    free_cell = any(
        (cell := neighbour(a.id, rel)) is not None
        and scene.get(cell) is None
        and cell not in changed
        for a in scene.objects
        if not _removed(edits, a.id)
        for rel in RELATIONS
    )
    if not (free_object or free_cell):
        raise NoRoomError(f"only {len(edits)} of {n} edits fit in this scene")


def _removed(edits: list[Edit], obj_id: str) -> bool:
    return any(e.kind == "remove" and e.target == obj_id for e in edits)


# -- corrections ------------------------------------------------------------------------------
def corrective_edit(original: Scene, current: Scene, goal: Scene, pending: set[str]) -> Edit | None:
    """An edit that undoes a wrong change in ``current``, or None when there is none (or none
    that can be phrased). A cell differs wrongly from ``goal`` unless it is in ``pending``
    (cells the instruction's edits change) and still untouched. One attribute at a time:
    the planner asks again after each step."""
    cells = sorted({o.id for o in current.objects} | {o.id for o in goal.objects})
    for cell in cells:
        cur, want, orig = current.get(cell), goal.get(cell), original.get(cell)
        look = cur.look if cur else None
        if look == (want.look if want else None):
            continue
        if cell in pending and look == (orig.look if orig else None):
            continue  # not done yet, not wrong
        if want is None:  # something is there that should not be
            ref = _ref_for(original, cell, cur.category)  # type: ignore[union-attr]
            if ref is not None:
                return Edit(kind="remove", ref=ref, target=resolve(original, ref))
            continue
        if cur is None:  # something is missing: put it back beside a neighbour still there
            edit = _add_back(original, current, want)
            if edit is not None:
                return edit
            continue
        ref = _ref_for(original, cell, cur.category)
        if ref is None:
            continue
        target = resolve(original, ref)
        if cur.category != want.category:
            return Edit(kind="replace", ref=ref, target=target, category=want.category)
        if cur.colour != want.colour:
            return Edit(kind="recolour", ref=ref, target=target, colour=want.colour)
        return Edit(kind="material", ref=ref, target=target, pattern=want.pattern)
    return None


def _ref_for(original: Scene, cell: str, category: str) -> str | None:
    obj = original.get(cell)
    if obj is not None:
        refs = referring_expressions(original, obj)
        return refs[0] if refs else None
    return relational_ref(original, cell, category)


def _add_back(original: Scene, current: Scene, want: Obj) -> Edit | None:
    for relation, (dr, dc) in _OFFSET.items():
        r, c = want.row - dr, want.col - dc
        anchor = original.at(r, c) if 0 <= r < ROWS and 0 <= c < COLS else None
        if anchor is not None and current.get(anchor.id) is not None:
            refs = referring_expressions(original, anchor)
            if refs:
                return Edit(
                    kind="add",
                    ref=refs[0],
                    target=anchor.id,
                    relation=relation,
                    category=want.category,
                    colour=want.colour,
                    pattern=want.pattern,
                )
    return None


def other_targets(original: Scene, scene: Scene, edit: Edit) -> list[Obj]:
    """Objects the edit could wrongly land on (what a model confuses), nearest to the right
    one first: other instances of the row for an instance target; for add, other anchors with
    a free cell on the same side."""
    r0, c0 = cell_coords(edit.target)
    if edit.kind == "add":
        pool = [
            o
            for o in original.objects
            if o.id != edit.target
            and scene.get(o.id)
            and (cell := neighbour(o.id, edit.relation)) is not None  # type: ignore[arg-type]
            and cell != edit.cell
            and scene.get(cell) is None
        ]
    else:
        target = original.get(edit.target)
        row = target is not None and target.role == "instance"
        pool = [
            o
            for o in scene.objects
            if o.id != edit.target and (not row or (original.get(o.id) or o).role == "instance")
        ]
    return sorted(pool, key=lambda o: (abs(o.col - c0) + abs(o.row - r0), o.col, o.row))
