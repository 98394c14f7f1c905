"""The editing graph: perceive -> plan -> act -> verify -> (plan | act | END).

Every routing decision is a conditional edge with an explicit path map, so the drawn graph
shows all of them. Nodes keep pixels out of state: they read and write images through the
artifact store and pass ``ImageRef``s. Semantics: DESIGN sections 3-4.

Routes:
- plan  -> act (an edit) | plan (unparseable planner output, fed back) | END (stop, budget,
  no progress, fatal error)
- act   -> verify (a candidate) | plan (recoverable tool error, fed back) | END (budget, fatal)
- verify-> plan (accepted, or retries used up: rejection fed back) | act (retry the same edit
  with a new seed / the next editor) | END (critic satisfied)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite

from agent.artifacts import ArtifactStore
from agent.config import AgentConfig
from agent.errors import FatalToolError, PlannerOutputError, RecoverableToolError
from agent.images import check_instruction, load_image
from agent.state import EditState, InputState, OutputState, StepRecord
from tools.contracts import Critic, Critique, Editor, EditOutput, Grounder, HistoryItem, Planner

__all__ = ["Components", "build_graph", "GRAPH_NAME"]

GRAPH_NAME = "mira_edit_agent"


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
        kind="edit", step=0, attempt=0, planner=None, tool=None, args={}, input=None,
        output=None, scores={}, accepted=False, info={}, reason="", timings={},
    )
    base.update(fields)
    return base  # type: ignore[return-value]


class _Nodes:
    """Node and routing functions bound to one config and one set of components."""

    def __init__(self, config: AgentConfig, components: Components) -> None:
        self.cfg = config
        self.c = components
        # verify makes 1 critic call, 2 with the full-instruction regression check.
        self.critic_calls = 2 if config.check_regression else 1

    # -- helpers ------------------------------------------------------------------------------
    def _budget_left(self, state: EditState, calls_needed: int) -> str | None:
        """None if ``calls_needed`` more model calls fit the budgets, else the reason."""
        used = state.get("tool_calls", 0)
        if used + calls_needed > self.cfg.max_tool_calls:
            return f"tool-call budget spent ({used} of max_tool_calls={self.cfg.max_tool_calls})"
        spent = state.get("elapsed_s", 0.0)
        if self.cfg.time_budget_s is not None and spent >= self.cfg.time_budget_s:
            return f"time budget spent ({spent:.1f} s of time_budget_s={self.cfg.time_budget_s})"
        return None

    def _end(self, state: EditState, reason: str, **update: Any) -> dict[str, Any]:
        """Update that ends the run on the last accepted image."""
        return {"next": "end", "stop_reason": reason, "result": state["current"],
                "pending": None, "candidate": None, **update}

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
            state.get("instruction"), max_chars=self.cfg.max_instruction_chars
        )
        if "image" not in state:
            raise ValueError("input is missing 'image'")
        image = load_image(
            state["image"], store=self.c.store, allowed_schemes=self.cfg.allowed_uri_schemes,
            max_pixels=self.cfg.max_input_pixels,
        )
        source = self.c.store.put(image)
        self._emit({"event": "run_start", "source": source, "instruction": instruction})
        return {  # "image" becomes the stored ref: a data: URL must not ride in every checkpoint
            "image": source, "instruction": instruction, "source": source, "current": source,
            "result": source,
            "steps": Overwrite([]), "history": Overwrite([]), "scores": {},
            "pending": None, "candidate": None, "step_count": 0, "tool_calls": 0,
            "elapsed_s": Overwrite(time.perf_counter() - t0), "next": "plan",
        }

    # -- plan ---------------------------------------------------------------------------------
    def plan(self, state: EditState) -> dict[str, Any]:
        t0 = time.perf_counter()
        if (why := self._budget_left(state, 1)) is not None:
            return self._end(state, "budget_exhausted", elapsed_s=0.0,
                             steps=[_record(kind="stop", step=state["step_count"], reason=why)])
        step = state["step_count"] + 1
        store = self.c.store
        try:
            decision = self.c.planner.next_action(
                store.open(state["source"]), store.open(state["current"]),
                state["instruction"], self._history(state),
            )
        except PlannerOutputError as exc:
            dt = time.perf_counter() - t0
            reason = f"planner output could not be parsed: {exc}"
            return {
                "next": "plan", "tool_calls": state["tool_calls"] + 1, "elapsed_s": dt,
                "history": [{"instruction": None, "outcome": "error", "reason": reason}],
                "steps": [_record(kind="plan_error", step=step, tool="planner",
                                  planner={"raw": exc.raw, "action": None},
                                  reason=reason, timings={"plan_s": dt})],
            }
        except FatalToolError as exc:
            return self._end(state, "error", tool_calls=state["tool_calls"] + 1,
                             elapsed_s=time.perf_counter() - t0,
                             steps=[_record(kind="plan_error", step=step, tool="planner",
                                            reason=f"planner failed: {exc}")])
        dt = time.perf_counter() - t0
        planner_out = {"raw": decision.raw,
                       "action": {"stop": decision.stop, "instruction": decision.instruction}}
        calls = state["tool_calls"] + 1
        self._emit({"event": "plan", "step": step, "stop": decision.stop,
                    "instruction": decision.instruction})

        def end(reason: str, why: str) -> dict[str, Any]:
            return self._end(state, reason, tool_calls=calls, elapsed_s=dt,
                             steps=[_record(kind="stop", step=step, tool="planner",
                                            planner=planner_out, reason=why,
                                            timings={"plan_s": dt})])

        if decision.stop:
            return end("planner_stop", "the planner said the instruction is complete")
        key = _norm(decision.instruction)  # type: ignore[arg-type]
        history = state.get("history", [])
        if any(h["outcome"] == "accepted" and _norm(h["instruction"]) == key for h in history):
            return end("no_progress", f"the planner repeated an accepted edit: {decision.instruction!r}")
        rejected = sum(1 for h in history if h["outcome"] == "rejected"
                       and h["instruction"] is not None and _norm(h["instruction"]) == key)
        if rejected > self.cfg.max_repeats_of_rejected:
            return end("no_progress", f"{decision.instruction!r} was rejected {rejected} times")
        if state["step_count"] >= self.cfg.max_steps:
            return end("budget_exhausted", f"max_steps={self.cfg.max_steps} edits issued")
        pending = {"step": step, "attempt": 0, "instruction": decision.instruction,
                   "planner": planner_out, "plan_s": dt}
        return {"next": "act", "pending": pending, "step_count": step,
                "tool_calls": calls, "elapsed_s": dt}

    # -- act ----------------------------------------------------------------------------------
    def act(self, state: EditState) -> dict[str, Any]:
        t0 = time.perf_counter()
        pending = state["pending"]
        step, attempt, instruction = pending["step"], pending["attempt"], pending["instruction"]
        if (why := self._budget_left(state, 1 + self.critic_calls)) is not None:
            return self._end(state, "budget_exhausted", elapsed_s=0.0,
                             steps=[_record(kind="stop", step=step, attempt=attempt, reason=why)])
        name, editor = self.c.editors[attempt % len(self.c.editors)]
        args = {"instruction": instruction, "seed": self.cfg.step_seed(step, attempt),
                "num_inference_steps": self.cfg.num_inference_steps,
                "guidance_scale": self.cfg.guidance_scale}
        writer = get_stream_writer()
        writer({"event": "step_start", "step": step, "attempt": attempt, "tool": name,
                "instruction": instruction})

        def progress(done: int, total: int) -> None:
            writer({"event": "tool_progress", "step": step, "attempt": attempt, "tool": name,
                    "done": done, "total": total})

        source = state["current"]
        try:
            edited = editor.edit(self.c.store.open(source), progress=progress, **args)
        except RecoverableToolError as exc:
            dt = time.perf_counter() - t0
            reason = f"{name} failed: {exc}"
            writer({"event": "step_end", "step": step, "attempt": attempt, "accepted": False,
                    "reason": reason})
            return {"next": "plan", "pending": None, "tool_calls": state["tool_calls"] + 1,
                    "elapsed_s": dt,
                    "history": [{"instruction": instruction, "outcome": "error", "reason": reason}],
                    "steps": [_record(kind="tool_error", step=step, attempt=attempt,
                                      planner=pending["planner"] if attempt == 0 else None,
                                      tool=name, args=args, input=source, reason=reason,
                                      timings={"act_s": dt})]}
        except FatalToolError as exc:
            return self._end(state, "error", tool_calls=state["tool_calls"] + 1,
                             elapsed_s=time.perf_counter() - t0,
                             steps=[_record(kind="tool_error", step=step, attempt=attempt,
                                            tool=name, args=args, input=source,
                                            reason=f"{name} failed: {exc}")])
        info: dict[str, Any] = {}
        if isinstance(edited, EditOutput):
            edited, info = edited.image, edited.info
        candidate = {"image": self.c.store.put(edited), "tool": name, "args": args, "info": info,
                     "act_s": time.perf_counter() - t0}
        return {"next": "verify", "candidate": candidate, "tool_calls": state["tool_calls"] + 1,
                "elapsed_s": candidate["act_s"]}

    # -- verify -------------------------------------------------------------------------------
    def verify(self, state: EditState) -> dict[str, Any]:
        t0 = time.perf_counter()
        pending, candidate = state["pending"], state["candidate"]
        step, attempt, instruction = pending["step"], pending["attempt"], pending["instruction"]
        store, critic = self.c.store, self.c.critic
        current = store.open(state["current"])
        edited = store.open(candidate["image"])
        calls = state["tool_calls"]

        progress: Critique | None = None
        try:
            calls += 1
            step_critique = critic.critique(current, edited, instruction)
            accepted, reason = self._judge_step(step_critique)
            if accepted and self.cfg.check_regression:
                calls += 1
                progress = critic.critique(store.open(state["source"]), edited, state["instruction"])
                accepted, reason = self._judge_progress(progress, self._last_progress(state))
        except RecoverableToolError as exc:  # judged as a rejection: retry or re-plan
            step_critique = Critique.invalid(f"critic failed: {exc}")
            progress, accepted, reason = None, False, f"critic failed: {exc}"
        except FatalToolError as exc:
            return self._end(state, "error", tool_calls=calls, elapsed_s=time.perf_counter() - t0,
                             steps=[_record(kind="tool_error", step=step, attempt=attempt,
                                            tool="critic", input=state["current"],
                                            output=candidate["image"],
                                            reason=f"critic failed: {exc}")])
        dt = time.perf_counter() - t0

        scores = {"step": step_critique.summary(),
                  "progress": progress.summary() if progress is not None else None}
        record = _record(kind="edit", step=step, attempt=attempt,
                         planner=pending["planner"] if attempt == 0 else None,
                         tool=candidate["tool"], args=candidate["args"], input=state["current"],
                         output=candidate["image"], scores=scores, accepted=accepted,
                         info=candidate.get("info", {}),
                         reason=reason, timings={"plan_s": pending["plan_s"] if attempt == 0 else 0.0,
                                                 "act_s": candidate["act_s"], "verify_s": dt})
        self._emit({"event": "step_end", "step": step, "attempt": attempt, "accepted": accepted,
                    "reason": reason, "overall": step_critique.overall, "output": candidate["image"]})
        update: dict[str, Any] = {"tool_calls": calls, "elapsed_s": dt, "steps": [record],
                                  "candidate": None}
        if accepted:
            update.update(current=candidate["image"], result=candidate["image"], pending=None,
                          scores=scores["progress"] or scores["step"], next="plan",
                          history=[{"instruction": instruction, "outcome": "accepted", "reason": None}])
            target = self.cfg.stop_when_satisfied
            if target is not None and progress is not None and progress.overall >= target:
                update.update(next="end", stop_reason="critic_satisfied")
            return update
        # Rejected: the last accepted image stays current (the rollback). Retry the same edit
        # with a new seed / the next editor, or hand the rejection to the planner.
        if attempt < self.cfg.max_retries_per_step:
            update.update(next="act", pending={**pending, "attempt": attempt + 1})
        else:
            tries = attempt + 1
            update.update(next="plan", pending=None, history=[{
                "instruction": instruction, "outcome": "rejected",
                "reason": f"{reason} (after {tries} tr{'y' if tries == 1 else 'ies'})"}])
        return update

    def _judge_step(self, critique: Critique) -> tuple[bool, str]:
        if not critique.valid:
            return False, f"no valid critic score: {critique.reasoning[:200]}"
        overall = critique.overall
        if overall < self.cfg.min_step_score:
            return False, f"step score {overall:.2f} below min_step_score={self.cfg.min_step_score}"
        return True, f"step score {overall:.2f}"

    def _judge_progress(self, progress: Critique, previous: float | None) -> tuple[bool, str]:
        if not progress.valid:
            return False, f"no valid critic score: {progress.reasoning[:200]}"
        if previous is not None and progress.overall < previous - self.cfg.regression_tolerance:
            return False, (f"regression: full-instruction score {progress.overall:.2f} < last "
                           f"accepted {previous:.2f} - regression_tolerance")
        return True, f"accepted; full-instruction score {progress.overall:.2f}"

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
    config: AgentConfig,
    components: Components,
    *,
    checkpointer: Any = None,
    name: str = GRAPH_NAME,
) -> Any:
    """Compile the editing graph. With ``checkpointer=None`` a graph used as a subgraph
    inherits its parent's checkpointer."""
    nodes = _Nodes(config, components)
    builder = StateGraph(EditState, input_schema=InputState, output_schema=OutputState)
    builder.add_node("perceive", nodes.perceive)
    builder.add_node("plan", nodes.plan)
    builder.add_node("act", nodes.act)
    builder.add_node("verify", nodes.verify)
    builder.add_edge(START, "perceive")
    builder.add_edge("perceive", "plan")
    builder.add_conditional_edges("plan", nodes.route, {"act": "act", "plan": "plan", "end": END})
    builder.add_conditional_edges("act", nodes.route, {"verify": "verify", "plan": "plan", "end": END})
    builder.add_conditional_edges("verify", nodes.route, {"plan": "plan", "act": "act", "end": END})
    return builder.compile(checkpointer=checkpointer, name=name)


