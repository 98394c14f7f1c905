"""Training samples in the formats the project's real model classes consume, streamed and
sharded with a manifest.

- ``planner_samples``: MIRA planner chats. The user turn is ``tools.vlm.planner.planner_content``
  (the verbatim ``MIRA_PLANNER_TEMPLATE`` with the original and the current image), the
  assistant turn ``NEXT_EDITING_INSTRUCTION: <atomic edit>`` or ``<stop>``. Current images are
  every state the case's edits can reach (any subset done: all edit orders), the answer the
  first pending edit: the instruction's own clause while it still names that edit on the
  current image, else a fixed re-description (``wording="varied"``: phrased afresh at random
  each time); plus corrective samples after a
  realistic mistake (``wrong`` instance, ``bleed`` onto a neighbour, ``partial`` edit,
  ``noop``), answered with the edit that repairs it.
- ``grounder_samples``: the grounder's own prompt (``GROUNDING_PROMPTS``) on one image, answers
  in Qwen's convention ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`` normalised to 0..1000
  from the tight box, expressions of every kind (relational ones included), and "not found"
  negatives answered ``[]``.
- ``parse_samples``: MIRAGE parser chats: ``PARSE_PROMPT`` with the instruction, answered with
  the JSON list of ``{"ref": <verbatim span>, "edit": <edit without positional words>}``.
- ``critic_samples``: the two verbatim EditScore prompts (``sc_prompt`` with source and edited
  image, ``pq_prompt`` with the edited image) answered ``{"reasoning": ..., "score": [a, b]}``
  on 0..25, graded from the pixel scorer: prompt following from the edit's pf (partial edits
  score in between), over-editing from the changed fraction outside the targets, naturalness
  and artifacts from blur and smear damage (real editor failures; graded under quality only,
  so a damaged edit's SC answer is the clean result's); plus full-instruction
  samples at partial progress, and (``wrong_progress``) full-instruction samples with every
  edit made but one, made on another object of the kind it names. The reasoning first names
  the cells the instruction should change (those the expected result changes), then the grid
  cells whose pixels changed (``changed_cells``), then the verdict: what an answer must look
  at, said before the score.

Every sampler takes seeds (default: the first ``n`` train seeds) and a language split
(default train). ``export`` writes any of them, or the editor's ``exports.editor_records``, as
JSONL shards plus PNGs (masks as L-mode PNGs) and a ``manifest.json``.
Images in records are RGB PIL; chats hold them inline (``{"type": "image", "image": PIL}``),
as the classes build them.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.microworld.edits import (
    Edit,
    EditError,
    apply_edit,
    apply_edits,
    corrective_edit,
    other_targets,
)
from agent.microworld.grammar import (
    CATEGORY_WORDS,
    COLOUR_WORDS,
    LANGUAGES,
    PATTERN_ADJECTIVES,
    VERBS,
    Phrase,
    _pick,
    describe,
    referring,
)
from agent.microworld.render import object_box, render
from agent.microworld.scene import CATEGORIES, PALETTE, Scene
from agent.microworld.scoring import Score, Thresholds, score_edits
from agent.microworld.splits import seeds as split_seeds
from agent.microworld.truth import draw_case, object_truth, target_box
from tools.prompts import REASONING_LABELS

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "planner_samples",
    "grounder_samples",
    "parse_samples",
    "critic_samples",
    "export",
    "FORMATS",
    "SCORE_RANGE",
    "norm1000",
    "mistaken",
    "one_wrong",
    "CELL_LISTS",
    "CLAUSES",
    "VERDICT",
    "cells_said",
    "plan_clauses",
    "plan_reason",
]

SCORE_RANGE = 25
STOP = "<stop>"
Lang = Literal["train", "heldout"]


def _seeds(seeds: Iterable[int] | None, n: int) -> Iterable[int]:
    return split_seeds("train", n) if seeds is None else seeds


def _check(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")


def _image(image: Image.Image) -> dict[str, Any]:
    return {"type": "image", "image": image}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


# -- planner ----------------------------------------------------------------------------------
def _blend(a: Image.Image, b: Image.Image, mask: Any, amount: float = 0.5) -> Image.Image:
    """``a`` with ``b`` mixed in at ``amount`` inside the HxW bool ``mask``: a half-done edit."""
    import numpy as np
    from PIL import Image

    x, y = np.asarray(a, np.float32), np.asarray(b, np.float32)
    out = np.where(mask[..., None], (1 - amount) * x + amount * y, x)
    return Image.fromarray(np.rint(out).astype(np.uint8), "RGB")


def planner_samples(
    seeds: Iterable[int] | None = None,
    *,
    n: int = 1000,
    language: Lang = "train",
    n_edits: int | tuple[int, int] = (1, 4),
    size: int = 224,
    corrective: bool = True,
    wording: Literal["copy", "varied"] = "copy",
    reasoning: bool = False,
    clauses: bool = False,
) -> Iterator[dict[str, Any]]:
    """MIRA planner chats (see the module docstring). ``wording``: how an answer names the
    pending edit: "copy" (the instruction's own clause whenever it still names that edit on the
    current image, else one fixed re-description per case and edit: an answer the image and the
    instruction determine) or "varied" (a random template and referring expression each time,
    half the time on the original image the clause; the first planner runs learned neither the
    task nor the copy from these). Keys: ``id``, ``seed``, ``messages``
    (user + assistant), ``answer``, ``state`` (indices of the edits done), ``mistake``
    (None, "wrong", "bleed", "partial" or "noop"), ``instruction``, ``scene`` (the scene the
    current image shows, as JSON; a partial edit's is the scene before it) and ``goal`` (the
    scene after every edit, as JSON). ``answer`` is always MIRA's bare answer; ``reasoning``:
    the assistant turn puts ``plan_reason`` before it (kept under the key ``reasoning``);
    ``clauses``: ``plan_clauses`` instead (implies ``reasoning``)."""
    from agent.prompts import STOP_TOKEN
    from tools.vlm.planner import planner_content

    _check(language)
    for seed in _seeds(seeds, n):
        scene, edits, parts, instruction, _ = draw_case(
            seed, n_edits=n_edits, size=size, language=language
        )
        rng = random.Random(f"microworld-planner|{seed}|{language}")
        original = render(scene)
        goal = apply_edits(scene, edits)
        pending_cells = {e.cell for e in edits}
        reasoning = reasoning or clauses
        clause_cells = _clause_cells(scene, edits) if reasoning else []
        clause_texts = [part.text for part in parts]

        def todo_of(done: tuple[int, ...]) -> int:
            return min(i for i in range(len(edits)) if i not in done)

        def sample(
            sid: str,
            current: Image.Image,
            answer: str,
            done: tuple[int, ...],
            mistake: str | None,
            shown: Scene,
        ) -> dict[str, Any]:
            user = planner_content(original, current, instruction, _image)
            why = ""
            if clauses:
                # a clause is done when the current image shows its edit made: a bleeding
                # edit made its own (and one more object's), the other mistakes did not
                shown_done = (*done, todo_of(done)) if mistake == "bleed" else done
                changed = changed_cells(original, current)
                why = plan_clauses(clause_texts, clause_cells, changed, shown_done)
            elif reasoning:
                why = plan_reason(clause_cells, changed_cells(original, current))
            return {
                "id": f"mw-{seed}-{sid}",
                "seed": seed,
                "answer": answer,
                **({"reasoning": why} if reasoning else {}),
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": [_text(f"{why} {answer}".strip())]},
                ],
                "state": list(done),
                "mistake": mistake,
                "instruction": instruction,
                "scene": shown.model_dump(mode="json"),
                "goal": goal.model_dump(mode="json"),
            }

        for r in range(len(edits) + 1):
            for done in itertools.combinations(range(len(edits)), r):
                state = apply_edits(scene, [edits[i] for i in done])
                current = original if not done else render(state)
                todo = [i for i in range(len(edits)) if i not in done]
                tag = "s" + "".join(map(str, done))
                if not todo:
                    yield sample(f"{tag}-stop", current, STOP_TOKEN, done, None, state)
                    continue
                nxt = todo[0]  # the first pending edit in the instruction's order
                words = _words(wording, seed, scene, state, edits[nxt], parts[nxt], rng, language)
                yield sample(tag, current, f"NEXT_EDITING_INSTRUCTION: {words}", done, None, state)
                if not corrective:
                    continue
                mistake = rng.choice(("wrong", "bleed", "partial", "noop"))
                bad = mistaken(scene, state, edits[nxt], mistake, rng)
                if bad is None:
                    continue
                image, fix_scene = bad
                if mistake in ("partial", "noop"):
                    fix_words = _words(
                        wording, seed, scene, state, edits[nxt], parts[nxt], rng, language
                    )
                else:
                    fix = corrective_edit(scene, fix_scene, goal, pending_cells)
                    if fix is None:
                        continue
                    how = rng if wording == "varied" else _fixed_rng(seed, fix, language)
                    phrased = describe(fix_scene, fix, how, language)
                    if phrased is None:
                        continue
                    fix_words = phrased.text
                yield sample(
                    f"{tag}-{mistake}",
                    image,
                    f"NEXT_EDITING_INSTRUCTION: {fix_words}",
                    done,
                    mistake,
                    fix_scene,
                )


def _clause_cells(scene: Scene, edits: Sequence[Edit]) -> list[list[str]]:
    """The cells each edit changes, made in the instruction's order from ``scene``."""
    out, state = [], scene
    for edit in edits:
        after = apply_edit(state, edit)
        out.append(changed_cells(render(state), render(after)))
        state = after
    return out


