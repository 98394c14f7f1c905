"""Using the editing agent inside larger LangGraph/LangChain assistants.

As a subgraph: add the compiled graph as a node of a parent ``StateGraph`` whose state has
``image`` and ``instruction`` (and receives ``result``, ``steps``, ``stop_reason``, ``scores``).
Build it with ``checkpointer=None`` so it inherits the parent's checkpointer.

As a chat-agent tool: ``as_tool(agent)`` wraps it as a langchain-core tool. The tool passes its
run config on, so the parent's checkpointer, callbacks and stream (``subgraphs=True``) reach
the agent's nodes. Bad input (a missing file, a forbidden URI, an empty instruction) and
recoverable tool failures come back as an error tool message the chat model can react to; the
chat run goes on. Without ``image`` the tool edits the latest image content block of the
user's messages (``tools/content_blocks.py``), so the model never copies a data URL.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from tools.content_blocks import latest_user_image, ref_block
from tools.errors import InvalidInputError, RecoverableToolError

__all__ = ["as_tool"]

_DESCRIPTION = (
    "Edit an image following a possibly compositional natural-language instruction, step by "
    "step with verification. Input: instruction, and optionally image (file path, file:// or "
    "data: URI); without image, the latest image the user sent in the conversation is edited. "
    "Returns the edited image and why editing stopped."
)


def as_tool(agent: Any, *, name: str = "edit_image", description: str = _DESCRIPTION) -> Any:
    """Wrap a compiled edit agent as a ``StructuredTool``.

    The tool's content is a list of two blocks: a short JSON summary for the model (result
    ref, stop reason, accepted edits) as a text block, and the result as an image block (PNG),
    so chat UIs show it. Its ``artifact`` is the agent's whole output (steps included). Errors
    the caller or the model can fix become an error ``ToolMessage`` (``status="error"``).
    """
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import StructuredTool, ToolException
    from langgraph.prebuilt import InjectedState
    from pydantic import BaseModel, Field

    from tools.lc import validation_answer

    class EditImageArgs(BaseModel):
        instruction: str = Field(description="what to change in the image")
        image: str | None = Field(
            default=None,
            description="path, file:// URI or data:image/...;base64 URL; leave out to edit "
            "the latest image the user sent",
        )
        # Filled in by a LangGraph ToolNode / create_agent from the graph state; the model
        # never sees it (not in the tool-call schema).
        messages: Annotated[list[Any] | None, InjectedState("messages")] = None

    def run(
        instruction: str,
        config: RunnableConfig,
        image: str | None = None,
        messages: list[Any] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        try:
            if image is None:
                image = latest_user_image(messages)
                if image is None:
                    raise InvalidInputError(
                        "image=None and the conversation has no image content block in a user "
                        "message: pass image (a path, file:// or data: URI) or attach an image"
                    )
            out = agent.invoke({"image": image, "instruction": instruction}, config)
        except (InvalidInputError, RecoverableToolError) as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
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
        content = [{"type": "text", "text": json.dumps(summary)}, ref_block(out["result"])]
        return content, out

    # LangChain finds the config parameter by its annotation; this module's annotations are
    # strings (``from __future__``) naming a lazily imported class, so resolve it here.
    run.__annotations__["config"] = RunnableConfig
    return StructuredTool.from_function(
        func=run,
        name=name,
        description=description,
        args_schema=EditImageArgs,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=validation_answer,
    )
