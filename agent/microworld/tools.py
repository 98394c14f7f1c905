"""Oracle and noisy tools driven by the micro-world's scene model (``tools.contracts``).

They measure the agent loop, not models: the oracle editor renders the exact edit, the
noisy editor makes a model's typical mistakes on purpose (wrong instance, edit bleeding onto
a neighbour, no change) with set probabilities, the critic judges from ground-truth pixels.

All of them share a ``World``: the cases in play and every scene an oracle tool has rendered,
keyed by the sha256 of the image's pixels. A tool handed an image finds the case and the
scene behind it there; references in instructions are resolved on the case's ORIGINAL scene.
The tools are stateless apart from the world (which is locked), so one set serves parallel
runs.
"""

from __future__ import annotations

import hashlib
import random
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
from agent.microworld.language import parse, parse_spans, phrase
from agent.microworld.render import object_mask, render
from agent.microworld.scene import Scene, cell_box
from agent.microworld.scoring import Score, Thresholds, score_edits
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
    "OracleCritic",
    "OraclePlanner",
    "OracleGrounder",
    "critique_from_score",
]


def pixel_key(image: Image.Image) -> str:
    """sha256 of an image's RGB pixels and size (not of any file encoding)."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}|".encode() + rgb.tobytes()).hexdigest()


class World:
    """The cases in play and the scene behind every image the oracle tools have rendered."""

    def __init__(self, cases: Iterable[Case] = ()) -> None:
        self._lock = threading.Lock()
        self._cases: dict[str, Case] = {}
        self._states: dict[str, tuple[str, Scene]] = {}
        for case in cases:
            self.add(case)

    def add(self, case: Case) -> Image.Image:
        """Register a case; returns its source image."""
        with self._lock:
            self._cases[case.id] = case
        return self.image(case.id, case.scene)

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
        oracle tool rendered (the oracle tools only know the micro-world)."""
        with self._lock:
            hit = self._states.get(pixel_key(image))
            if hit is None:
                raise FatalToolError(
                    f"this {image.width}x{image.height} image is not a micro-world image the "
                    f"World knows (oracle tools only work on images they rendered)",
                    tool="World",
                )
            return self._cases[hit[0]], hit[1]


# -- editors ----------------------------------------------------------------------------------
class OracleEditor:
    """Applies every atomic edit it finds in the instruction exactly (a compositional
    instruction gets all its parts). A part that cannot apply (its object is gone, its cell
    is taken) is skipped, as a model would leave it undone. Raises ``RecoverableToolError``
    when the instruction holds no edit it can read."""

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
        try:
            edits = parse(instruction, case.scene)
        except EditError as exc:
            raise RecoverableToolError(str(exc), tool=self.name) from None
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
def critique_from_score(score: Score) -> Critique:
    """EditScore-style 0..10 fields from a pixel score: prompt following = 10 x the fraction
    of edits that pass; consistency = 10 x the unchanged fraction outside the targets, capped
    at 3 when the result is not consistent. Naturalness and artifacts are 10 (renders are
    clean). So a step with any failed edit or any wrong change scores Overall < 6 and is
    rejected at the default ``min_step_score``."""
    pf = 10.0 * score.edits_passed
    cons = 10.0 * (1.0 - score.changed_fraction)
    if not score.consistent:
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
    source's scene with the instruction's edits applied, scored with the pixel scorer. It
    rejects wrong-target edits (their target is unchanged) and bleeding ones (a change outside
    the target). ``mask`` is ignored: the targets come from the instruction. An image or an
    instruction it cannot read gives ``Critique.invalid``, never a made-up score."""

    def __init__(self, world: World, *, thresholds: Thresholds = Thresholds()) -> None:
        self.world = world
        self.thresholds = thresholds

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
        try:
            edits = parse(instruction, case.scene)
        except EditError as exc:
            return Critique.invalid(f"cannot read the instruction: {exc}")
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
        return critique_from_score(score)


# -- planner ----------------------------------------------------------------------------------
class OraclePlanner:
    """Issues the instruction's atomic edits from the scene truth, then ``<stop>``.

    Each call compares the current image's scene with the goal (the original with every edit
    of the instruction applied). If a cell holds a wrong change (an edit on the wrong object,
    a bleed, an edit done wrong) it first issues a corrective edit toward the goal (recolour /
    re-pattern / replace back, remove what should not be there, add back what was removed);
    otherwise the first edit, in the instruction's order, whose cell is still untouched, in
    the instruction's own words. A wrong change that cannot be phrased (no neighbour to
    anchor it) is left alone. The history is not read: the scene says what is done.
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
        try:
            spans = parse_spans(instruction, case.scene)
            goal = apply_edits(case.scene, [s.edit for s in spans])
        except EditError as exc:
            raise FatalToolError(
                f"the oracle planner cannot read {instruction!r}: {exc}", tool="OraclePlanner"
            ) from None
        fix = corrective_edit(case.scene, scene, goal, {s.edit.cell for s in spans})
        if fix is not None:
            return _decision(phrase(fix))
        for span in spans:
            cell = span.edit.cell
            now, before = scene.get(cell), case.scene.get(cell)
            if (now.look if now else None) == (before.look if before else None):
                return _decision(span.text)
        return PlannerDecision(raw="<stop>", stop=True)


def _decision(text: str) -> PlannerDecision:
    return PlannerDecision(raw=f"NEXT_EDITING_INSTRUCTION: {text}", stop=False, instruction=text)


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
