"""Instructions: phrasings of atomic edits, connectives, and the parser back to edits.

Every edit type has at least five phrasings, and compositional instructions join 1-5 of them
with varied connectives and in shuffled order, so a system has to read the language rather
than match one template. ``parse`` reads back only this generator's own phrasings (it is
what the oracle tools use); it finds each atomic phrasing wherever it sits in the text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from agent.microworld.edits import REF_PATTERN, REL_WORDS, Edit, EditError, resolve
from agent.microworld.scene import CATEGORIES, PALETTE, PATTERNS, Scene

__all__ = ["PHRASINGS", "CONNECTIVES", "Span", "phrase", "join", "parse", "parse_spans"]

#: Atomic phrasings per edit type. Fields: {ref} the referring expression, {new} "a red
#: striped star", {rel} "above" / "to the left of" ..., {cat} a category, {colour} a colour,
#: {adj} a pattern adjective ("striped"), {noun} a pattern noun phrase ("stripes").
PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": (
        "add {new} {rel} {ref}",
        "put {new} {rel} {ref}",
        "place {new} {rel} {ref}",
        "draw {new} {rel} {ref}",
        "insert {new} {rel} {ref}",
        "there should be {new} {rel} {ref}",
    ),
    "remove": (
        "remove {ref}",
        "delete {ref}",
        "erase {ref}",
        "get rid of {ref}",
        "take away {ref}",
        "make {ref} disappear",
    ),
    "replace": (
        "replace {ref} with a {cat}",
        "turn {ref} into a {cat}",
        "change {ref} into a {cat}",
        "swap {ref} for a {cat}",
        "make {ref} a {cat} instead",
        "transform {ref} into a {cat}",
    ),
    "recolour": (
        "make {ref} {colour}",
        "colour {ref} {colour}",
        "paint {ref} {colour}",
        "change the colour of {ref} to {colour}",
        "recolour {ref} to {colour}",
        "turn {ref} {colour}",
    ),
    "material": (
        "make {ref} {adj}",
        "give {ref} {noun}",
        "change the pattern of {ref} to {noun}",
        "cover {ref} in {noun}",
        "switch {ref} to a {adj} texture",
        "re-texture {ref} with {noun}",
    ),
}
PATTERN_NOUNS = {
    "solid": "a plain fill",
    "striped": "stripes",
    "dotted": "polka dots",
    "checkered": "a checkerboard pattern",
}

#: How 2+ atomic phrasings (lowercase, no end punctuation) become one instruction.
CONNECTIVES: tuple[str, ...] = (
    "list_and",
    "then",
    "first_finally",
    "semicolons",
    "sentences",
    "please",
    "and_then",
    "after_that",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def phrase(edit: Edit, variant: int = 0) -> str:
    """The atomic instruction for ``edit`` in phrasing ``variant`` (taken modulo the number of
    phrasings of its type), lowercase, no end punctuation."""
    templates = PHRASINGS[edit.kind]
    new = ""
    if edit.kind == "add":
        new = f"{_article(edit.colour)} {edit.colour} {edit.pattern} {edit.category}"  # type: ignore[arg-type]
    return templates[variant % len(templates)].format(
        ref=edit.ref,
        new=new,
        rel=REL_WORDS.get(edit.relation or "", ""),
        cat=edit.category,
        colour=edit.colour,
        adj=edit.pattern,
        noun=PATTERN_NOUNS.get(edit.pattern or "", ""),
    )


def join(parts: list[str], rng: random.Random) -> str:
    """One instruction from atomic phrasings, with a random connective style."""
    if not parts:
        raise ValueError("join needs at least one atomic phrasing")
    if len(parts) == 1:
        return _cap(parts[0]) + "."
    style = rng.choice(CONNECTIVES)
    head, last = parts[:-1], parts[-1]
    if style == "list_and":
        text = ", ".join(head) + " and " + last
    elif style == "then":
        text = ", then ".join(parts)
    elif style == "first_finally":
        text = "first " + ", then ".join(head) + ", and finally " + last
    elif style == "semicolons":
        text = "; ".join(parts)
    elif style == "sentences":
        return " ".join(
            _cap(("also, " if i == len(parts) - 1 and i > 1 else "") + p) + "."
            for i, p in enumerate(parts)
        )
    elif style == "please":
        text = "please " + ", ".join(head) + (", and " if len(parts) > 2 else " and ") + last
    elif style == "and_then":
        text = " and then ".join(parts)
    else:  # after_that
        text = ". after that, ".join([", ".join(head), last])
        return ". ".join(_cap(s) for s in text.split(". ")) + "."
    return _cap(text) + "."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- parsing ----------------------------------------------------------------------------------
_FIELDS = {
    "ref": rf"(?P<ref>{REF_PATTERN})",
    "new": rf"an? (?P<colour>{'|'.join(PALETTE)}) (?P<pattern>{'|'.join(PATTERNS)}) "
    rf"(?P<category>{'|'.join(CATEGORIES)})",
    "rel": rf"(?P<rel>{'|'.join(REL_WORDS.values())})",
    "cat": rf"(?P<category>{'|'.join(CATEGORIES)})",
    "colour": rf"(?P<colour>{'|'.join(PALETTE)})",
    "adj": rf"(?P<pattern>{'|'.join(PATTERNS)})",
    "noun": rf"(?P<noun>{'|'.join(re.escape(n) for n in PATTERN_NOUNS.values())})",
}
_NOUN_TO_PATTERN = {v: k for k, v in PATTERN_NOUNS.items()}
_REL_TO_RELATION = {v: k for k, v in REL_WORDS.items()}


@lru_cache(maxsize=1)
def _compiled() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for kind, templates in PHRASINGS.items():
        for template in templates:
            pieces = re.split(r"(\{\w+\})", template)
            body = "".join(_FIELDS[p[1:-1]] if p.startswith("{") else re.escape(p) for p in pieces)
            out.append((kind, re.compile(rf"\b{body}\b")))
    return out


@dataclass(frozen=True)
class Span:
    """One atomic edit found in an instruction: the edit and its words as written."""

    edit: Edit
    text: str
    start: int
    end: int


def parse_spans(text: str, original: Scene) -> list[Span]:
    """Every atomic phrasing in ``text``, in reading order, with references resolved on the
    ``original`` scene. Where matches overlap the longer one wins. Raises ``EditError`` when
    a phrasing names no single object, or when there is no phrasing at all."""
    low = text.lower()  # ASCII: offsets into `low` are offsets into `text`
    found: list[tuple[int, int, str, re.Match[str]]] = []
    for kind, pattern in _compiled():
        for m in pattern.finditer(low):
            found.append((m.start(), m.end(), kind, m))
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    spans: list[Span] = []
    end = -1
    for start, stop, kind, m in found:
        if start < end:
            continue
        spans.append(
            Span(edit=_edit(kind, m, original), text=text[start:stop], start=start, end=stop)
        )
        end = stop
    if not spans:
        raise EditError(f"no edit found in {text!r}")
    return spans


def parse(text: str, original: Scene) -> list[Edit]:
    """The edits of an instruction (see ``parse_spans``)."""
    return [s.edit for s in parse_spans(text, original)]


def _edit(kind: str, m: re.Match[str], original: Scene) -> Edit:
    g = m.groupdict()
    ref = g["ref"]
    fields: dict[str, str | None] = {}
    if kind == "add":
        fields = {
            "relation": _REL_TO_RELATION[g["rel"]],
            "category": g["category"],
            "colour": g["colour"],
            "pattern": g["pattern"],
        }
    elif kind == "replace":
        fields = {"category": g["category"]}
    elif kind == "recolour":
        fields = {"colour": g["colour"]}
    elif kind == "material":
        fields = {"pattern": g.get("pattern") or _NOUN_TO_PATTERN[g["noun"]]}
    return Edit(kind=kind, ref=ref, target=resolve(original, ref), **fields)  # type: ignore[arg-type]
