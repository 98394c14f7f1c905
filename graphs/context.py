"""Per-run settings of the editing loop: budgets, verify policy, seeds, sampling.

``EditContext`` is the graph's LangGraph context schema: a run may override any field,
``graph.invoke(inputs, context={"max_steps": 1})``, and ``langgraph dev`` shows the fields with
their descriptions. The defaults a graph runs with come from ``AgentConfig`` (the same names).
Which backends run is not here: that is a build-time choice (``AgentConfig``).

``InputLimits`` are the refusals applied to the caller's input; they stay build-time so a
client cannot loosen them per run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.images import DEFAULT_MAX_INPUT_BYTES, SUPPORTED_URI_SCHEMES

__all__ = ["EditContext", "InputLimits", "CONTEXT_KEYS"]


def _desc(default: Any, description: str) -> Any:
    """A field default carrying its description (read by ``describe`` and the JSON schema)."""
    return field(default=default, metadata={"description": description})


@dataclass(kw_only=True, frozen=True)
class EditContext:
    """Per-run budgets and verify policy (the graph's ``context_schema``).

    Every field has a default. Construction checks types and ranges and refuses an unknown
    key, naming the key and its value: LangGraph builds the context from the ``context=`` dict
    of ``invoke``/``stream`` (and the server from a run's or assistant's ``context``), so a
    misspelt setting is an error, never silently dropped.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> EditContext:
        # Runs before the generated __init__, whose own error for an unknown key
        # ("unexpected keyword argument") does not say which keys exist.
        unknown = sorted(set(kwargs) - CONTEXT_KEYS)
        if unknown:
            raise ValueError(
                f"unknown context key(s) {unknown!r} (given "
                f"{ {k: kwargs[k] for k in unknown}!r}); known keys: {sorted(CONTEXT_KEYS)}"
            )
        return super().__new__(cls)

    # -- budgets ------------------------------------------------------------------------------
    max_steps: int = _desc(
        5, "most atomic edits the planner may issue (retries of one edit count once)"
    )
    max_retries_per_step: int = _desc(
        1,
        "after verify rejects an edit, how many times the same edit is retried with a new seed "
        "(or the next editor) before the planner is asked again",
    )
    max_tool_calls: int = _desc(
        40, "most model calls of a run: planner, editor, grounder and critic together"
    )
    time_budget_s: float | None = _desc(
        None,
        "wall-clock budget in seconds; checked before each tool call, so a running call is "
        "never cut off",
    )
    max_repeats_of_rejected: int = _desc(
        1,
        "how often the planner may propose again an edit whose retries were all rejected "
        "before the run ends with stop_reason='no_progress'",
    )
    one_shot_first: bool = _desc(
        False,
        "the first edit is the whole instruction in one editor call, with no planner call; "
        "verify judges it as any edit, and the planner then corrects the result or stops",
    )
    max_plan_errors: int = _desc(
        3,
        "planner answers in a row that cannot be parsed before the run ends with "
        "stop_reason='error' (a greedy planner repeats the same answer to the same input)",
    )
    # -- verify -------------------------------------------------------------------------------
    min_step_score: float = _desc(
        6.0, "least critic Overall (0..10) for an atomic edit to be accepted"
    )
    check_regression: bool = _desc(
        True,
        "also score each candidate against the full instruction and reject it when that score "
        "drops below the last accepted image's by more than regression_tolerance",
    )
    regression_tolerance: float = _desc(0.5, "allowed drop of the full-instruction Overall")
    stop_when_satisfied: float | None = _desc(
        None,
        "if set (needs check_regression), stop with 'critic_satisfied' once the "
        "full-instruction Overall reaches this value",
    )
    # -- human approval -----------------------------------------------------------------------
    approve_edits: bool = _desc(
        False,
        "pause before each planned edit (a LangGraph interrupt showing the edit, the current "
        "image and the history) until a person resumes with approve, a replacement instruction "
        "or stop; needs a checkpointer",
    )
    # -- editing ------------------------------------------------------------------------------
    seed: int = _desc(0, "base seed; step i, try j uses a seed derived from it")
    num_inference_steps: int | None = _desc(
        None, "denoising steps per edit; None = the editor's default"
    )
    guidance_scale: float | None = _desc(
        None, "guidance scale per edit; None = the editor's default"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f.name, getattr(self, f.name))
        if self.stop_when_satisfied is not None and not self.check_regression:
            raise ValueError(
                "stop_when_satisfied needs check_regression=True (it reads that score); got "
                f"stop_when_satisfied={self.stop_when_satisfied!r}, check_regression=False"
            )

    @classmethod
    def with_defaults(cls, defaults: EditContext) -> type[EditContext]:
        """A subclass whose field defaults are ``defaults``' values: the context schema of one
        graph, so a run's ``context={"max_steps": 1}`` changes that key and keeps the graph's
        other settings (and the server shows the graph's own defaults)."""
        fields = [
            (f.name, f.type, field(default=getattr(defaults, f.name), metadata=f.metadata))
            for f in dataclasses.fields(cls)
        ]
        schema = dataclasses.make_dataclass(
            cls.__name__,
            fields,
            bases=(cls,),
            kw_only=True,
            frozen=True,
            namespace={"__module__": cls.__module__, "__doc__": cls.__doc__},
        )
        return schema

    def updated(self, values: Mapping[str, Any]) -> EditContext:
        """A copy with ``values`` applied (checked as at construction)."""
        if not isinstance(values, Mapping):
            raise TypeError(f"context must be a mapping of EditContext keys, got {values!r}")
        return type(self)(**{**dataclasses.asdict(self), **values})

    def step_seed(self, step: int, attempt: int) -> int:
        """Seed of try ``attempt`` (0-based) of step ``step``: distinct, reproducible."""
        return (self.seed + 1_000_003 * step + 7_919 * attempt) % (2**32)


#: (type, low, high) per field: ``None`` bounds are open; optional fields also take None.
_RULES: dict[str, tuple[type, float | None, float | None]] = {
    "max_steps": (int, 1, 100),
    "max_retries_per_step": (int, 0, 20),
    "max_tool_calls": (int, 1, 10_000),
    "time_budget_s": (float, 0, None),
    "max_repeats_of_rejected": (int, 0, 20),
    "one_shot_first": (bool, None, None),
    "max_plan_errors": (int, 1, 100),
    "min_step_score": (float, 0, 10),
    "check_regression": (bool, None, None),
    "regression_tolerance": (float, 0, 10),
    "stop_when_satisfied": (float, 0, 10),
    "approve_edits": (bool, None, None),
    "seed": (int, 0, None),
    "num_inference_steps": (int, 1, None),
    "guidance_scale": (float, 0, None),
}
_OPTIONAL = {"time_budget_s", "stop_when_satisfied", "num_inference_steps", "guidance_scale"}
#: ``time_budget_s`` must be > 0 (0 s would refuse every call); the other lows are inclusive.
_EXCLUSIVE_LOW = {"time_budget_s"}
CONTEXT_KEYS = frozenset(_RULES)


def _check(name: str, value: object) -> None:
    """Raise ``ValueError`` naming ``name`` and ``value`` unless it has the field's type and
    lies in its range (``_RULES``)."""
    kind, low, high = _RULES[name]
    if value is None and name in _OPTIONAL:
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"context {name}={value!r} must be a bool")
        return
    numeric = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, numeric):
        raise ValueError(
            f"context {name}={value!r} must be a {kind.__name__}"
            f"{' or None' if name in _OPTIONAL else ''}"
        )
    too_low = False
    if low is not None:
        too_low = value <= low if name in _EXCLUSIVE_LOW else value < low
    if too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if name in _EXCLUSIVE_LOW else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(
            f"context {name}={value!r} is out of range: must be "
            f"{' and '.join(x for x in (lo, hi) if x)}"
        )


@dataclass(kw_only=True, frozen=True)
class InputLimits:
    """What the loop accepts as input; fixed when the graph is built."""

    max_input_pixels: int = _desc(4096 * 4096, "largest input image accepted, in pixels (w*h)")
    max_instruction_chars: int = _desc(2000, "longest instruction accepted")
    max_input_bytes: int = _desc(
        DEFAULT_MAX_INPUT_BYTES, "largest input file (or decoded data URL) read, in bytes"
    )
    allowed_uri_schemes: tuple[str, ...] = _desc(
        SUPPORTED_URI_SCHEMES, "URI schemes accepted for the input image"
    )
    allowed_file_roots: tuple[str, ...] | None = _desc(
        None, "folders input files may be read from; None = any file, () = no file"
    )
