"""The four tool contracts the graph drives: Planner, Editor, Grounder, Critic.

Backends implement these protocols on PIL images (RGB, 8-bit) so that a diffusers pipeline or
a VLM plugs in directly; ``tools.lc`` wraps any of them as a langchain-core tool that takes
``ImageRef``s and resolves them through the artifact store.

Coordinates: every ``Box`` is pixel XYXY in the frame of the image it was computed on,
``x2``/``y2`` exclusive. Masks are HxW bool arrays. Scores are on EditScore's 0..10 scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "ProgressFn",
    "Box",
    "HistoryItem",
    "PlannerDecision",
    "Planner",
    "Editor",
    "EditOutput",
    "Grounding",
    "Grounder",
    "Critique",
    "Critic",
]

#: ``progress(done, total)``: called by long-running tools, e.g. once per diffusion step.
ProgressFn = Callable[[int, int], None]


class Box(BaseModel):
    """A pixel-space box, XYXY, in the frame of the image it belongs to (x2, y2 exclusive)."""

    model_config = ConfigDict(frozen=True)

    x1: int = Field(description="left edge, pixels")
    y1: int = Field(description="top edge, pixels")
    x2: int = Field(description="right edge (exclusive), pixels")
    y2: int = Field(description="bottom edge (exclusive), pixels")

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x2 <= self.x1 or self.y2 <= self.y1:
            raise ValueError(f"box must have x1 < x2 and y1 < y2, got {self.as_tuple()!r}")
        return self

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> int:
        return (self.x2 - self.x1) * (self.y2 - self.y1)


# -- planner ----------------------------------------------------------------------------------
class HistoryItem(BaseModel):
    """One earlier step as the planner sees it: the edit tried and what became of it."""

    instruction: str | None = Field(description="the atomic edit tried; None for a planner error")
    outcome: Literal["accepted", "rejected", "error"]
    reason: str | None = Field(default=None, description="why it was rejected or failed")


class PlannerDecision(BaseModel):
    """What the planner chose: the next atomic edit, or stop. ``raw`` is the model's text."""

    raw: str = Field(description="the planner's output exactly as produced")
    stop: bool = Field(description="True when the planner says the instruction is complete")
    instruction: str | None = Field(default=None, description="the next atomic edit; None on stop")

    @model_validator(mode="after")
    def _consistent(self) -> PlannerDecision:
        if self.stop == (self.instruction is not None):
            raise ValueError(
                "a decision is either stop=True without instruction, or an instruction"
            )
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError("a planner instruction must not be empty")
        return self


@runtime_checkable
class Planner(Protocol):
    """Chooses the next atomic edit from (original, latest accepted, full instruction, history).

    Raises ``PlannerOutputError`` when its model's text cannot be parsed (recoverable).
    """

    def next_action(
        self,
        original: Image.Image,
        current: Image.Image,
        instruction: str,
        history: Sequence[HistoryItem],
    ) -> PlannerDecision: ...


# -- editor -----------------------------------------------------------------------------------
@dataclass
class EditOutput:
    """An editor's result with JSON trace information (e.g. the regions MIRAGE edited), which
    the agent copies into the step record's ``info``."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Editor(Protocol):
    """An instruction-guided editor. Same argument names across backends, like diffusers.

    Returns an RGB image of the input's size (or an ``EditOutput`` holding one) unless a
    backend documents otherwise. ``seed`` makes the output reproducible; ``progress`` is
    called once per denoising step.
    """

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        *,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: ProgressFn | None = None,
    ) -> Image.Image | EditOutput: ...


# -- grounder ---------------------------------------------------------------------------------
class Grounding(BaseModel):
    """Boxes for one referring expression; masks (HxW bool) when a refiner such as SAM2 ran."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    expression: str
    boxes: list[Box] = Field(description="pixel XYXY boxes in the input image's frame")
    masks: list[Any] | None = Field(default=None, description="one HxW bool numpy mask per box")
    raw: str | None = Field(default=None, description="the model's text, for the trace")


@runtime_checkable
class Grounder(Protocol):
    """Finds the region a referring expression names. Raises ``GroundingError`` if none."""

    def ground(self, image: Image.Image, expression: str) -> Grounding: ...


# -- critic -----------------------------------------------------------------------------------
class Critique(BaseModel):
    """EditScore-style scores on a 0..10 scale (``tools/vlm/critic.py``).

    SC = min(prompt_following, consistency), PQ = min(naturalness, artifacts),
    overall = sqrt(SC * PQ). ``valid`` is False when the model's output could not be parsed;
    then every score is None: a failed parse never becomes a made-up number.
    """

    prompt_following: float | None = Field(default=None, ge=0, le=10)
    consistency: float | None = Field(default=None, ge=0, le=10)
    naturalness: float | None = Field(default=None, ge=0, le=10)
    artifacts: float | None = Field(default=None, ge=0, le=10)
    reasoning: str = ""
    valid: bool = True

    @model_validator(mode="after")
    def _complete(self) -> Critique:
        subs = (self.prompt_following, self.consistency, self.naturalness, self.artifacts)
        if self.valid and any(s is None for s in subs):
            raise ValueError("a valid critique needs all four sub-scores")
        return self

    @classmethod
    def invalid(cls, reasoning: str) -> Critique:
        return cls(valid=False, reasoning=reasoning)

    @property
    def semantic_consistency(self) -> float | None:
        if not self.valid:
            return None
        return min(self.prompt_following, self.consistency)  # type: ignore[type-var]

    @property
    def perceptual_quality(self) -> float | None:
        if not self.valid:
            return None
        return min(self.naturalness, self.artifacts)  # type: ignore[type-var]

    @property
    def overall(self) -> float | None:
        if not self.valid:
            return None
        return math.sqrt(self.semantic_consistency * self.perceptual_quality)  # type: ignore[operator]

    def summary(self) -> dict[str, float | bool | None]:
        """The scores as a flat JSON dict, derived ones included (for state and traces)."""
        return {
            "valid": self.valid,
            "prompt_following": self.prompt_following,
            "consistency": self.consistency,
            "naturalness": self.naturalness,
            "artifacts": self.artifacts,
            "semantic_consistency": self.semantic_consistency,
            "perceptual_quality": self.perceptual_quality,
            "overall": self.overall,
        }


@runtime_checkable
class Critic(Protocol):
    """Scores an edit. ``mask`` (HxW bool) restricts the judgement to a region when given."""

    def critique(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> Critique: ...