def plan_reason(clause_cells: Sequence[Sequence[str]], changed: Sequence[str]) -> str:
    """The planner's reasoning before its MIRA answer, the critic's two cell lists
    (``CELL_LISTS``) in the planner's terms: the cells each clause changes, in the
    instruction's order and separated by " | ", then the cells that differ between the
    original and the current image. On a clean state the first clause whose cells did not
    change is the next edit; a cell that changed outside every clause is a mistake to repair.
    The lists cannot tell every mistake: a half-way edit mostly changes its clause's cells as the
    finished one does, and a wrong instance can sit in a cell another clause changes; there
    only the pixels tell that the answer repeats or repairs that clause."""
    wanted = " | ".join(", ".join(cells) or "none" for cells in clause_cells) or "none"
    return f"{CELL_LISTS[0]}: {wanted}. {CELL_LISTS[1]}: {', '.join(changed) or 'none'}."


def plan_clauses(
    clauses: Sequence[str],
    clause_cells: Sequence[Sequence[str]],
    changed: Sequence[str],
    done: Iterable[int],
) -> str:
    """The planner's reasoning with ``--planner-clauses``: the cells that differ between the
    original and the current image, then every clause of the instruction in its order, with the
    cells it changes and whether the current image shows its edit made ("done") or not ("to
    do"). The next edit is then the first clause marked "to do", copied from a few tokens back
    rather than found by counting clauses in the instruction, also after a half-way or missing
    edit (a half-way edit's clause is "to do" with its cells changed); a changed cell outside
    every clause (a wrong instance, or the other object of a bleeding edit, whose own clause is
    done) is a mistake to repair first."""
    finished = set(done)
    items = " | ".join(
        f"{text} ({', '.join(cells) or 'none'}): {'done' if i in finished else 'to do'}"
        for i, (text, cells) in enumerate(zip(clauses, clause_cells, strict=True))
    )
    return f"{CELL_LISTS[1]}: {', '.join(changed) or 'none'}. {CLAUSES}: {items}."


