"""The agent as a subgraph node and as a langchain-core tool of a parent graph."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from typing_extensions import TypedDict

from agent import ImageRef, as_tool
from agent.testing import PixelChangeCritic, SplitPlanner

INSTRUCTION = "make the left side red, then make the right side blue"


class Parent(TypedDict, total=False):
    image: str
    instruction: str
    result: ImageRef
    stop_reason: str
    steps: list[dict[str, Any]]
    scores: dict[str, Any]
    note: str


def test_agent_as_subgraph_node_streams_and_inherits_checkpointer(make_agent, image_path):
    agent = make_agent(SplitPlanner(), PixelChangeCritic())  # no checkpointer of its own

    def after(state: Parent) -> dict:
        return {"note": f"edited with {state['stop_reason']}"}

    builder = StateGraph(Parent)
    builder.add_node("editor", agent)
    builder.add_node("after", after)
    builder.add_edge(START, "editor")
    builder.add_edge("editor", "after")
    builder.add_edge("after", END)
    saver = InMemorySaver()
    parent = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "p1"}}

    chunks = list(
        parent.stream(
            {"image": image_path, "instruction": INSTRUCTION},
            config,
            stream_mode="custom",
            subgraphs=True,
        )
    )
    progress = [(ns, ev) for ns, ev in chunks if ev["event"] == "tool_progress"]
    assert progress and all(ns and ns[0].startswith("editor:") for ns, _ in progress)

    final = parent.get_state(config).values
    assert final["stop_reason"] == "planner_stop" and final["note"] == "edited with planner_stop"
    assert final["result"]["sha256"] != ""
    # the subgraph checkpointed into the parent's saver, under its own namespace
    namespaces = {c.config["configurable"].get("checkpoint_ns", "") for c in saver.list(None)}
    assert any(ns.startswith("editor:") for ns in namespaces)


def test_agent_as_tool_in_a_tool_node(make_agent, image_path):
    tool = as_tool(make_agent(SplitPlanner(), PixelChangeCritic()))
    assert tool.name == "edit_image"
    # what the model fills in; the conversation's messages are injected by the ToolNode
    assert set(tool.tool_call_schema.model_json_schema()["properties"]) == {"image", "instruction"}

    call = {
        "name": "edit_image",
        "id": "call-1",
        "args": {"image": image_path, "instruction": INSTRUCTION},
    }
    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([tool]))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat-1"}}

    chunks = list(
        graph.stream(
            {"messages": [AIMessage(content="", tool_calls=[call])]},
            config,
            stream_mode="custom",
            subgraphs=True,
        )
    )
    assert any(ev["event"] == "tool_progress" for _, ev in chunks)

    message = graph.get_state(config).values["messages"][-1]
    text, block = message.content  # the summary, then the result as an image block
    summary = json.loads(text["text"])
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    assert summary["stop_reason"] == "planner_stop"
    assert summary["accepted_edits"] == ["make the left side red", "make the right side blue"]
    assert message.artifact["result"] == summary["result"]
    assert len(message.artifact["steps"]) == 3  # two edits and the stop


def test_tool_called_directly(make_agent, image_path):
    tool = as_tool(make_agent(SplitPlanner(), PixelChangeCritic()), name="paint")
    msg = tool.invoke(
        {
            "type": "tool_call",
            "id": "c",
            "name": "paint",
            "args": {"image": image_path, "instruction": "make the top green"},
        }
    )
    assert json.loads(msg.content[0]["text"])["accepted_edits"] == ["make the top green"]
