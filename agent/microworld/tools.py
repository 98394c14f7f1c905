"""Oracle and noisy tools driven by the micro-world's scene model (``tools.contracts``).

They measure the agent loop, not models: the oracle editor renders the exact edit, the
noisy editor makes a model's typical mistakes on purpose (wrong instance, edit bleeding onto
a neighbour, no change) with set probabilities, the critic judges from ground-truth pixels
(``NoisyCritic``: and errs at a set rate, deterministically per input).

All of them share a ``World``: the cases in play, every scene an oracle tool has rendered
(keyed by the sha256 of the image's pixels), and the **structured edits behind every text**
the world has issued: a case's full instruction and atomic phrasings, and each phrasing the
oracle planner writes. The oracle tools do not read language: they look a text up there
(``World.edits_for``) and act on its edits, so they are an upper bound for the loop, not a
language test. Only ``HeuristicPlanner`` (and learned components) read words. The tools are
stateless apart from the world (which is locked), so one set serves parallel runs.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from agent.microworld.edits import (
    Edit,
    EditError,
    apply_edit,
    apply_edits,
    corrective_edit,
    other_targets,
    resolve,
)
from agent.microworld.grammar import describe
from agent.microworld.language import phrase
from agent.microworld.render import object_mask, render
from agent.microworld.scene import Scene, cell_box
from agent.microworld.scoring import Score, Thresholds, _chmax, score_edits
from agent.microworld.truth import Case, target_box
from tools.contracts import Box, Critique, Grounding, HistoryItem, PlannerDecision, ProgressFn
from tools.errors import FatalToolError, GroundingError, RecoverableToolError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "World",
    "OracleEditor",
    "NoisyEditor",
    "ReadingEditor",
    "OracleCritic",
    "NoisyCritic",
    "OraclePlanner",
    "HeuristicPlanner",
    "OracleGrounder",
    "critique_from_score",
    "text_key",
]


def pixel_key(image: Image.Image) -> str:
    """sha256 of an image's RGB pixels and size (not of any file encoding)."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}|".encode() + rgb.tobytes()).hexdigest()


def text_key(text: str) -> str:
    """A text's words, lowercase, without punctuation, list markers or numbering: how the
    world matches a text it issued ("- Remove the star." and "remove the star" are one)."""
    words = re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower())
    return " ".join(words)