def components_from(
    config: AgentConfig,
    *,
    store: ArtifactStore,
    planner: Planner | None = None,
    editors: Editor | Sequence[Editor] | dict[str, Editor] | None = None,
    grounder: Grounder | None = None,
    critic: Critic | None = None,
    build: Callable[[str, str], Any] | None = None,
) -> Components:
    """Resolve components: objects given win over backend names in the config."""
    if build is None:
        from tools.registry import build as registry_build

        def build(kind: str, name: str) -> Any:
            return registry_build(kind, name, **config.backend_options.get(name, {}))

    def need(kind: str, obj: Any, name: str | None) -> Any:
        if obj is not None:
            return obj
        if name is None:
            raise ValueError(
                f"no {kind}: pass {kind}=... to create_edit_agent, name a {kind} backend in "
                f"AgentConfig, or choose a preset (e.g. AgentConfig(preset='dry-run'))"
            )
        return build(kind, name)

    if editors is None:
        if not config.editors:
            need("editor", None, None)
        named = tuple((n, build("editor", n)) for n in config.editors)
    elif isinstance(editors, dict):
        named = tuple(editors.items())
    elif isinstance(editors, (list, tuple)):
        named = tuple((type(e).__name__ if i == 0 else f"{type(e).__name__}#{i}", e)
                      for i, e in enumerate(editors))
    else:
        named = ((type(editors).__name__, editors),)
    for label, editor in named:
        if not callable(getattr(editor, "edit", None)):
            raise TypeError(f"editor {label!r} has no edit() method: {editor!r}")
    planner = need("planner", planner, config.planner)
    critic = need("critic", critic, config.critic)
    if not callable(getattr(planner, "next_action", None)):
        raise TypeError(f"planner has no next_action() method: {planner!r}")
    if not callable(getattr(critic, "critique", None)):
        raise TypeError(f"critic has no critique() method: {critic!r}")
    if grounder is None and config.grounder is not None:
        grounder = build("grounder", config.grounder)
    if config.strategy != "mira":
        named = tuple((n, _regional(n, e, grounder, config)) for n, e in named)
    if config.strategy == "mirage":  # one regional step for the whole instruction
        from agent.policies import WholeInstructionPlanner

        planner = WholeInstructionPlanner()
    return Components(planner=planner, editors=named, critic=critic, store=store, grounder=grounder)


def _regional(name: str, editor: Any, grounder: Grounder | None, config: AgentConfig) -> Any:
    """The editor as a MIRAGE ``RegionalEditor`` (strategies 'mirage' and 'mira+mirage')."""
    from tools.mirage.tool import RegionalEditor

    if isinstance(editor, RegionalEditor):
        return editor
    if grounder is None or not hasattr(type(grounder), "vlm"):
        raise ValueError(
            f"strategy {config.strategy!r} parses and grounds with the grounder's VLM: name a "
            f"grounder backend with a Qwen-VL (e.g. the 'tiny' preset's), or pass editors=[RegionalEditor(...)]"
        )
    if type(editor).__name__ not in ("Flux2KleinEditor", "Flux2Editor", "FluxKontextEditor",
                                     "QwenImageEditPlusEditor"):
        raise ValueError(f"strategy {config.strategy!r} needs a FLUX.2, Kontext or Qwen-Image-Edit "
                         f"editor for MIRAGE; editor "
                         f"{name!r} is a {type(editor).__name__}")
    from tools.mirage.parse import VLMInstructionParser

    return RegionalEditor.for_editor(editor, parser=VLMInstructionParser(vlm=lambda: grounder.vlm),
                                     grounder=grounder, rho=config.rho)
