"""Typed tools and model backends: the contracts, the backend registry, LangChain wrappers."""

from tools.contracts import (
    Box,
    Critic,
    Critique,
    Editor,
    Grounder,
    Grounding,
    HistoryItem,
    Planner,
    PlannerDecision,
    ProgressFn,
)

__all__ = [
    "Box",
    "Critic",
    "Critique",
    "Editor",
    "Grounder",
    "Grounding",
    "HistoryItem",
    "Planner",
    "PlannerDecision",
    "ProgressFn",
]
