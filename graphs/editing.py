"""The editing graph: perceive -> plan -> act -> verify -> (plan | act | END).

Every routing decision is a conditional edge with an explicit path map, so the drawn graph
shows all of them. Nodes keep pixels out of state: they read and write images through the
artifact store and pass ``ImageRef``s. Semantics: ``docs/architecture.md``.

Routes:
- plan  -> act (an edit) | approve (an edit, with ``approve_edits`` on) | plan (unparseable
  planner output, fed back) | END (stop, budget, no progress, fatal error)
- approve -> act (approved, or replaced by the reviewer's instruction) | END (stopped)
- act   -> verify (a candidate) | plan (recoverable tool error, fed back) | END (budget, fatal)
- verify-> plan (accepted, or retries used up: rejection fed back) | act (retry the same edit
  with a new seed / the next editor) | END (critic satisfied)
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Overwrite, interrupt

from graphs.context import EditContext, InputLimits
from graphs.state import Candidate, EditState, InputState, OutputState, Pending, StepRecord
from tools.artifacts import ArtifactStore
from tools.contracts import Critic, Critique, Editor, EditOutput, Grounder, HistoryItem, Planner
from tools.errors import FatalToolError, PlannerOutputError, RecoverableToolError
from tools.images import FIRST_FRAME_NOTE, check_instruction, load_image
from tools.user_region import paste_inside, region_boxes, region_mask

__all__ = ["Components", "build_graph", "GRAPH_NAME", "EditGraph", "parse_review"]

GRAPH_NAME = "mira_edit_agent"

#: The compiled editing graph: its state, context, input and output schemas.
EditGraph = CompiledStateGraph[EditState, EditContext, InputState, OutputState]


@dataclass(frozen=True)
class Components:
    """The live tools a graph drives. Shared by every run of the graph: keep them stateless
    or thread-safe."""

    planner: Planner
    editors: tuple[tuple[str, Editor], ...]
    critic: Critic
    store: ArtifactStore
    grounder: Grounder | None = None

    def __post_init__(self) -> None:
        if not self.editors:
            raise ValueError("at least one editor is needed (editors=())")


def _norm(instruction: str) -> str:
    """Comparison key of an atomic instruction: case, spacing and end punctuation ignored."""
    return re.sub(r"\s+", " ", instruction).strip().strip(".!;,").lower()


def _record(**fields: Any) -> StepRecord:
    base: dict[str, Any] = dict(
        kind="edit",
        step=0,
        attempt=0,
        planner=None,
        tool=None,
        args={},
        input=None,
        output=None,
        scores={},
        accepted=False,
        info={},
        reason="",
        timings={},
    )
    base.update(fields)
    return base  # type: ignore[return-value]


def _judge_step(critique: Critique, ctx: EditContext) -> tuple[bool, str]:
    overall = critique.overall  # None exactly when the critique is not valid
    if not critique.valid or overall is None:
        return False, f"no valid critic score: {critique.reasoning[:200]}"
    if overall < ctx.min_step_score:
        return False, f"step score {overall:.2f} below min_step_score={ctx.min_step_score}"
    return True, f"step score {overall:.2f}"


def _judge_progress(
    progress: Critique, previous: float | None, ctx: EditContext
) -> tuple[bool, str]:
    overall = progress.overall  # None exactly when the critique is not valid
    if not progress.valid or overall is None:
        return False, f"no valid critic score: {progress.reasoning[:200]}"
    if previous is not None and overall < previous - ctx.regression_tolerance:
        return False, (
            f"regression: full-instruction score {overall:.2f} < last "
            f"accepted {previous:.2f} - regression_tolerance"
        )
    return True, f"accepted; full-instruction score {overall:.2f}"


def _in_flight(state: EditState) -> Pending:
    """The pending edit; its absence is a bug of the graph's wiring, not of the caller."""
    pending = state.get("pending")
    if pending is None:
        raise RuntimeError("act and verify need a pending edit in state (plan writes it); got none")
    return pending


_REVIEW_FORMS = (
    '"approve", "stop", {"action": "approve"}, {"action": "stop"} or '
    '{"action": "replace", "instruction": "<the edit to run instead>"}'
)