def _fixed_rng(seed: int, edit: Edit, language: str) -> random.Random:
    """The random stream of an answer's fixed wording: one per case, edit and language."""
    return random.Random(f"microworld-planner-words|{seed}|{edit.model_dump_json()}|{language}")


def _words(
    wording: str,
    seed: int,
    original: Scene,
    state: Scene,
    edit: Edit,
    part: Phrase,
    rng: random.Random,
    language: str,
) -> str:
    """An answer's words for ``edit`` on ``state`` (see ``planner_samples``' ``wording``)."""
    if wording == "varied":
        return _words_for(original, state, edit, part, rng, language)
    from agent.microworld.reader import read_edit

    read = read_edit(part.text, state)
    if read is not None and read.model_dump(exclude={"ref"}) == edit.model_dump(exclude={"ref"}):
        return part.text  # the instruction's own clause still names this edit here
    phrased = describe(state, edit, _fixed_rng(seed, edit, language), language)  # type: ignore[arg-type]
    return phrased.text if phrased is not None else part.text


def _words_for(
    original: Scene, state: Scene, edit: Edit, part: Phrase, rng: random.Random, language: str
) -> str:
    """The edit in varied wording, named on the image the editor will see (``state``)."""
    if state == original and rng.random() < 0.5:
        return part.text  # the instruction's own words
    phrased = describe(state, edit, rng, language)  # type: ignore[arg-type]
    return phrased.text if phrased is not None else part.text


