"""The chat-native graph: ``messages`` in, an AI message with the edited image out.

    read_request -> edit (the editing graph, as a subgraph) -> respond

The user's latest message is the request: its text is the instruction and the latest image
content block of the user's messages is the image (``tools/content_blocks.py``). The editing
graph runs as a subgraph inside ``edit``, under the same checkpointer, context and stream
(``subgraphs=True`` shows its progress events). ``respond`` answers with one AI message whose
content is a short account of the steps (text) and the result (an image block), which chat UIs
such as agent-chat-ui and LangGraph Studio render. A request the graph cannot serve (no text,
no image, an unreadable image) is answered with an AI message saying so, never an exception:
the chat goes on.
"""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer
from typing_extensions import NotRequired, TypedDict

from graphs.context import EditContext
from graphs.editing import EditGraph
from graphs.state import InputState, StepRecord
from tools.artifacts import ImageRef
from tools.content_blocks import latest_user_image, message_text, ref_block
from tools.errors import InvalidInputError

__all__ = [
    "ChatGraph",
    "CHAT_GRAPH_NAME",
    "ChatInput",
    "ChatOutput",
    "ChatState",
    "build_chat_graph",
    "account",
]

CHAT_GRAPH_NAME = "mira_chat_agent"


class ChatInput(TypedDict):
    #: the conversation; the last message is the user's request (text + image block).
    messages: Annotated[list[AnyMessage], add_messages]
    #: optional region the edits are confined to, as in the editing graph's input: a mask
    #: image (path, URI or ImageRef) or pixel XYXY boxes.
    mask: NotRequired[str | ImageRef | None]
    boxes: NotRequired[list[list[int]] | None]


class ChatOutput(TypedDict):
    #: the conversation with the answer appended: an AI message (account + image block).
    messages: Annotated[list[AnyMessage], add_messages]


class ChatState(ChatInput, total=False):
    #: the request's text (read_request).
    instruction: str
    #: the editing graph's output (edit).
    result: ImageRef
    steps: list[StepRecord]
    stop_reason: str
    scores: dict[str, Any]
    #: where the last node routes next: "edit" | "respond" | "end".
    next: str


def _answer(text: str) -> dict[str, Any]:
    return {"messages": [AIMessage(content=text)], "next": "end"}


def account(out: dict[str, Any]) -> str:
    """A short account of an editing run: each tried edit, accepted or not and why, then why
    it stopped."""
    lines = []
    for s in out.get("steps", []):
        if s["kind"] == "edit":
            verdict = "accepted" if s["accepted"] else "rejected"
            lines.append(
                f"{s['step']}.{s['attempt'] + 1} {s['args'].get('instruction')!r} with "
                f"{s['tool']}: {verdict} ({s['reason']})"
            )
        elif s["kind"] in ("tool_error", "plan_error"):
            lines.append(f"{s['step']}.{s['attempt'] + 1} {s['reason']}")
    accepted = sum(1 for s in out.get("steps", []) if s["kind"] == "edit" and s["accepted"])
    head = f"Applied {accepted} edit{'s' if accepted != 1 else ''}; stopped: {out['stop_reason']}."
    return "\n".join([head, *lines])


class _ChatNodes:
    def __init__(self, editor: EditGraph) -> None:
        self.editor = editor

    def read_request(self, state: ChatState) -> dict[str, Any]:
        messages = state.get("messages") or []
        if not messages or messages[-1].type != "human":
            return _answer("Send a message with an instruction and an image to edit.")
        instruction = message_text(messages[-1]).strip()
        if not instruction:
            return _answer("Say what to change in the image (the message has no text).")
        try:
            image = latest_user_image(messages)
        except InvalidInputError as exc:
            return _answer(f"I cannot read the image: {exc}")
        if image is None:
            return _answer("Attach the image to edit (no image in your messages).")
        return {"instruction": instruction, "next": "edit"}

    def edit(self, state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        image = latest_user_image(state["messages"])
        if image is None:
            raise RuntimeError("edit needs an image in the messages (read_request checks it)")
        try:
            request = InputState(image=image, instruction=state["instruction"])
            if state.get("mask") is not None:
                request["mask"] = state.get("mask")
            if state.get("boxes") is not None:
                request["boxes"] = state.get("boxes")
            out = self.editor.invoke(request, config)
        except InvalidInputError as exc:  # refused before any model work: tell the user
            return _answer(f"I cannot edit this: {exc}")
        return {
            "result": out["result"],
            "steps": out["steps"],
            "stop_reason": out["stop_reason"],
            "scores": out["scores"],
            "next": "respond",
        }

    def respond(self, state: ChatState) -> dict[str, Any]:
        text = account(dict(state))
        content: list[str | dict[str, Any]] = [
            {"type": "text", "text": text},
            ref_block(state["result"]),
        ]
        return {"messages": [AIMessage(content=content)], "next": "end"}

    @staticmethod
    def route(state: ChatState) -> str:
        return state["next"]


#: The compiled chat graph: its state, context, input and output schemas.
ChatGraph = CompiledStateGraph[ChatState, EditContext, ChatInput, ChatOutput]


def build_chat_graph(
    editor: EditGraph,
    *,
    checkpointer: Checkpointer = None,
    name: str = CHAT_GRAPH_NAME,
) -> ChatGraph:
    """Compile the chat graph around ``editor``, a compiled editing graph built without a
    checkpointer (it runs under this graph's). The chat graph takes the editor's context
    schema, so a run's ``context`` (budgets, approval) reaches the editing loop."""
    nodes = _ChatNodes(editor)
    builder = StateGraph(
        ChatState,
        context_schema=editor.context_schema,
        input_schema=ChatInput,
        output_schema=ChatOutput,
    )
    builder.add_node("read_request", nodes.read_request)
    builder.add_node("edit", nodes.edit)
    builder.add_node("respond", nodes.respond)
    builder.add_edge(START, "read_request")
    builder.add_conditional_edges("read_request", nodes.route, {"edit": "edit", "end": END})
    builder.add_conditional_edges("edit", nodes.route, {"respond": "respond", "end": END})
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer, name=name)