def parse_review(answer: Any) -> tuple[str, str | None]:
    """The reviewer's answer to an approval interrupt as ``(action, instruction)``: action is
    "approve", "replace" (with the replacement instruction) or "stop". Raises ``ValueError``
    naming the answer when it is none of the forms in ``_REVIEW_FORMS``."""
    if isinstance(answer, str) and answer in ("approve", "stop"):
        return answer, None
    if isinstance(answer, Mapping):
        action = answer.get("action")
        if action in ("approve", "stop") and set(answer) == {"action"}:
            return action, None
        text = answer.get("instruction")
        if action == "replace" and isinstance(text, str) and text.strip():
            if set(answer) == {"action", "instruction"}:
                return "replace", text.strip()
    raise ValueError(f"resume value {answer!r} is not a review answer; use {_REVIEW_FORMS}")


def _critic_calls(context: EditContext) -> int:
    """Critic calls per verify: 1, or 2 with the full-instruction regression check."""
    return 2 if context.check_regression else 1


class _Nodes:
    """Node and routing functions bound to one config and one set of components."""

    def __init__(self, context: EditContext, limits: InputLimits, components: Components) -> None:
        self.defaults = context
        self.limits = limits
        self.c = components

    def _context(self, runtime: Runtime[EditContext]) -> EditContext:
        """This run's settings: the run's context, else the graph's defaults.

        LangGraph builds the context from a ``context=`` dict through the schema (unknown keys
        raise there). A graph embedded as a subgraph sees its parent's context: a plain dict is
        read as this graph's keys (and checked); a parent's own typed context is not ours, so
        the defaults apply.
        """
        ctx = runtime.context
        if isinstance(ctx, EditContext):
            return ctx
        if isinstance(ctx, Mapping):
            return self.defaults.updated(ctx)
        return self.defaults

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _budget_left(state: EditState, calls_needed: int, ctx: EditContext) -> str | None:
        """None if ``calls_needed`` more model calls fit the budgets, else the reason."""
        used = state.get("tool_calls", 0)
        if used + calls_needed > ctx.max_tool_calls:
            return f"tool-call budget spent ({used} of max_tool_calls={ctx.max_tool_calls})"
        spent = state.get("elapsed_s", 0.0)
        if ctx.time_budget_s is not None and spent >= ctx.time_budget_s:
            return f"time budget spent ({spent:.1f} s of time_budget_s={ctx.time_budget_s})"
        return None

    def _end(self, state: EditState, reason: str, **update: Any) -> dict[str, Any]:
        """Update that ends the run on the last accepted image."""
        return {
            "next": "end",
            "stop_reason": reason,
            "result": state["current"],
            "pending": None,
            "candidate": None,
            **update,
        }

    @staticmethod
    def _emit(event: dict[str, Any]) -> None:
        get_stream_writer()(event)

    def _history(self, state: EditState) -> list[HistoryItem]:
        return [HistoryItem.model_validate(h) for h in state.get("history", [])]

    # -- perceive -----------------------------------------------------------------------------
    def perceive(self, state: EditState) -> dict[str, Any]:
        """Validate the caller's input, store the image, reset the working fields."""
        t0 = time.perf_counter()
        instruction = check_instruction(
            state.get("instruction"), max_chars=self.limits.max_instruction_chars
        )
        if "image" not in state:
            raise ValueError("input is missing 'image'")
        image = load_image(
            state["image"],
            store=self.c.store,
            allowed_schemes=self.limits.allowed_uri_schemes,
            max_pixels=self.limits.max_input_pixels,
            max_bytes=self.limits.max_input_bytes,
            file_roots=self.limits.allowed_file_roots,
        )
        region = region_mask(
            mask=state.get("mask"),
            boxes=state.get("boxes"),
            size=image.size,
            store=self.c.store,
            allowed_schemes=self.limits.allowed_uri_schemes,
            max_pixels=self.limits.max_input_pixels,
            max_bytes=self.limits.max_input_bytes,
            file_roots=self.limits.allowed_file_roots,
        )
        region_ref, boxes = None, None
        if region is not None:
            region_ref = self.c.store.put_mask(region)
            given = state.get("boxes")
            boxes = (
                [list(b) for b in given]
                if given
                else [list(b.as_tuple()) for b in region_boxes(region)]
            )
        note = image.info.get(FIRST_FRAME_NOTE)
        source = self.c.store.put(image)
        event: dict[str, Any] = {"event": "run_start", "source": source, "instruction": instruction}
        if note:
            event["input_note"] = note
        self._emit(event)
        return {  # "image" becomes the stored ref: a data: URL must not ride in every checkpoint
            "image": source,
            "instruction": instruction,
            "source": source,
            "current": source,
            "result": source,
            "region": region_ref,
            "region_boxes": boxes,
            "steps": Overwrite([]),
            "history": Overwrite([]),
            "scores": {},
            "pending": None,
            "candidate": None,
            "step_count": 0,
            "tool_calls": 0,
            "elapsed_s": Overwrite(time.perf_counter() - t0),
            "next": "plan",
        }

    # -- plan ---------------------------------------------------------------------------------
    def plan(self, state: EditState, runtime: Runtime[EditContext]) -> dict[str, Any]:
        t0 = time.perf_counter()
        ctx = self._context(runtime)
        if (why := self._budget_left(state, 1, ctx)) is not None:
            return self._end(
                state,
                "budget_exhausted",
                elapsed_s=0.0,
                steps=[_record(kind="stop", step=state["step_count"], reason=why)],
            )
        step = state["step_count"] + 1
        if ctx.one_shot_first and step == 1 and not state.get("history"):
            return self._one_shot(state, ctx, time.perf_counter() - t0)
        store = self.c.store
        try:
            decision = self.c.planner.next_action(
                store.open(state["source"]),
                store.open(state["current"]),
                state["instruction"],
                self._history(state),
            )
        except PlannerOutputError as exc:
            dt = time.perf_counter() - t0
            reason = f"planner output could not be parsed: {exc}"
            in_a_row = 1  # this one and the plan errors right before it
            for earlier in reversed(state.get("steps", [])):
                if earlier.get("kind") != "plan_error":
                    break
                in_a_row += 1
            ends = in_a_row >= ctx.max_plan_errors
            if ends:
                reason += f" ({in_a_row} in a row; max_plan_errors={ctx.max_plan_errors})"
            record = _record(
                kind="plan_error",
                step=step,
                tool="planner",
                planner={"raw": exc.raw, "action": None},
                reason=reason,
                timings={"plan_s": dt},
            )
            if ends:
                return self._end(
                    state,
                    "error",
                    tool_calls=state["tool_calls"] + 1,
                    elapsed_s=dt,
                    steps=[record],
                )
            return {
                "next": "plan",
                "tool_calls": state["tool_calls"] + 1,
                "elapsed_s": dt,
                "history": [{"instruction": None, "outcome": "error", "reason": reason}],
                "steps": [record],
            }
        except FatalToolError as exc:
            return self._end(
                state,
                "error",
                tool_calls=state["tool_calls"] + 1,
                elapsed_s=time.perf_counter() - t0,
                steps=[
                    _record(
                        kind="plan_error",
                        step=step,
                        tool="planner",
                        reason=f"planner failed: {exc}",
                    )
                ],
            )
        dt = time.perf_counter() - t0
        planner_out = {
            "raw": decision.raw,
            "action": {"stop": decision.stop, "instruction": decision.instruction},
        }
        calls = state["tool_calls"] + 1
        self._emit(
            {
                "event": "plan",
                "step": step,
                "stop": decision.stop,
                "instruction": decision.instruction,
            }
        )

        def end(reason: str, why: str) -> dict[str, Any]:
            return self._end(
                state,
                reason,
                tool_calls=calls,
                elapsed_s=dt,
                steps=[
                    _record(
                        kind="stop",
                        step=step,
                        tool="planner",
                        planner=planner_out,
                        reason=why,
                        timings={"plan_s": dt},
                    )
                ],
            )

        instruction = decision.instruction  # None exactly on stop (PlannerDecision checks it)
        if instruction is None:
            return end("planner_stop", "the planner said the instruction is complete")
        key = _norm(instruction)
        history = state.get("history", [])
        if any(h["outcome"] == "accepted" and _norm(h["instruction"]) == key for h in history):
            return end("no_progress", f"the planner repeated an accepted edit: {instruction!r}")
        rejected = sum(
            1
            for h in history
            if h["outcome"] == "rejected"
            and h["instruction"] is not None
            and _norm(h["instruction"]) == key
        )
        if rejected > ctx.max_repeats_of_rejected:
            return end("no_progress", f"{instruction!r} was rejected {rejected} times")
        if state["step_count"] >= ctx.max_steps:
            return end("budget_exhausted", f"max_steps={ctx.max_steps} edits issued")
        pending = Pending(
            step=step, attempt=0, instruction=instruction, planner=planner_out, plan_s=dt
        )
        return {
            "next": "approve" if ctx.approve_edits else "act",
            "pending": pending,
            "step_count": step,
            "tool_calls": calls,
            "elapsed_s": dt,
        }

    def _one_shot(self, state: EditState, ctx: EditContext, dt: float) -> dict[str, Any]:
        """The first step of ``one_shot_first``: the whole instruction as one edit, with no
        planner call (no tool call is counted); its record's planner output says so. Asked
        only before any step: once it is accepted or its retries are rejected, the planner
        plans from its result."""
        instruction = state["instruction"]
        planner_out = {
            "raw": None,
            "action": {"stop": False, "instruction": instruction},
            "one_shot_first": True,
        }
        self._emit({"event": "plan", "step": 1, "stop": False, "instruction": instruction})
        pending = Pending(
            step=1, attempt=0, instruction=instruction, planner=planner_out, plan_s=dt
        )
        return {
            "next": "approve" if ctx.approve_edits else "act",
            "pending": pending,
            "step_count": 1,
            "elapsed_s": dt,
        }

    # -- approve ------------------------------------------------------------------------------
    def approve(self, state: EditState) -> dict[str, Any]:
        """Ask a person about the planned edit (``approve_edits``): LangGraph ``interrupt``
        with the edit, the current image and the history; the run pauses until it is resumed
        with ``Command(resume=answer)``. The node runs again from its start on resume, so
        nothing happens before the interrupt."""
        pending = _in_flight(state)
        answer = interrupt(
            {
                "kind": "approve_edit",
                "step": pending["step"],
                "edit": pending["instruction"],
                "instruction": state["instruction"],
                "current": state["current"],
                "source": state["source"],
                "history": state.get("history", []),
                "resume_with": _REVIEW_FORMS,
            }
        )
        action, replacement = parse_review(answer)
        review: dict[str, Any] = {"action": action}
        if action == "stop":
            return self._end(
                state,
                "user_stop",
                steps=[
                    _record(
                        kind="stop",
                        step=pending["step"],
                        planner={**pending["planner"], "reviewer": review},
                        reason=f"the reviewer stopped before {pending['instruction']!r}",
                    )
                ],
            )
        instruction = pending["instruction"]
        if replacement is not None:
            review.update(replaced=instruction, instruction=replacement)
            instruction = replacement
        self._emit({"event": "review", "step": pending["step"], **review})
        planner = {**pending["planner"], "reviewer": review}
        return {
            "next": "act",
            "pending": {**pending, "instruction": instruction, "planner": planner},
        }

    # -- act ----------------------------------------------------------------------------------
    def act(self, state: EditState, runtime: Runtime[EditContext]) -> dict[str, Any]:
        t0 = time.perf_counter()
        ctx = self._context(runtime)
        pending = _in_flight(state)
        step, attempt, instruction = pending["step"], pending["attempt"], pending["instruction"]
        if (why := self._budget_left(state, 1 + _critic_calls(ctx), ctx)) is not None:
            return self._end(
                state,
                "budget_exhausted",
                elapsed_s=0.0,
                steps=[_record(kind="stop", step=step, attempt=attempt, reason=why)],
            )
        name, editor = self.c.editors[attempt % len(self.c.editors)]
        args = {
            "instruction": instruction,
            "seed": ctx.step_seed(step, attempt),
            "num_inference_steps": ctx.num_inference_steps,
            "guidance_scale": ctx.guidance_scale,
        }
        writer = get_stream_writer()
        writer(
            {
                "event": "step_start",
                "step": step,
                "attempt": attempt,
                "tool": name,
                "instruction": instruction,
            }
        )

        def progress(done: int, total: int) -> None:
            writer(
                {
                    "event": "tool_progress",
                    "step": step,
                    "attempt": attempt,
                    "tool": name,
                    "done": done,
                    "total": total,
                }
            )

        source = state["current"]
        region = state.get("region")
        extra: dict[str, Any] = {}
        if region is not None and getattr(editor, "takes_regions", False):
            # A regional editor (MIRAGE) edits the user's boxes as its regions.
            from tools.contracts import Box
            from tools.mirage.regions import Region

            extra["regions"] = [
                Region(
                    instruction=instruction,
                    box=Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]),
                    expression="the user's region",
                )
                for b in state.get("region_boxes") or []
            ]
        try:
            before = self.c.store.open(source)
            edited = editor.edit(before, progress=progress, **args, **extra)
        except RecoverableToolError as exc:
            dt = time.perf_counter() - t0
            reason = f"{name} failed: {exc}"
            writer(
                {
                    "event": "step_end",
                    "step": step,
                    "attempt": attempt,
                    "accepted": False,
                    "reason": reason,
                }
            )
            return {
                "next": "plan",
                "pending": None,
                "tool_calls": state["tool_calls"] + 1,
                "elapsed_s": dt,
                "history": [{"instruction": instruction, "outcome": "error", "reason": reason}],
                "steps": [
                    _record(
                        kind="tool_error",
                        step=step,
                        attempt=attempt,
                        planner=pending["planner"] if attempt == 0 else None,
                        tool=name,
                        args=args,
                        input=source,
                        reason=reason,
                        timings={"act_s": dt},
                    )
                ],
            }
        except FatalToolError as exc:
            return self._end(
                state,
                "error",
                tool_calls=state["tool_calls"] + 1,
                elapsed_s=time.perf_counter() - t0,
                steps=[
                    _record(
                        kind="tool_error",
                        step=step,
                        attempt=attempt,
                        tool=name,
                        args=args,
                        input=source,
                        reason=f"{name} failed: {exc}",
                    )
                ],
            )
        info: dict[str, Any] = {}
        if isinstance(edited, EditOutput):
            edited, info = edited.image, edited.info
        if region is not None:
            # Whole-image editors change everything: keep their pixels inside the region only,
            # so outside it the result equals the input exactly (MIRAGE's too, after snapping).
            edited = paste_inside(self.c.store.open_mask(region), edited, before)
            info = {**info, "user_region": {"mask": region, "boxes": state.get("region_boxes")}}
        candidate = Candidate(
            image=self.c.store.put(edited),
            tool=name,
            args=args,
            info=info,
            act_s=time.perf_counter() - t0,
        )
        return {
            "next": "verify",
            "candidate": candidate,
            "tool_calls": state["tool_calls"] + 1,
            "elapsed_s": candidate["act_s"],
        }

    # -- verify -------------------------------------------------------------------------------
    def verify(self, state: EditState, runtime: Runtime[EditContext]) -> dict[str, Any]:
        t0 = time.perf_counter()
        ctx = self._context(runtime)
        pending, candidate = _in_flight(state), state.get("candidate")
        if candidate is None:
            raise RuntimeError("verify needs a candidate in state (act writes it); got none")
        step, attempt, instruction = pending["step"], pending["attempt"], pending["instruction"]
        store, critic = self.c.store, self.c.critic
        current = store.open(state["current"])
        edited = store.open(candidate["image"])
        calls = state["tool_calls"]
        region = state.get("region")
        # the critic's masked mode judges inside the user's region (only asked for with one)
        masked = {"mask": store.open_mask(region)} if region is not None else {}

        progress: Critique | None = None
        try:
            calls += 1
            step_critique = critic.critique(current, edited, instruction, **masked)
            accepted, reason = _judge_step(step_critique, ctx)
            if accepted and ctx.check_regression:
                calls += 1
                progress = critic.critique(
                    store.open(state["source"]), edited, state["instruction"], **masked
                )
                accepted, reason = _judge_progress(progress, self._last_progress(state), ctx)
        except RecoverableToolError as exc:  # judged as a rejection: retry or re-plan
            step_critique = Critique.invalid(f"critic failed: {exc}")
            progress, accepted, reason = None, False, f"critic failed: {exc}"
        except FatalToolError as exc:
            return self._end(
                state,
                "error",
                tool_calls=calls,
                elapsed_s=time.perf_counter() - t0,
                steps=[
                    _record(
                        kind="tool_error",
                        step=step,
                        attempt=attempt,
                        tool="critic",
                        input=state["current"],
                        output=candidate["image"],
                        reason=f"critic failed: {exc}",
                    )
                ],
            )
        dt = time.perf_counter() - t0

        scores = {
            "step": step_critique.summary(),
            "progress": progress.summary() if progress is not None else None,
        }
        record = _record(
            kind="edit",
            step=step,
            attempt=attempt,
            planner=pending["planner"] if attempt == 0 else None,
            tool=candidate["tool"],
            args=candidate["args"],
            input=state["current"],
            output=candidate["image"],
            scores=scores,
            accepted=accepted,
            info=candidate.get("info", {}),
            reason=reason,
            timings={
                "plan_s": pending["plan_s"] if attempt == 0 else 0.0,
                "act_s": candidate["act_s"],
                "verify_s": dt,
            },
        )
        self._emit(
            {
                "event": "step_end",
                "step": step,
                "attempt": attempt,
                "accepted": accepted,
                "reason": reason,
                "overall": step_critique.overall,
                "output": candidate["image"],
            }
        )
        update: dict[str, Any] = {
            "tool_calls": calls,
            "elapsed_s": dt,
            "steps": [record],
            "candidate": None,
        }
        if accepted:
            update.update(
                current=candidate["image"],
                result=candidate["image"],
                pending=None,
                scores=scores["progress"] or scores["step"],
                next="plan",
                history=[{"instruction": instruction, "outcome": "accepted", "reason": None}],
            )
            target = ctx.stop_when_satisfied
            overall = progress.overall if progress is not None else None
            if target is not None and overall is not None and overall >= target:
                update.update(next="end", stop_reason="critic_satisfied")
            return update
        # Rejected: the last accepted image stays current (the rollback). Retry the same edit
        # with a new seed / the next editor, or hand the rejection to the planner.
        if attempt < ctx.max_retries_per_step:
            update.update(next="act", pending={**pending, "attempt": attempt + 1})
        else:
            tries = attempt + 1
            update.update(
                next="plan",
                pending=None,
                history=[
                    {
                        "instruction": instruction,
                        "outcome": "rejected",
                        "reason": f"{reason} (after {tries} tr{'y' if tries == 1 else 'ies'})",
                    }
                ],
            )
        return update

    @staticmethod
    def _last_progress(state: EditState) -> float | None:
        for rec in reversed(state.get("steps", [])):
            if rec["kind"] == "edit" and rec["accepted"]:
                progress = rec["scores"].get("progress")
                return progress["overall"] if progress else None
        return None

    # -- routing ------------------------------------------------------------------------------
    @staticmethod
    def route(state: EditState) -> str:
        return state["next"]