def mistaken(
    original: Scene, state: Scene, edit: Edit, mode: str, rng: random.Random
) -> tuple[Image.Image, Scene] | None:
    """(image, scene) after ``edit`` made with ``mode``'s mistake on ``state``; the scene of a
    partial edit is the state before it (the object is not right yet). None when impossible."""
    if mode == "noop":
        return render(state), state
    if mode == "partial":
        after = apply_edit(state, edit)
        _, mask = object_truth(state, edit)
        return _blend(render(state), render(after), mask, rng.uniform(0.35, 0.6)), state
    others = other_targets(original, state, edit)
    if not others:
        return None
    try:
        if mode == "wrong":
            wrong = apply_edit(state, edit.model_copy(update={"target": rng.choice(others).id}))
        else:
            wrong = apply_edit(
                apply_edit(state, edit), edit.model_copy(update={"target": others[0].id})
            )
    except EditError:
        return None
    return render(wrong), wrong


def one_wrong(
    scene: Scene,
    edits: Sequence[Edit],
    odd: int,
    rng: random.Random,
    thresholds: Thresholds = Thresholds(),
) -> Image.Image | None:
    """The render of ``scene`` with every edit of ``edits`` made but ``edits[odd]``, which is
    made on another object (``other_targets``, tried in random order): the first such render
    where the pixel scorer passes every edit but that one and that differs from the render
    with it left out. None when no object gives one (a wrong object another edit changes
    would undo that edit too)."""
    rest = [e for j, e in enumerate(edits) if j != odd]
    state = apply_edits(scene, rest)
    source, final, missing = render(scene), render(apply_edits(scene, edits)), render(state)
    boxes = [target_box(scene, e) for e in edits]
    kinds = [e.kind for e in edits]
    candidates = other_targets(scene, state, edits[odd])
    rng.shuffle(candidates)
    for other in candidates:
        try:
            wrong = render(apply_edit(state, edits[odd].model_copy(update={"target": other.id})))
        except EditError:
            continue
        if wrong.tobytes() == missing.tobytes():
            continue
        passed = [
            e.passed
            for e in score_edits(
                source, wrong, final, boxes, kinds=kinds, thresholds=thresholds
            ).edits
        ]
        if passed == [j != odd for j in range(len(edits))]:
            return wrong
    return None


# -- grounder ---------------------------------------------------------------------------------
def norm1000(box: tuple[int, int, int, int], size: int) -> list[int]:
    """A pixel XYXY box (x2/y2 exclusive) on a ``size`` canvas in Qwen's 0..1000 frame,
    rounded outward (floor x1/y1, ceil x2/y2), so the grounder's ``to_source_box`` gives back
    a box that holds the original."""
    x1, y1, x2, y2 = box
    return [
        math.floor(x1 * 1000 / size),
        math.floor(y1 * 1000 / size),
        math.ceil(x2 * 1000 / size),
        math.ceil(y2 * 1000 / size),
    ]


def _negative(scene: Scene, rng: random.Random, language: str) -> str:
    """An expression that names nothing on ``scene``."""
    present = {o.category for o in scene.objects}
    options = []
    absent = [c for c in CATEGORIES if c not in present]
    if absent:
        cat = _pick(rng, CATEGORY_WORDS[rng.choice(absent)], language)
        options.append(f"the {cat}")
    cat_key = scene.category
    colours = {o.colour for o in scene.objects if o.category == cat_key}
    missing = [c for c in PALETTE if c not in colours]
    if missing:
        options.append(
            f"the {_pick(rng, COLOUR_WORDS[rng.choice(missing)], language)} "
            f"{_pick(rng, CATEGORY_WORDS[cat_key], language)}"
        )
    return rng.choice(options)


