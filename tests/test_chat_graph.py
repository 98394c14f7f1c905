"""The chat-native graph: a user message with text and an image block in, an AI message with
an account of the steps and the result as an image block out; progress streamed."""

from __future__ import annotations

import base64
import io

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from agent import AgentConfig, create_chat_agent
from agent.testing import PaintEditor, PixelChangeCritic, SplitPlanner, make_test_image

INSTRUCTION = "make the left side red, then make the right side blue"


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def user_message(image: Image.Image, text: str = INSTRUCTION) -> HumanMessage:
    return HumanMessage(
        content=[
            {"type": "text", "text": text},
            {
                "type": "image",
                "source_type": "base64",
                "data": png_b64(image),
                "mime_type": "image/png",
            },
        ]
    )


def decode(block: dict) -> Image.Image:
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    return Image.open(io.BytesIO(base64.b64decode(block["base64"]))).convert("RGB")


def chat_agent(store, checkpointer=None):
    return create_chat_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        critic=PixelChangeCritic(),
        editors=PaintEditor(),
        artifacts=store,
        checkpointer=checkpointer,
    )


def test_user_message_with_an_image_becomes_an_ai_message_with_the_result(store):
    source = make_test_image(64, 48)
    graph = chat_agent(store, InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}}

    chunks = list(
        graph.stream(
            {"messages": [user_message(source)]},
            config,
            stream_mode=["updates", "custom"],
            subgraphs=True,
        )
    )

    custom = [(ns, data) for ns, mode, data in chunks if mode == "custom"]
    progress = [(ns, ev) for ns, ev in custom if ev["event"] == "tool_progress"]
    assert progress and all(ns and ns[0].startswith("edit:") for ns, _ in progress)
    top_nodes = [n for ns, mode, data in chunks if mode == "updates" and not ns for n in data]
    assert top_nodes == ["read_request", "edit", "respond"]

    messages = graph.get_state(config).values["messages"]
    assert len(messages) == 2
    answer = messages[-1]
    assert isinstance(answer, AIMessage)
    text, block = answer.content
    assert "Applied 2 edits; stopped: planner_stop." in text["text"]
    assert "'make the left side red' with PaintEditor: accepted" in text["text"]
    assert "'make the right side blue' with PaintEditor: accepted" in text["text"]
    edited = decode(block)
    assert edited.size == source.size and edited.tobytes() != source.tobytes()
    # the image block is the editing graph's result
    result = graph.get_state(config).values["result"]
    assert store.open(result).tobytes() == edited.tobytes()


def test_run_context_reaches_the_editing_subgraph(store):
    out = chat_agent(store).invoke(
        {"messages": [user_message(make_test_image(32, 32))]}, context={"max_steps": 1}
    )
    text = out["messages"][-1].content[0]["text"]
    assert "Applied 1 edit; stopped: budget_exhausted." in text


def test_openai_style_image_url_block_is_read(store):
    url = "data:image/png;base64," + png_b64(make_test_image(32, 32))
    message = HumanMessage(
        content=[
            {"type": "text", "text": "make the top green"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )
    out = chat_agent(store).invoke({"messages": [message]})
    assert "Applied 1 edit" in out["messages"][-1].content[0]["text"]


def test_requests_it_cannot_serve_are_answered_not_raised(store):
    graph = chat_agent(store)
    cases = [
        (HumanMessage("make it red"), "Attach the image"),
        (user_message(make_test_image(16, 16), text="  "), "has no text"),
        (
            HumanMessage(
                content=[
                    {"type": "text", "text": "make it red"},
                    {"type": "image", "file_id": "file-123"},
                ]
            ),
            "cannot read the image",
        ),
        (
            HumanMessage(
                content=[
                    {"type": "text", "text": "make it red"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ]
            ),
            "'https' is not allowed",
        ),
    ]
    for message, needle in cases:
        out = graph.invoke({"messages": [message]})
        answer = out["messages"][-1]
        assert isinstance(answer, AIMessage) and needle in answer.content, answer.content


def test_chat_graph_mermaid_snapshot(store):
    from pathlib import Path

    snapshot = Path(__file__).parent / "snapshots" / "chat_graph.mmd"
    drawing = chat_agent(store).get_graph().draw_mermaid()
    if not snapshot.exists():
        snapshot.write_text(drawing)
        pytest.fail(f"snapshot was missing; wrote {snapshot}: review it and commit it")
    assert drawing == snapshot.read_text(), "graph shape changed: update the snapshot if intended"