def build_graph(
    components: Components,
    *,
    context: EditContext | None = None,
    limits: InputLimits | None = None,
    checkpointer: Checkpointer = None,
    name: str = GRAPH_NAME,
) -> EditGraph:
    """Compile the editing graph over ``components``. ``context`` holds the per-run settings
    (budgets, verify policy), ``limits`` the input refusals; both default to their dataclass
    defaults. With ``checkpointer=None`` a graph used as a subgraph inherits its parent's
    checkpointer."""
    if not isinstance(components, Components):
        raise TypeError(f"components must be a graphs.Components, got {components!r}")
    if context is not None and not isinstance(context, EditContext):
        raise TypeError(f"context must be an EditContext, got {context!r}")
    defaults = context if context is not None else EditContext()
    nodes = _Nodes(defaults, limits or InputLimits(), components)
    builder = StateGraph(
        EditState,
        context_schema=EditContext.with_defaults(defaults),
        input_schema=InputState,
        output_schema=OutputState,
    )
    builder.add_node("perceive", nodes.perceive)
    builder.add_node("plan", nodes.plan)
    builder.add_node("approve", nodes.approve)
    builder.add_node("act", nodes.act)
    builder.add_node("verify", nodes.verify)
    builder.add_edge(START, "perceive")
    builder.add_edge("perceive", "plan")
    builder.add_conditional_edges(
        "plan", nodes.route, {"act": "act", "approve": "approve", "plan": "plan", "end": END}
    )
    builder.add_conditional_edges("approve", nodes.route, {"act": "act", "end": END})
    builder.add_conditional_edges(
        "act", nodes.route, {"verify": "verify", "plan": "plan", "end": END}
    )
    builder.add_conditional_edges("verify", nodes.route, {"plan": "plan", "act": "act", "end": END})
    return builder.compile(checkpointer=checkpointer, name=name)