class World:
    """The cases in play, the scene behind every image the oracle tools have rendered, and
    the edits behind every text the world issued for a case.

    ``snap=True`` lets the oracle tools work beside a learned editor, whose images the world
    never rendered: an unknown image is matched to the nearest state its case can reach (any
    subset of the case's edits, the case chosen by the nearest source image) and accepted when
    at most the model-tolerant share of pixels differs (``Thresholds``), as an autoencoder's
    round trip does; a wrong or bleeding edit is further away and stays unknown. Two cases
    with one scene (one seed in both language splits) cannot be told apart this way."""

    def __init__(self, cases: Iterable[Case] = (), *, snap: bool = False) -> None:
        self._lock = threading.Lock()
        self._cases: dict[str, Case] = {}
        self._states: dict[str, tuple[str, Scene]] = {}
        self._texts: dict[tuple[str, str], tuple[Edit, ...]] = {}
        self._sources: dict[str, np.ndarray] = {}  # case id -> its source pixels (snap)
        self.snap = snap
        for case in cases:
            self.add(case)

    def add(self, case: Case) -> Image.Image:
        """Register a case (its instruction and atomic phrasings too); returns its source."""
        with self._lock:
            self._cases[case.id] = case
        self.say(case.id, case.instruction, case.edits)
        for text, edit in zip(case.atomic, case.edits):
            self.say(case.id, text, (edit,))
        return self.image(case.id, case.scene)

    def say(self, case_id: str, text: str, edits: Sequence[Edit]) -> str:
        """Register ``text`` as the words for ``edits`` in case ``case_id``; returns it. A text
        already registered keeps its first meaning."""
        with self._lock:
            self._texts.setdefault((case_id, text_key(text)), tuple(edits))
        return text

    def edits_for(self, case_id: str, text: str) -> tuple[Edit, ...] | None:
        """The edits the world issued ``text`` for, in case ``case_id``; None for a text it
        never issued (a planner's own words)."""
        with self._lock:
            return self._texts.get((case_id, text_key(text)))

    def case(self, case_id: str) -> Case:
        with self._lock:
            return self._cases[case_id]

    def image(self, case_id: str, scene: Scene) -> Image.Image:
        """Render ``scene`` (a state of case ``case_id``) and remember it."""
        image = render(scene)
        with self._lock:
            self._states.setdefault(pixel_key(image), (case_id, scene))
        return image

    def lookup(self, image: Image.Image) -> tuple[Case, Scene]:
        """The case and scene behind ``image``. Raises ``FatalToolError`` for an image no
        oracle tool rendered (the oracle tools only know the micro-world), unless ``snap``
        matches it to a state (see the class)."""
        key = pixel_key(image)
        with self._lock:
            hit = self._states.get(key)
        if hit is None and self.snap:
            hit = self._snap(image)
            if hit is not None:
                with self._lock:
                    self._states.setdefault(key, hit)
        if hit is None:
            raise FatalToolError(
                f"this {image.width}x{image.height} image is not a micro-world image the "
                f"World knows (oracle tools only work on images they rendered"
                f"{'; no reachable state is near it' if self.snap else ''})",
                tool="World",
            )
        with self._lock:
            return self._cases[hit[0]], hit[1]

    def _snap(self, image: Image.Image) -> tuple[str, Scene] | None:
        import itertools

        import numpy as np

        limit = Thresholds().max_changed_fraction_tolerant
        tol = Thresholds().tol
        pixels = np.asarray(image.convert("RGB"), np.int16)

        def distance(other: np.ndarray) -> float:
            if other.shape != pixels.shape:
                return math.inf
            return float((_chmax(pixels - other) > tol).mean())

        with self._lock:
            cases = list(self._cases.values())
            for case in cases:
                if case.id not in self._sources:
                    self._sources[case.id] = np.asarray(render(case.scene), np.int16)
            sources = dict(self._sources)
        if not cases:
            return None
        case = min(cases, key=lambda c: distance(sources[c.id]))
        best: tuple[float, Scene] | None = None
        for k in range(len(case.edits) + 1):
            for subset in itertools.combinations(case.edits, k):
                try:
                    scene = apply_edits(case.scene, list(subset))
                except EditError:
                    continue
                d = distance(np.asarray(render(scene), np.int16))
                if best is None or d < best[0]:
                    best = (d, scene)
        if best is None or best[0] > limit:
            return None
        return case.id, best[1]


# -- editors ----------------------------------------------------------------------------------
class OracleEditor:
    """Applies the edits the world issued the instruction for, exactly (the full instruction
    gets all its parts). A part that cannot apply (its object is gone, its cell is taken) is
    skipped, as a model would leave it undone. Raises ``RecoverableToolError`` for a text the
    world never issued for the image's case (it reads no words)."""

    name = "oracle"

    def __init__(self, world: World) -> None:
        self.world = world

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: ProgressFn | None = None,
    ) -> Image.Image:
        case, scene = self.world.lookup(image)
        edits = self.world.edits_for(case.id, instruction)
        if edits is None:
            raise RecoverableToolError(
                f"{instruction!r} is not an instruction the world issued for "
                f"case {case.id!r} (oracle tools read no words)",
                tool=self.name,
            )
        rng = random.Random(f"{seed}|{instruction}|{pixel_key(image)}")
        for edit in edits:
            scene = self._apply(case, scene, edit, rng)
        if progress is not None:
            progress(1, 1)
        return self.world.image(case.id, scene)

    def _apply(self, case: Case, scene: Scene, edit: Edit, rng: random.Random) -> Scene:
        return _try(scene, edit)


def _try(scene: Scene, edit: Edit) -> Scene:
    try:
        return apply_edit(scene, edit)
    except EditError:
        return scene


