"""Planner policies that need no model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tools.contracts import HistoryItem, PlannerDecision

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["WholeInstructionPlanner"]


class WholeInstructionPlanner:
    """Issues the whole instruction as one edit, then stops: the ``mirage`` strategy, where one
    regional step handles every target. After a rejection or error it stops too (the loop's
    retries already ran), so a single-step strategy never re-plans."""

    def next_action(
        self,
        original: Image.Image,
        current: Image.Image,
        instruction: str,
        history: Sequence[HistoryItem],
    ) -> PlannerDecision:
        if history:
            return PlannerDecision(raw="<stop>", stop=True)
        return PlannerDecision(
            raw=f"NEXT_EDITING_INSTRUCTION: {instruction}", stop=False, instruction=instruction
        )
