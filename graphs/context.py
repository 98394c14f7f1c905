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

from tools.images import SUPPORTED_URI_SCHEMES

__all__ = ["EditContext", "InputLimits", "CONTEXT_KEYS"]


def _desc(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(kw_only=True, frozen=True)
class EditContext:
    """Per-run budgets and verify policy. Every field has a default; ``validated`` checks
    types and ranges and names the key and value it refuses."""

    # -- budgets ------------------------------------------------------------------------------
    max_steps: int = _desc(5, "most atomic edits the planner may issue (retries of one edit count once)")
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
    def from_mapping(cls, values: Mapping[str, Any], *, base: EditContext | None = None) -> EditContext:
        """``base`` (or the defaults) with ``values`` applied; an unknown key is a ``ValueError``
        naming it and the known ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"context must be a mapping of EditContext fields, got {values!r}")
        unknown = sorted(set(values) - CONTEXT_KEYS)
        if unknown:
            raise ValueError(
                f"unknown context key(s) {unknown!r} (values "
                f"{ {k: values[k] for k in unknown}!r}); known keys: {sorted(CONTEXT_KEYS)}"
            )
        return dataclasses.replace(base, **values) if base is not None else cls(**values)

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
    "min_step_score": (float, 0, 10),
    "check_regression": (bool, None, None),
    "regression_tolerance": (float, 0, 10),
    "stop_when_satisfied": (float, 0, 10),
    "seed": (int, 0, None),
    "num_inference_steps": (int, 1, None),
    "guidance_scale": (float, 0, None),
}
_OPTIONAL = {"time_budget_s", "stop_when_satisfied", "num_inference_steps", "guidance_scale"}
#: ``time_budget_s`` must be > 0 (0 s would refuse every call); the other lows are inclusive.
_EXCLUSIVE_LOW = {"time_budget_s"}
CONTEXT_KEYS = frozenset(_RULES)


def _check(name: str, value: Any) -> None:
    kind, low, high = _RULES[name]
    if value is None and name in _OPTIONAL:
        return
    ok_type = (
        isinstance(value, bool)
        if kind is bool
        else isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    )
    if not ok_type:
        raise ValueError(f"context {name}={value!r} must be a {kind.__name__}"
                         f"{' or None' if name in _OPTIONAL else ''}")
    if kind is bool:
        return
    too_low = low is not None and (value <= low if name in _EXCLUSIVE_LOW else value < low)
    if too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if name in _EXCLUSIVE_LOW else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"context {name}={value!r} is out of range: must be {' and '.join(x for x in (lo, hi) if x)}")


@dataclass(kw_only=True, frozen=True)
class InputLimits:
    """What the loop accepts as input; fixed when the graph is built."""

    max_input_pixels: int = _desc(4096 * 4096, "largest input image accepted, in pixels (w*h)")
    max_instruction_chars: int = _desc(2000, "longest instruction accepted")
    allowed_uri_schemes: tuple[str, ...] = _desc(
        SUPPORTED_URI_SCHEMES, "URI schemes accepted for the input image"
    )
