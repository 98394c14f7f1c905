"""The error kinds, re-exported from ``tools.errors`` (the bottom layer, where they live)."""

from tools.errors import (
    FatalToolError,
    GroundingError,
    InvalidInputError,
    PlannerOutputError,
    RecoverableToolError,
    ToolError,
)

__all__ = [
    "InvalidInputError",
    "ToolError",
    "RecoverableToolError",
    "FatalToolError",
    "GroundingError",
    "PlannerOutputError",
]