class ReadingEditor:
    """Executes an instruction's words exactly: reads them with ``agent.microworld.reader`` on
    the scene behind the image and renders the result. Unlike ``OracleEditor`` it reads any
    words (a planner's own), so it measures what an instruction says, with no model error.
    It knows the images it was given scenes for (``add``) and the images it rendered; words
    it cannot read, or an edit that cannot apply, leave the image as it is (a no-op, as an
    editor that does not understand). Raises ``FatalToolError`` for an image it does not know.
    """

    name = "reading"

    def __init__(self) -> None:
        self._scenes: dict[str, Scene] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def add(self, image: Image.Image, scene: Scene) -> None:
        """Remember that ``image`` shows ``scene``."""
        with self._lock:
            self._scenes.setdefault(pixel_key(image), scene)

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: ProgressFn | None = None,
    ) -> Image.Image:
        from agent.microworld.reader import read_edit

        with self._lock:
            scene = self._scenes.get(pixel_key(image))
            self.calls += 1
        if scene is None:
            raise FatalToolError(
                f"this {image.width}x{image.height} image is not one the reading editor was "
                f"given a scene for (add) or rendered",
                tool=self.name,
            )
        edit = read_edit(instruction, scene)
        after = scene if edit is None else _try(scene, edit)
        out = render(after)
        self.add(out, after)
        if progress is not None:
            progress(1, 1)
        return out


class NoisyEditor(OracleEditor):
    """The oracle editor with a model's mistakes, drawn per atomic edit from a RNG seeded by
    (``seed``, instruction, input pixels): so a retry with a new seed differs and a run is
    reproducible. With probability ``p_noop`` the edit is not made, ``p_wrong`` it is made on
    another object (another instance of the row when the target is one; for add, beside
    another anchor), ``p_bleed`` it is made on the target AND its nearest neighbour."""

    name = "noisy"

    def __init__(
        self, world: World, *, p_wrong: float = 0.15, p_bleed: float = 0.15, p_noop: float = 0.1
    ) -> None:
        super().__init__(world)
        for label, p in (("p_wrong", p_wrong), ("p_bleed", p_bleed), ("p_noop", p_noop)):
            if not 0 <= p <= 1:
                raise ValueError(f"{label} must be in [0, 1], got {p!r}")
        if p_wrong + p_bleed + p_noop > 1:
            raise ValueError(
                f"p_wrong + p_bleed + p_noop must be <= 1, got {p_wrong + p_bleed + p_noop!r}"
            )
        self.p_wrong, self.p_bleed, self.p_noop = p_wrong, p_bleed, p_noop

    def _apply(self, case: Case, scene: Scene, edit: Edit, rng: random.Random) -> Scene:
        u = rng.random()
        if u < self.p_noop:
            return scene
        if u < self.p_noop + self.p_wrong + self.p_bleed:
            others = other_targets(case.scene, scene, edit)
            if not others:
                return _try(scene, edit)
            if u < self.p_noop + self.p_wrong:
                return _try(scene, edit.model_copy(update={"target": rng.choice(others).id}))
            return _try(_try(scene, edit), edit.model_copy(update={"target": others[0].id}))
        return _try(scene, edit)


# -- critic -----------------------------------------------------------------------------------
def critique_from_score(score: Score, *, tolerant: bool = False) -> Critique:
    """EditScore-style 0..10 fields from a pixel score: prompt following = 10 x the fraction
    of edits that pass; consistency = 10 x the unchanged fraction outside the targets, capped
    at 3 when the result is not consistent (``tolerant``: under the model-tolerant rule, which
    lets a learned editor's autoencoder round trip through). Naturalness and artifacts are 10
    (renders are clean). So a step with any failed edit or any wrong change scores Overall < 6
    and is rejected at the default ``min_step_score``."""
    pf = 10.0 * score.edits_passed
    cons = 10.0 * (1.0 - score.changed_fraction)
    if not (score.consistent_tolerant if tolerant else score.consistent):
        cons = min(cons, 3.0)
    failed = [f"{e.kind} #{e.index + 1} (pf {e.pf:.2f})" for e in score.edits if not e.passed]
    why = (
        f"{sum(e.passed for e in score.edits)}/{len(score.edits)} edits done"
        + (f"; not done: {', '.join(failed)}" if failed else "")
        + f"; {score.changed_fraction:.2%} of the rest changed, PSNR {score.psnr:.1f} dB"
    )
    return Critique(
        prompt_following=round(pf, 3),
        consistency=round(cons, 3),
        naturalness=10.0,
        artifacts=10.0,
        reasoning=why,
    )