def grounder_samples(
    seeds: Iterable[int] | None = None,
    *,
    n: int = 1000,
    language: Lang = "train",
    size: int = 224,
    per_object: int = 2,
    negatives: int = 1,
    convention: Literal["qwen3"] = "qwen3",
) -> Iterator[dict[str, Any]]:
    """Grounder chats on each case's original image and the image after its first edit.
    Keys: ``id``, ``seed``, ``messages`` (user: image + the grounder's prompt; assistant: the
    JSON answer), ``answer``, ``expression``, ``ref_kind`` ("none" for a negative), ``box``
    (tight pixel XYXY, None for a negative)."""
    from tools.vlm.grounder import GROUNDING_PROMPTS

    _check(language)
    prompt = GROUNDING_PROMPTS[convention]
    for seed in _seeds(seeds, n):
        scene, edits, _, _, _ = draw_case(seed, n_edits=(1, 3), size=size, language=language)
        rng = random.Random(f"microworld-grounder|{seed}|{language}")
        for k, state in enumerate((scene, apply_edit(scene, edits[0]))):
            image = render(state)

            def chat(expression: str, answer: str) -> list[dict[str, Any]]:
                return [
                    {
                        "role": "user",
                        "content": [_image(image), _text(prompt.format(expression=expression))],
                    },
                    {"role": "assistant", "content": [_text(answer)]},
                ]

            for obj in state.objects:
                refs = referring(state, obj, rng, language)
                for kind in rng.sample(sorted(refs), min(per_object, len(refs))):
                    box = object_box(size, obj)
                    answer = json.dumps([{"bbox_2d": norm1000(box, size), "label": refs[kind]}])
                    yield {
                        "id": f"mw-{seed}-g{k}-{obj.id}-{kind}",
                        "seed": seed,
                        "messages": chat(refs[kind], answer),
                        "answer": answer,
                        "expression": refs[kind],
                        "ref_kind": kind,
                        "box": list(box),
                    }
            for j in range(negatives):
                expression = _negative(state, rng, language)
                yield {
                    "id": f"mw-{seed}-g{k}-none{j}",
                    "seed": seed,
                    "messages": chat(expression, "[]"),
                    "answer": "[]",
                    "expression": expression,
                    "ref_kind": "none",
                    "box": None,
                }


# -- MIRAGE parser ----------------------------------------------------------------------------
def _edit_words(edit: Edit, part: Phrase) -> str:
    """The edit without its positional words ("make it red"), a function of the instruction's
    text alone: a verb or pattern word that the part's template writes is copied, a slot it
    leaves out takes the slot's first train-language word ("the red ball has to go" -> "remove
    it", "decorate it with dots" -> "make it dotted"), never the word the grammar drew for the
    unused slot, which the text does not show."""
    w = part.words

    def slot(name: str, first: str) -> str:
        return w[name] if "{" + name + "}" in part.template else first

    verb = slot("v", VERBS[edit.kind][0][0]) if edit.kind in VERBS else ""
    if edit.kind == "remove":
        if verb.endswith(" out"):  # a phrasal verb takes its object inside: "take it out"
            return f"{verb[:-4]} it out"
        return f"{verb} it"
    if edit.kind == "replace":
        return f"{verb} it into {w['a_cat']}"
    if edit.kind == "recolour":
        return f"{verb} it {w['colour']}"
    if edit.kind == "material":
        return f"make it {slot('adj', PATTERN_ADJECTIVES[edit.pattern][0][0])}"  # type: ignore[index]
    return f"{verb} {w['new']} {w['rel']} it"


def parse_samples(
    seeds: Iterable[int] | None = None,
    *,
    n: int = 1000,
    language: Lang = "train",
    n_edits: int | tuple[int, int] = (1, 5),
    size: int = 224,
) -> Iterator[dict[str, Any]]:
    """MIRAGE parser chats: ``PARSE_PROMPT`` with the instruction (and the image), answered
    with ``[{"ref": ..., "edit": ...}]`` in the instruction's reading order; each ``ref`` is
    copied verbatim from the instruction. Keys: ``id``, ``seed``, ``messages``, ``answer``,
    ``pairs`` (the list), ``image``."""
    from tools.mirage.parse import PARSE_PROMPT

    _check(language)
    for seed in _seeds(seeds, n):
        scene, edits, parts, instruction, _ = draw_case(
            seed, n_edits=n_edits, size=size, language=language
        )
        low = instruction.lower()
        pairs = []
        for edit, part in zip(edits, parts):
            at = low.find(part.text)
            start = at + part.text.find(part.ref) if at >= 0 else low.find(part.ref)
            pairs.append(
                (
                    start,
                    {
                        "ref": instruction[start : start + len(part.ref)],
                        "edit": _edit_words(edit, part),
                    },
                )
            )
        pairs.sort(key=lambda p: p[0])
        answer = json.dumps([p for _, p in pairs])
        image = render(scene)
        yield {
            "id": f"mw-{seed}-parse",
            "seed": seed,
            "image": image,
            "answer": answer,
            "pairs": [p for _, p in pairs],
            "messages": [
                {
                    "role": "user",
                    "content": [_image(image), _text(PARSE_PROMPT.format(instruction=instruction))],
                },
                {"role": "assistant", "content": [_text(answer)]},
            ],
        }


