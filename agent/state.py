"""The graph's state types, re-exported from ``graphs.state`` (where they live)."""

from graphs.state import EditState, InputState, OutputState, StepRecord, StopReason

__all__ = ["StopReason", "StepRecord", "InputState", "OutputState", "EditState"]
