"""MIRA Agent: agentic image editing on LangGraph.

``create_edit_agent()`` builds the perceive -> plan -> act -> verify graph; ``edit_image()``
runs it once. Heavy libraries (torch, diffusers, transformers, sam2, langgraph) are imported
only when an agent is built, so ``import agent`` stays fast.
"""

from agent.artifacts import ArtifactStore, ImageRef, default_artifacts_dir
from agent.config import PRESETS, AgentConfig
from agent.embedding import as_tool
from agent.errors import (
    FatalToolError,
    GroundingError,
    InvalidInputError,
    PlannerOutputError,
    RecoverableToolError,
    ToolError,
)
from agent.factory import EditResult, create_chat_agent, create_edit_agent, edit_image
from agent.state import EditState, InputState, OutputState, StepRecord, StopReason

__all__ = [
    "create_edit_agent",
    "create_chat_agent",
    "edit_image",
    "as_tool",
    "EditResult",
    "AgentConfig",
    "PRESETS",
    "ArtifactStore",
    "ImageRef",
    "default_artifacts_dir",
    "InputState",
    "OutputState",
    "EditState",
    "StepRecord",
    "StopReason",
    "InvalidInputError",
    "ToolError",
    "RecoverableToolError",
    "FatalToolError",
    "GroundingError",
    "PlannerOutputError",
]
