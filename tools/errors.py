"""Error kinds, kept apart as the graph treats them differently.

- ``InvalidInputError`` (a ``ValueError``): the caller gave something unusable (not an image,
  empty instruction, forbidden URI scheme). Raised before any model work; never retried.
- ``RecoverableToolError``: a tool failed in a way the planner can act on (no region found,
  unparseable planner output). The graph turns it into feedback and goes back to plan.
- ``FatalToolError``: a tool cannot go on (model missing, out of memory). The graph ends with
  ``stop_reason="error"`` and keeps the best image so far.

Any other exception is a bug or a crash: it propagates out of ``invoke`` and, with a
checkpointer, the run can be resumed on the same ``thread_id``.
"""

from __future__ import annotations

__all__ = [
    "InvalidInputError",
    "ToolError",
    "RecoverableToolError",
    "FatalToolError",
    "GroundingError",
    "PlannerOutputError",
]


class InvalidInputError(ValueError):
    """The image or instruction given by the caller cannot be used."""


class ToolError(Exception):
    """Base class of typed tool failures. ``tool`` names the tool that failed."""

    def __init__(self, message: str, *, tool: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool


class RecoverableToolError(ToolError):
    """A failure the planner can react to; it becomes feedback and the loop goes on."""


class FatalToolError(ToolError):
    """A failure that ends the run with ``stop_reason='error'``, keeping the best image."""


class GroundingError(RecoverableToolError):
    """The grounder found no region for a referring expression."""


class PlannerOutputError(RecoverableToolError):
    """The planner's text could not be parsed into an edit or a stop.

    ``raw`` holds the text as the model produced it, for the trace.
    """

    def __init__(self, message: str, *, raw: str, tool: str | None = "planner") -> None:
        super().__init__(message, tool=tool)
        self.raw = raw
