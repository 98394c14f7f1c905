"""Tool errors are answers: a chat agent built with LangChain's ``create_agent`` gets an error
tool message for bad input and carries on; the edit tool reads the user's image from the
conversation and answers with an image block."""

from __future__ import annotations

import base64
import io
import json

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from PIL import Image

from agent import as_tool
from agent.testing import (
    PaintEditor,
    PixelChangeCritic,
    ScriptedCritic,
    SideGrounder,
    SplitPlanner,
    make_test_image,
)
from tools.errors import RecoverableToolError
from tools.lc import CriticTool, EditorTool, GrounderTool, PlannerTool


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that ``create_agent`` can bind tools to (binding is a no-op)."""

    seen: list = []

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _call(args: dict, call_id: str = "call-1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "edit_image", "id": call_id, "args": args}])


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _block_image(block: dict) -> Image.Image:
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    return Image.open(io.BytesIO(base64.b64decode(block["base64"]))).convert("RGB")


def test_create_agent_gets_an_error_tool_message_for_a_bad_path_and_carries_on(
    make_agent, image_path, tmp_path
):
    from langchain.agents import create_agent

    missing = str(tmp_path / "nope.png")
    model = ToolCallingFake(
        messages=iter(
            [
                _call({"image": missing, "instruction": "make the top green"}, "c1"),
                _call({"image": image_path, "instruction": "make the top green"}, "c2"),
                AIMessage(content="done: the top is green"),
            ]
        ),
        seen=[],
    )
    tool = as_tool(make_agent(SplitPlanner(), PixelChangeCritic()))
    chat = create_agent(model, tools=[tool])

    out = chat.invoke({"messages": [HumanMessage("make the top of my picture green")]})

    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in tool_messages] == ["c1", "c2"]
    error, ok = tool_messages
    assert error.status == "error"
    assert "InvalidInputError" in error.content and "nope.png" in error.content
    # the model saw the error and tried again; the second call edited the image
    assert ok.status == "success"
    assert json.loads(ok.content[0]["text"])["accepted_edits"] == ["make the top green"]
    assert out["messages"][-1].content == "done: the top is green"
    assert any(isinstance(m, ToolMessage) and m.status == "error" for m in model.seen[1])


def test_create_agent_edits_the_image_of_the_users_message_and_answers_with_an_image_block(
    make_agent,
):
    from langchain.agents import create_agent

    source = make_test_image(64, 48)
    model = ToolCallingFake(
        messages=iter([_call({"instruction": "make the left side red"}), AIMessage("here")]),
        seen=[],
    )
    chat = create_agent(model, tools=[as_tool(make_agent(SplitPlanner(), PixelChangeCritic()))])
    user = HumanMessage(
        content=[
            {"type": "text", "text": "make the left side red"},
            {
                "type": "image",
                "base64": _data_url(source).split(",", 1)[1],
                "mime_type": "image/png",
            },
        ]
    )

    out = chat.invoke({"messages": [user]})

    (message,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert message.status == "success"
    text, block = message.content
    summary = json.loads(text["text"])
    assert summary["accepted_edits"] == ["make the left side red"]
    edited = _block_image(block)
    assert edited.size == source.size
    assert edited.tobytes() != source.tobytes()
    assert message.artifact["result"]["sha256"] == summary["result"]["sha256"]
    # the model's tool call carried no image: the schema it sees has none to fill but optional
    assert set(as_tool(object()).tool_call_schema.model_json_schema()["properties"]) == {
        "image",
        "instruction",
    }


def test_edit_tool_without_any_image_is_an_error_answer(make_agent):
    tool = as_tool(make_agent(SplitPlanner(), PixelChangeCritic()))
    msg = tool.invoke(
        {"type": "tool_call", "id": "c", "name": "edit_image", "args": {"instruction": "x"}}
    )
    assert msg.status == "error" and "image=None" in msg.content


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"image": "https://example.com/a.png", "instruction": "x"}, "'https' is not allowed"),
        ({"image": "data:image/png;base64,!!!", "instruction": "x"}, "invalid base64"),
        ({"image": "in.png", "instruction": "   "}, "instruction is empty"),
        ({"image": "in.png"}, "instruction"),  # a tool call that does not validate
    ],
)
def test_edit_tool_answers_bad_input_with_an_error(make_agent, image_path, args, needle):
    args = {k: (image_path if v == "in.png" else v) for k, v in args.items()}
    tool = as_tool(make_agent(SplitPlanner(), PixelChangeCritic()))
    msg = tool.invoke({"type": "tool_call", "id": "c", "name": "edit_image", "args": args})
    assert msg.status == "error", msg
    assert needle in msg.content


def test_edit_tool_answers_a_recoverable_failure_with_an_error(make_agent, image_path):
    class Failing:
        def next_action(self, *a, **k):
            raise RecoverableToolError("grounder found nothing", tool="planner")

    # The graph feeds recoverable errors back to its planner; one escaping the graph (here a
    # planner failing in a way the loop does not catch) still becomes an answer.
    tool = as_tool(make_agent(Failing(), PixelChangeCritic()))
    msg = tool.invoke(
        {
            "type": "tool_call",
            "id": "c",
            "name": "edit_image",
            "args": {"image": image_path, "instruction": "x"},
        }
    )
    assert msg.status == "error" and "grounder found nothing" in msg.content


def _tool_call(tool, args: dict) -> ToolMessage:
    return tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": args})


def test_every_lc_tool_answers_an_unknown_or_malformed_ref_with_an_error(store):
    good = store.put(make_test_image(16, 16))
    unknown = {**good, "sha256": "0" * 64, "uri": good["uri"].replace(good["sha256"], "0" * 64)}
    malformed = {"uri": "file:///etc/passwd", "sha256": "../../x", "width": 1, "height": 1}
    tools = [
        (EditorTool(editor=PaintEditor(), store=store), {"instruction": "make it red"}, "image"),
        (GrounderTool(grounder=SideGrounder(), store=store), {"expression": "left"}, "image"),
        (
            CriticTool(critic=PixelChangeCritic(), store=store),
            {"source": good, "instruction": "x"},
            "edited",
        ),
        (
            PlannerTool(planner=SplitPlanner(), store=store),
            {"original": good, "instruction": "x"},
            "current",
        ),
    ]
    for tool, args, field in tools:
        for bad in (unknown, malformed):
            msg = _tool_call(tool, {**args, field: bad})
            assert msg.status == "error", (tool.name, msg)
            assert f"{field}=" in msg.content or field in msg.content, msg.content
        # a ref that is no ImageRef at all fails validation, also as an answer
        msg = _tool_call(tool, {**args, field: "not a ref"})
        assert msg.status == "error", (tool.name, msg)


def test_critic_tool_answers_a_recoverable_critic_failure(store):
    a = store.put(make_test_image(16, 16))

    broken = ScriptedCritic([RecoverableToolError("critic output unparseable", tool="critic")])
    msg = _tool_call(
        CriticTool(critic=broken, store=store),
        {"source": a, "edited": a, "instruction": "x"},
    )
    assert msg.status == "error" and "critic output unparseable" in msg.content