# -- critic -----------------------------------------------------------------------------------
def _sc_grade(score: Score, thresholds: Thresholds) -> tuple[int, int]:
    """(prompt following, over-editing consistency) on 0..25 from a pixel score."""
    pf = round(SCORE_RANGE * score.pf)
    cons = round(
        SCORE_RANGE
        * (1 - min(1.0, score.changed_fraction / thresholds.max_changed_fraction_tolerant))
    )
    if not score.consistent:
        cons = min(cons, 12)  # any wrong object changed: below the agent's acceptance line
    return pf, cons


def changed_cells(
    source: Image.Image, edited: Image.Image, *, tol: int = Thresholds.tol, share: float = 0.02
) -> list[str]:
    """Scene cells (``r1c2``, row-major) where more than ``share`` of the pixels differ
    between the two images by more than ``tol`` in some channel."""
    import numpy as np

    from agent.microworld.scene import COLS, ROWS, cell_box

    a = np.asarray(source.convert("RGB"), np.int16)
    b = np.asarray(edited.convert("RGB"), np.int16)
    moved = np.abs(a - b).max(axis=-1) > tol
    out = []
    for r in range(ROWS):
        for c in range(COLS):
            x1, y1, x2, y2 = cell_box(source.width, r, c)
            if moved[y1:y2, x1:x2].mean() > share:
                out.append(f"r{r}c{c}")
    return out


#: the SC reasoning's two cell lists, in their order: the target, then what changed
CELL_LISTS = REASONING_LABELS[:2]
#: the label of the clause list of ``plan_clauses``
CLAUSES = REASONING_LABELS[2]
#: the pattern of the SC reasoning's verdict sentence (``_sc_reason`` writes no other)
VERDICT = r"The requested change is [^.]*\.|\d+ of the \d+ requested changes are done\."


def cells_said(reasoning: str | None, label: str = CELL_LISTS[1]) -> list[str] | None:
    """The cells a reasoning's ``label`` list names (``[]`` for "none"), sorted; None when the
    reasoning has no such list."""
    import re

    found = re.search(rf"{label}: ([^.]*)\.", reasoning or "")
    if found is None:
        return None
    return [] if found.group(1) == "none" else sorted(found.group(1).split(", "))


def _sc_reason(
    score: Score, thresholds: Thresholds, cells: Sequence[str], wanted: Sequence[str]
) -> str:
    """The SC reasoning, a chain of what a tiny critic can see: the cells the instruction
    should change (found in the source image, as the grounder finds an object), then the cells
    that changed between the two images (read as the language stage's ``compare_far`` reads
    them), then the verdict those two lists imply (all but a half-way edit follow from them).
    The target comes first: written after the changed cells, a trained model copied them into
    it (docs/micro_vlm.md, sixth session)."""
    n = len(score.edits)
    done = sum(e.passed for e in score.edits)
    if n == 1:
        pf = score.edits[0].pf
        what = (
            "The requested change is done."
            if pf >= thresholds.pf_pass
            else "The requested change is only partly done."
            if pf > 0.3
            else "The requested change is missing."
        )
    else:
        what = f"{done} of the {n} requested changes are done."
    rest = (
        "Nothing else in the image changed."
        if score.consistent
        else f"Other parts of the image changed too ({score.changed_fraction:.1%} of the rest)."
    )
    target = f"{CELL_LISTS[0]}: {', '.join(wanted) or 'none'}."
    seen = f"{CELL_LISTS[1]}: {', '.join(cells) or 'none'}."
    return f"{target} {seen} {what} {rest}"


def _artifact(clean: Image.Image, box: tuple[int, int, int, int], mode: str) -> Image.Image:
    """``clean`` with an editor's damage in ``box``: Gaussian blur or a horizontal smear."""
    from PIL import ImageChops, ImageFilter

    x1, y1, x2, y2 = box
    pad = 4
    region = (
        max(0, x1 - pad),
        max(0, y1 - pad),
        min(clean.width, x2 + pad),
        min(clean.height, y2 + pad),
    )
    patch = clean.crop(region)
    if mode == "blur":
        damaged = patch.filter(ImageFilter.GaussianBlur(2.5))
    else:
        damaged = patch
        for dx in (3, 6):
            damaged = ImageChops.blend(damaged, ImageChops.offset(patch, dx, 0), 0.4)
    out = clean.copy()
    out.paste(damaged, region[:2])
    return out


def _pq_grade(
    clean: Image.Image, image: Image.Image, box: tuple[int, int, int, int]
) -> tuple[int, int]:
    """(naturalness, artifacts) on 0..25 from the damage inside ``box`` (mean abs difference
    to the clean result)."""
    import numpy as np

    x1, y1, x2, y2 = box
    a = np.asarray(clean, np.float32)[y1:y2, x1:x2]
    b = np.asarray(image, np.float32)[y1:y2, x1:x2]
    damage = float(np.abs(a - b).mean()) if a.size else 0.0
    art = round(SCORE_RANGE * max(0.0, 1 - damage / 20))
    return round((SCORE_RANGE + art) / 2), art


