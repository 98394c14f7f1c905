"""Graph state: JSON-only TypedDicts. Pixels never enter state; images are ``ImageRef``s.

``InputState`` is what a caller supplies, ``OutputState`` what a caller gets back, and
``EditState`` adds the private working fields. Fields whose updates accumulate name their
reducer; ``perceive`` resets them with ``Overwrite`` so a thread can be reused for a new run.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from tools.artifacts import ImageRef

__all__ = [
    "StopReason",
    "StepRecord",
    "Pending",
    "Candidate",
    "InputState",
    "OutputState",
    "EditState",
]

StopReason = Literal[
    "planner_stop", "budget_exhausted", "no_progress", "critic_satisfied", "error", "user_stop"
]


class StepRecord(TypedDict):
    """One entry of the trace. Written by plan (kind 'stop'/'plan_error') or verify/act."""

    kind: Literal["edit", "stop", "plan_error", "tool_error"]
    #: 1-based planner step this entry belongs to (retries share it).
    step: int
    #: 0-based try of this step's edit (0 = first try).
    attempt: int
    #: the planner's output: raw text and the parsed action, or None for a retry; with
    #: approval on, also the reviewer's answer ({"action": "approve" | "replace", ...}).
    planner: dict[str, Any] | None
    #: the tool that ran and its arguments (seed included); None when none ran.
    tool: str | None
    args: dict[str, Any]
    #: the image the tool edited (the last accepted one) and what it produced.
    input: ImageRef | None
    output: ImageRef | None
    #: critic scores: {"step": ..., "progress": ...}, each a ``Critique.summary()`` or None.
    scores: dict[str, Any]
    accepted: bool
    #: extra trace information from the tool, e.g. the regions a MIRAGE edit used.
    info: dict[str, Any]
    #: why the entry was rejected, or what happened.
    reason: str
    #: seconds spent in plan / act / verify for this entry.
    timings: dict[str, float]


class InputState(TypedDict):
    #: the image to edit: path, file:// URI, data: URL, or ImageRef.
    image: str | ImageRef
    #: the full (possibly compositional) instruction.
    instruction: str
    #: optional region the edits are confined to: a mask image (path, URI or ImageRef; pixels
    #: above mid-grey are inside) of the image's size ...
    mask: NotRequired[str | ImageRef | None]
    #: ... or pixel XYXY boxes (x2, y2 exclusive); give one or neither.
    boxes: NotRequired[list[list[int]] | None]


class OutputState(TypedDict):
    #: the edited image: the last accepted one (the stored input when nothing was accepted).
    result: ImageRef
    #: the trace, in order; appended to by plan, act and verify.
    steps: Annotated[list[StepRecord], operator.add]
    stop_reason: StopReason
    #: scores of the result against the full instruction (last accepted step), or {}.
    scores: dict[str, Any]


class Pending(TypedDict):
    """The atomic edit in flight: written by plan, its ``attempt`` raised by verify on a retry."""

    #: 1-based planner step.
    step: int
    #: 0-based try of this step's edit.
    attempt: int
    #: the atomic instruction the editor gets.
    instruction: str
    #: the planner's output: {"raw": text, "action": {"stop", "instruction"}}; the first
    #: step of ``one_shot_first`` has ``"raw": None`` and ``"one_shot_first": True``.
    planner: dict[str, Any]
    #: seconds plan took to produce it.
    plan_s: float


class Candidate(TypedDict):
    """act's output awaiting verification (written by act, cleared by verify)."""

    #: the edited image in the artifact store.
    image: ImageRef
    #: the editor's label and the arguments it ran with (seed included).
    tool: str
    args: dict[str, Any]
    #: extra trace information from the tool (e.g. MIRAGE regions).
    info: dict[str, Any]
    #: seconds act took.
    act_s: float


class _Working(TypedDict, total=False):
    #: the input as stored in the artifact store (written by perceive).
    source: ImageRef
    #: the user's region as a stored mask (True = may change) and its boxes (pixel XYXY), or
    #: None for the whole image (perceive).
    region: ImageRef | None
    region_boxes: list[list[int]] | None
    #: the last accepted image; rollback means leaving it as it is (written by verify).
    current: ImageRef
    #: what the planner sees of earlier steps: accepted/rejected/error items (plan, verify).
    history: Annotated[list[dict[str, Any]], operator.add]
    #: the atomic edit in flight (plan; verify raises its attempt on a retry).
    pending: Pending | None
    #: act's output awaiting verification (act).
    candidate: Candidate | None
    #: planner steps issued so far (plan).
    step_count: int
    #: model calls made so far, all tools (every node that calls one).
    tool_calls: int
    #: seconds spent inside nodes; sums across resumes, unlike wall time (every node).
    elapsed_s: Annotated[float, operator.add]
    #: where the last node routes next: "plan" | "approve" | "act" | "verify" | "end".
    next: str


class EditState(InputState, OutputState, _Working):
    """The whole state: input, output and working fields."""
