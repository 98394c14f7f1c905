"""Human approval (``approve_edits`` in the run context): before each planned edit the graph
interrupts with the edit, the current image and the history; ``Command(resume=...)`` approves,
replaces or stops it."""

from __future__ import annotations

import base64
import io

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agent.testing import PixelChangeCritic, SplitPlanner

INSTRUCTION = "make the left side red, then make the right side blue"
APPROVE = {"approve_edits": True}


def run(graph, value, thread="t"):
    return graph.invoke(value, {"configurable": {"thread_id": thread}}, context=APPROVE)


def asked(out) -> dict:
    (pending,) = out["__interrupt__"]
    return pending.value


def edits(out):
    return [s for s in out["steps"] if s["kind"] == "edit"]


@pytest.fixture
def graph(make_agent):
    return make_agent(SplitPlanner(), PixelChangeCritic(), checkpointer=InMemorySaver())


def test_approve_each_edit(graph, image_path):
    out = run(graph, {"image": image_path, "instruction": INSTRUCTION})
    first = asked(out)
    assert first["kind"] == "approve_edit" and first["step"] == 1
    assert first["edit"] == "make the left side red" and first["instruction"] == INSTRUCTION
    assert first["current"] == first["source"] and first["history"] == []
    assert "steps" not in out or not edits(out)  # nothing edited before the answer

    out = run(graph, Command(resume="approve"))
    second = asked(out)
    assert second["edit"] == "make the right side blue"
    assert second["history"] == [
        {"instruction": "make the left side red", "outcome": "accepted", "reason": None}
    ]
    assert second["current"] != second["source"]  # the accepted first edit

    out = run(graph, Command(resume={"action": "approve"}))
    assert "__interrupt__" not in out and out["stop_reason"] == "planner_stop"
    assert [s["args"]["instruction"] for s in edits(out)] == [
        "make the left side red",
        "make the right side blue",
    ]
    assert [s["planner"]["reviewer"] for s in edits(out)] == [{"action": "approve"}] * 2


def test_replace_runs_the_reviewers_instruction(graph, image_path, store):
    run(graph, {"image": image_path, "instruction": INSTRUCTION})
    out = run(graph, Command(resume={"action": "replace", "instruction": "make the top green"}))
    second = asked(out)
    assert second["history"][0]["instruction"] == "make the top green"
    out = run(graph, Command(resume="approve"))
    first = edits(out)[0]
    assert first["args"]["instruction"] == "make the top green" and first["accepted"]
    assert first["planner"]["reviewer"] == {
        "action": "replace",
        "replaced": "make the left side red",
        "instruction": "make the top green",
    }
    # the editor painted the top, not the left side
    before, after = store.open(first["input"]), store.open(first["output"])
    w, h = before.size
    assert before.crop((0, h - 4, w, h)).tobytes() == after.crop((0, h - 4, w, h)).tobytes()
    assert before.crop((0, 0, w, 4)).tobytes() != after.crop((0, 0, w, 4)).tobytes()


def test_stop_ends_the_run_on_the_last_accepted_image(graph, image_path):
    out = run(graph, {"image": image_path, "instruction": INSTRUCTION})
    out = run(graph, Command(resume="approve"))
    out = run(graph, Command(resume="stop"))
    assert "__interrupt__" not in out and out["stop_reason"] == "user_stop"
    assert [s["args"]["instruction"] for s in edits(out)] == ["make the left side red"]
    assert out["result"] == edits(out)[0]["output"]
    assert "the reviewer stopped before 'make the right side blue'" in out["steps"][-1]["reason"]


def test_stop_before_any_edit_returns_the_input(graph, image_path):
    run(graph, {"image": image_path, "instruction": INSTRUCTION})
    out = run(graph, Command(resume={"action": "stop"}))
    assert out["stop_reason"] == "user_stop" and not edits(out)
    assert (
        out["result"]["sha256"]
        == graph.get_state({"configurable": {"thread_id": "t"}}).values["source"]["sha256"]
    )


@pytest.mark.parametrize(
    "answer", ["yes", {"action": "replace"}, {"action": "replace", "instruction": " "}, 1]
)
def test_an_unknown_answer_is_refused_naming_it(graph, image_path, answer):
    run(graph, {"image": image_path, "instruction": INSTRUCTION})
    with pytest.raises(ValueError, match="is not a review answer") as info:
        run(graph, Command(resume=answer))
    assert repr(answer) in str(info.value)


def test_without_approve_edits_nothing_pauses(graph, image_path):
    out = graph.invoke(
        {"image": image_path, "instruction": INSTRUCTION}, {"configurable": {"thread_id": "n"}}
    )
    assert "__interrupt__" not in out and out["stop_reason"] == "planner_stop"


def test_approval_through_the_chat_graph(store):
    from langchain_core.messages import HumanMessage

    from agent import AgentConfig, create_chat_agent
    from agent.testing import PaintEditor, make_test_image

    chat = create_chat_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        critic=PixelChangeCritic(),
        editors=PaintEditor(),
        artifacts=store,
        checkpointer=InMemorySaver(),
    )
    buf = io.BytesIO()
    make_test_image(32, 32).save(buf, format="PNG")
    png_b64 = base64.b64encode(buf.getvalue()).decode()
    message = HumanMessage(
        content=[
            {"type": "text", "text": INSTRUCTION},
            {"type": "image", "base64": png_b64, "mime_type": "image/png"},
        ]
    )
    out = run(chat, {"messages": [message]}, thread="c")
    assert asked(out)["edit"] == "make the left side red"
    out = run(chat, Command(resume="approve"), thread="c")
    assert asked(out)["edit"] == "make the right side blue"
    out = run(chat, Command(resume="stop"), thread="c")
    text = out["messages"][-1].content[0]["text"]
    assert text.startswith("Applied 1 edit; stopped: user_stop.")