def critic_samples(
    seeds: Iterable[int] | None = None,
    *,
    n: int = 1000,
    language: Lang = "train",
    n_edits: int | tuple[int, int] = (2, 4),
    size: int = 224,
    thresholds: Thresholds = Thresholds(),
    progress_only: bool = False,
    wrong_progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """EditScore critic samples (see the module docstring); ``progress_only``: only the
    full-instruction samples (no edit, some, every edit done), ids ending in ``p``;
    ``wrong_progress``: only one full-instruction sample per seed, every edit made but one
    (drawn at random), which is made on another object (``one_wrong``), id ending in
    ``fullw`` (none where no object gives one). The progress samples' middle
    subset is another random one than the full stream's, which draws per-edit
    variants first. Keys: ``id``, ``seed``, ``mode``
    (correct, wrong, bleed, noop, partial, blur, smear, or progress for the full
    instruction), ``sc`` and ``pq`` (each a chat: user with the images and the verbatim
    prompt, assistant with the JSON answer), ``sc_score`` and ``pq_score`` (the 0..25 pairs),
    ``success`` (the pixel scorer's strict verdict)."""
    from tools.vlm.editscore_prompts import pq_prompt, sc_prompt

    _check(language)

    def chats(
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        sc: tuple[int, int],
        pq: tuple[int, int],
        sc_why: str,
        pq_why: str,
    ) -> dict[str, Any]:
        sc_answer = json.dumps({"reasoning": sc_why, "score": list(sc)})
        pq_answer = json.dumps({"reasoning": pq_why, "score": list(pq)})
        return {
            "sc": [
                {
                    "role": "user",
                    "content": [
                        _image(source),
                        _image(edited),
                        _text(sc_prompt(instruction, score_range=SCORE_RANGE)),
                    ],
                },
                {"role": "assistant", "content": [_text(sc_answer)]},
            ],
            "pq": [
                {
                    "role": "user",
                    "content": [_image(edited), _text(pq_prompt(score_range=SCORE_RANGE))],
                },
                {"role": "assistant", "content": [_text(pq_answer)]},
            ],
            "sc_score": list(sc),
            "pq_score": list(pq),
        }

    for seed in _seeds(seeds, n):
        scene, edits, parts, instruction, _ = draw_case(
            seed, n_edits=n_edits, size=size, language=language
        )
        rng = random.Random(f"microworld-critic|{seed}|{language}")
        whole_only = progress_only or wrong_progress
        state = apply_edits(scene, edits) if whole_only else scene
        for i, edit in enumerate(() if whole_only else edits):
            phrased = describe(state, edit, rng, language) if i else parts[0]
            if phrased is None:
                state = apply_edit(state, edit)
                continue
            source = render(state)
            after = apply_edit(state, edit)
            expected = render(after)
            wanted = changed_cells(source, expected)
            box = target_box(state, edit)
            tight, mask = object_truth(state, edit)
            variants: dict[str, Image.Image] = {
                "correct": expected,
                "noop": source,
                "partial": _blend(source, expected, mask, rng.uniform(0.3, 0.6)),
            }
            for mode in ("wrong", "bleed"):
                bad = mistaken(scene, state, edit, mode, rng)
                if bad is not None:
                    variants[mode] = bad[0]
            damage = rng.choice(("blur", "smear"))
            variants[damage] = _artifact(expected, tight, damage)
            clean = score_edits(
                source, expected, expected, [box], kinds=[edit.kind], thresholds=thresholds
            )
            for mode, edited in variants.items():
                score = (
                    clean
                    if edited is expected
                    else score_edits(
                        source, edited, expected, [box], kinds=[edit.kind], thresholds=thresholds
                    )
                )
                # blur and smear are the editor's damage to an edit that was made: EditScore
                # grades them under perceptual quality, so the SC answer (instruction
                # following, over-editing) is the clean result's; else the verdict of a
                # blurred edit ("missing", by pixels) would contradict its two cell lists
                damaged = mode in ("blur", "smear")
                graded = clean if damaged else score
                pq = _pq_grade(expected, edited, tight) if damaged else (25, 25)
                pq_why = (
                    "The image looks clean and natural."
                    if pq == (25, 25)
                    else f"The edited object is {'blurred' if mode == 'blur' else 'smeared'}."
                )
                yield {
                    "id": f"mw-{seed}-c{i}-{mode}",
                    "seed": seed,
                    "mode": mode,
                    "success": score.success,
                    **chats(
                        source,
                        edited,
                        phrased.text,
                        _sc_grade(graded, thresholds),
                        pq,
                        _sc_reason(graded, thresholds, changed_cells(source, edited), wanted),
                        pq_why,
                    ),
                }
            state = after
        # the full instruction at partial progress (the agent's regression check)
        original, final = render(scene), render(state)
        boxes = [target_box(scene, e) for e in edits]
        if wrong_progress:
            made = one_wrong(scene, edits, rng.randrange(len(edits)), rng, thresholds)
            whole = [] if made is None else [("w", made)]
        else:
            whole = []
            for k in sorted({0, rng.randrange(1, len(edits) + 1), len(edits)}):
                subset = rng.sample(range(len(edits)), k)
                whole.append((str(k), render(apply_edits(scene, [edits[j] for j in subset]))))
        for k, edited in whole:
            score = score_edits(
                original, edited, final, boxes, kinds=[e.kind for e in edits], thresholds=thresholds
            )
            yield {
                "id": f"mw-{seed}-full{k}{'p' if progress_only and not wrong_progress else ''}",
                "seed": seed,
                "mode": "progress",
                "success": score.success,
                **chats(
                    original,
                    edited,
                    instruction,
                    _sc_grade(score, thresholds),
                    (25, 25),
                    _sc_reason(
                        score,
                        thresholds,
                        changed_cells(original, edited),
                        changed_cells(original, final),
                    ),
                    "The image looks clean and natural.",
                ),
            }


# -- writing ------------------------------------------------------------------------------------
def _editor(seeds: Iterable[int], **options: Any) -> Iterator[dict[str, Any]]:
    from agent.microworld.exports import editor_records

    return editor_records(seeds, **options)


FORMATS = {
    "editor": _editor,
    "planner": planner_samples,
    "grounder": grounder_samples,
    "parse": parse_samples,
    "critic": critic_samples,
}


def _jsonable(value: Any, save: Any, path: str) -> Any:
    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        return save(value, path)
    if isinstance(value, np.ndarray):
        return save(Image.fromarray(np.where(value, 255, 0).astype(np.uint8), "L"), path)
    if isinstance(value, dict):
        return {k: _jsonable(v, save, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, save, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def export(
    folder: str | Path,
    kind: str,
    *,
    n: int = 1000,
    offset: int = 0,
    seeds: Iterable[int] | None = None,
    shard_size: int = 1000,
    language: Lang = "train",
    **options: Any,
) -> dict[str, Any]:
    """Write ``kind``'s samples (``FORMATS``) for the seeds (default: train seeds ``offset ..
    offset+n-1``) to ``folder/kind/``: ``shard-00000.jsonl`` ... (``shard_size`` records each;
    images become PNGs under ``images/`` and their relative paths stand in the JSON), then
    ``manifest.json`` (kind, language, seeds, splits, shards, counts, options). Returns the
    manifest. Streamed: one record in memory at a time."""
    from agent.microworld.splits import split_of

    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {sorted(FORMATS)}, got {kind!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    seed_list = list(split_seeds("train", n, offset=offset) if seeds is None else seeds)
    root = Path(folder) / kind
    (root / "images").mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    handle = None
    count = 0
    counter = itertools.count()

    def save(image: Image.Image, path: str) -> str:
        rel = f"images/{next(counter):08d}.png"
        image.save(root / rel)
        return rel

    try:
        for record in FORMATS[kind](seed_list, language=language, **options):
            if count % shard_size == 0:
                if handle is not None:
                    handle.close()
                name = f"shard-{len(shards):05d}.jsonl"
                shards.append({"file": name, "records": 0})
                handle = open(root / name, "w")
            handle.write(json.dumps(_jsonable(record, save, record["id"])) + "\n")  # type: ignore[union-attr]
            shards[-1]["records"] += 1
            count += 1
    finally:
        if handle is not None:
            handle.close()
    manifest = {
        "kind": kind,
        "language": language,
        "records": count,
        "shards": shards,
        "seeds": {
            "count": len(seed_list),
            "first": seed_list[0] if seed_list else None,
            "last": seed_list[-1] if seed_list else None,
            "splits": sorted({split_of(s) for s in seed_list}),
        },
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