class OracleCritic:
    """Scores (source, edited, instruction) from ground truth: the expected image is the
    source's scene with the instruction's edits (looked up in the world) applied, scored with
    the pixel scorer. It rejects wrong-target edits (their target is unchanged) and bleeding
    ones (a change outside the target). ``mask`` is ignored. An image or a text the world does
    not know gives ``Critique.invalid``, never a made-up score."""

    def __init__(
        self, world: World, *, thresholds: Thresholds = Thresholds(), tolerant: bool = False
    ) -> None:
        self.world = world
        self.thresholds = thresholds
        self.tolerant = tolerant  # judge consistency by the model-tolerant rule

    def critique(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> Critique:
        try:
            case, scene = self.world.lookup(source)
        except FatalToolError as exc:
            return Critique.invalid(str(exc))
        edits = self.world.edits_for(case.id, instruction)
        if edits is None:
            return Critique.invalid(
                f"{instruction!r} is not an instruction the world issued for case {case.id!r}"
            )
        try:
            expected = apply_edits(scene, edits)
        except EditError as exc:  # e.g. its object is already gone: the step cannot be right
            return Critique(
                prompt_following=0.0,
                consistency=10.0,
                naturalness=10.0,
                artifacts=10.0,
                reasoning=f"the edit cannot apply here: {exc}",
            )
        score = score_edits(
            render(scene),
            edited,
            render(expected),
            [target_box(scene, e) for e in edits],
            kinds=[e.kind for e in edits],
            thresholds=self.thresholds,
        )
        return critique_from_score(score, tolerant=self.tolerant)


class NoisyCritic:
    """The oracle critic that errs: with probability ``epsilon`` its verdict on an input is
    flipped (a step it would accept scores 3/10, one it would reject 9/10). Whether it errs is
    a function of (``seed``, source pixels, edited pixels, instruction), as a fixed-seed model
    is: the same input always gets the same answer, so retrying a wrong verdict does not help.
    ``threshold`` is the Overall score that splits accept from reject (the agent's
    ``min_step_score``)."""

    def __init__(
        self,
        world: World,
        *,
        epsilon: float = 0.1,
        seed: int = 0,
        threshold: float = 6.0,
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.oracle = OracleCritic(world, thresholds=thresholds)
        self.epsilon, self.seed, self.threshold = epsilon, seed, threshold

    def errs(self, source: Image.Image, edited: Image.Image, instruction: str) -> bool:
        """Whether this critic gets the verdict on this input wrong."""
        key = f"{self.seed}|{pixel_key(source)}|{pixel_key(edited)}|{text_key(instruction)}"
        u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
        return u < self.epsilon

    def critique(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> Critique:
        truth = self.oracle.critique(source, edited, instruction, mask=mask)
        if not truth.valid or not self.errs(source, edited, instruction):
            return truth
        score = 3.0 if truth.overall >= self.threshold else 9.0
        return Critique(
            prompt_following=score,
            consistency=score,
            naturalness=10.0,
            artifacts=10.0,
            reasoning=f"(noisy critic, wrong verdict) {truth.reasoning}",
        )


# -- planner ----------------------------------------------------------------------------------
class OraclePlanner:
    """Issues the case's edits from the scene truth, then ``<stop>``; reads no words.

    Each call compares the current image's scene with the goal (the original with every edit
    of the case applied). If a cell holds a wrong change (an edit on the wrong object, a
    bleed, an edit done wrong) it first issues a corrective edit toward the goal (recolour /
    re-pattern / replace back, remove what should not be there, add back what was removed);
    otherwise the first edit, in the instruction's order, whose cell is still untouched. On the
    original image that edit is in the instruction's own words; on a later image it is phrased
    afresh against that image (its reference names the object as it is seen now), in the
    case's language split. Every text it writes is registered in the world. A wrong change
    that cannot be phrased (no neighbour to anchor it) is left alone. The history is not read:
    the scene says what is done.
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def next_action(
        self,
        original: Image.Image,
        current: Image.Image,
        instruction: str,
        history: Sequence[HistoryItem],
    ) -> PlannerDecision:
        case, _ = self.world.lookup(original)
        _, scene = self.world.lookup(current)
        edits = self.world.edits_for(case.id, instruction)
        if edits is None:
            raise FatalToolError(
                f"the oracle planner only plans texts the world issued; "
                f"{instruction!r} is not one for case {case.id!r}",
                tool="OraclePlanner",
            )
        goal = apply_edits(case.scene, list(edits))
        fix = corrective_edit(case.scene, scene, goal, {e.cell for e in edits})
        if fix is not None:
            return _decision(self._words(case, scene, fix))
        for edit in edits:
            now, before = scene.get(edit.cell), case.scene.get(edit.cell)
            if (now.look if now else None) == (before.look if before else None):
                return _decision(self._words(case, scene, edit))
        return PlannerDecision(raw="<stop>", stop=True)

    def _words(self, case: Case, scene: Scene, edit: Edit) -> str:
        if scene == case.scene and edit in case.edits:
            return case.atomic[case.edits.index(edit)]
        rng = random.Random(
            f"oracle-planner|{case.id}|{edit.model_dump_json()}|{scene.model_dump_json()}"
        )
        phrased = describe(scene, edit, rng, case.language)
        text = phrased.text if phrased is not None else phrase(edit)
        return self.world.say(case.id, text, (edit,))


def _decision(text: str) -> PlannerDecision:
    return PlannerDecision(raw=f"NEXT_EDITING_INSTRUCTION: {text}", stop=False, instruction=text)


#: Where a heuristic reader splits an instruction into atomic parts.
_SPLIT = re.compile(
    r"\s*(?:\n|;|\.\s+|,?\s+and then\s+|,\s*then\s+|,\s*and finally\s+"
    r"|,\s*and\s+|\s+and\s+|,\s*)\s*",
    re.IGNORECASE,
)
_LEAD = re.compile(
    r"^(?:-|\d+[.)]|step \d+:|first,?|then|finally|also,?|after that,?|"
    r"before that,?|please|additionally,?|once that is done,?)\s+",
    re.IGNORECASE,
)


class HeuristicPlanner:
    """A planner that only reads words: it splits the instruction at list punctuation and
    connectives ("," ";" "and" "then" new lines ...), strips list markers and openers, and
    issues part k after k accepted steps, then ``<stop>``. No images, no world: the baseline a
    learned planner must beat (it fails wherever a referring expression holds "and" or a
    structure reorders the edits)."""

    def next_action(
        self,
        original: Image.Image,
        current: Image.Image,
        instruction: str,
        history: Sequence[HistoryItem],
    ) -> PlannerDecision:
        parts = split_instruction(instruction)
        done = sum(1 for h in history if h.outcome == "accepted")
        if done >= len(parts):
            return PlannerDecision(raw="<stop>", stop=True)
        return _decision(parts[done])


def split_instruction(instruction: str) -> list[str]:
    """The heuristic planner's atomic parts of ``instruction``."""
    parts = []
    for piece in _SPLIT.split(instruction.strip().rstrip(".?!")):
        piece = piece.strip(" .?!")
        while (m := _LEAD.match(piece)) is not None:
            piece = piece[m.end() :]
        if len(piece.split()) >= 2:
            parts.append(piece)
    return parts


# -- grounder ---------------------------------------------------------------------------------
class OracleGrounder:
    """Boxes (pixel XYXY, the object's cell) and masks (HxW bool, the object's pixels) of a
    referring expression, resolved on the case's original scene and looked up in the image's
    scene. Raises ``GroundingError`` when the expression names nothing there."""

    def __init__(self, world: World) -> None:
        self.world = world

    def ground(self, image: Image.Image, expression: str) -> Grounding:
        case, scene = self.world.lookup(image)
        try:
            cell = resolve(case.scene, expression)
        except EditError as exc:
            raise GroundingError(str(exc), tool="OracleGrounder") from None
        obj = scene.get(cell)
        if obj is None:
            raise GroundingError(f"{expression!r} is not in this image", tool="OracleGrounder")
        x1, y1, x2, y2 = cell_box(scene.size, obj.row, obj.col)
        return Grounding(
            expression=expression,
            boxes=[Box(x1=x1, y1=y1, x2=x2, y2=y2)],
            masks=[object_mask(scene.size, obj)],
            raw=cell,
        )
