"""Using the editing agent inside larger LangGraph/LangChain assistants.

As a subgraph: add the compiled graph as a node of a parent ``StateGraph`` whose state has
``image`` and ``instruction`` (and receives ``result``, ``steps``, ``stop_reason``, ``scores``).
Build it with ``checkpointer=None`` so it inherits the parent's checkpointer.

As a chat-agent tool: ``as_tool(agent)`` wraps it as a langchain-core tool. The tool passes its
run config on, so the parent's checkpointer, callbacks and stream (``subgraphs=True``) reach
the agent's nodes.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["as_tool"]

_DESCRIPTION = (
    "Edit an image following a possibly compositional natural-language instruction, step by "
    "step with verification. Input: image (file path, file:// or data: URI) and instruction. "
    "Returns the edited image's reference and why editing stopped."
)


def as_tool(agent: Any, *, name: str = "edit_image", description: str = _DESCRIPTION) -> Any:
    """Wrap a compiled edit agent as a ``StructuredTool``.

    The tool's content is a short JSON summary for the model (result ref, stop reason,
    accepted edits); its ``artifact`` is the agent's whole output (steps included).
    """
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import StructuredTool
    from pydantic import BaseModel, Field

    class EditImageArgs(BaseModel):
        image: str = Field(description="path, file:// URI or data:image/...;base64 URL")
        instruction: str = Field(description="what to change in the image")

    def run(image: str, instruction: str, config: RunnableConfig) -> tuple[str, dict[str, Any]]:
        out = agent.invoke({"image": image, "instruction": instruction}, config)
        accepted = [
            s["args"].get("instruction")
            for s in out["steps"]
            if s["kind"] == "edit" and s["accepted"]
        ]
        summary = {
            "result": out["result"],
            "stop_reason": out["stop_reason"],
            "accepted_edits": accepted,
            "scores": out["scores"],
        }
        return json.dumps(summary), out

    # LangChain finds the config parameter by its annotation; this module's annotations are
    # strings (``from __future__``) naming a lazily imported class, so resolve it here.
    run.__annotations__["config"] = RunnableConfig
    return StructuredTool.from_function(
        func=run,
        name=name,
        description=description,
        args_schema=EditImageArgs,
        response_format="content_and_artifact",
    )
