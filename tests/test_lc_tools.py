"""The tool contracts as langchain-core tools taking ImageRefs."""

from __future__ import annotations

import numpy as np

from agent.testing import (
    PaintEditor,
    PixelChangeCritic,
    ScriptedPlanner,
    SideGrounder,
    make_test_image,
)
from tools.contracts import Box, Grounding
from tools.lc import CriticTool, EditorTool, GrounderTool, PlannerTool


def test_editor_tool(store):
    src = store.put(make_test_image(32, 32))
    tool = EditorTool(editor=PaintEditor(), store=store)
    out = tool.invoke({"image": src, "instruction": "make the left red", "seed": 3})
    assert out["sha256"] != src["sha256"] and (out["width"], out["height"]) == (32, 32)
    assert store.contains(out)
    assert set(tool.args) == {
        "image",
        "instruction",
        "seed",
        "num_inference_steps",
        "guidance_scale",
    }


def test_grounder_tool_boxes_masks_and_recoverable_error(store):
    src = store.put(make_test_image(40, 20))
    out = GrounderTool(grounder=SideGrounder(), store=store).invoke(
        {"image": src, "expression": "the left half"}
    )
    assert out["boxes"] == [[0, 0, 20, 20]] and out["masks"] is None
    # a recoverable error comes back as the tool's answer, for the model to read
    text = GrounderTool(grounder=SideGrounder(), store=store).invoke(
        {"image": src, "expression": "the dog"}
    )
    assert "no region found for 'the dog'" in text

    class MaskGrounder:
        def ground(self, image, expression):
            mask = np.zeros((image.height, image.width), bool)
            mask[:, :5] = True
            return Grounding(
                expression=expression, boxes=[Box(x1=0, y1=0, x2=5, y2=20)], masks=[mask]
            )

    out = GrounderTool(grounder=MaskGrounder(), store=store).invoke(
        {"image": src, "expression": "x"}
    )
    assert store.open_mask(out["masks"][0])[:, :5].all()


def test_critic_and_planner_tools(store):
    a = store.put(make_test_image(32, 32))
    b = store.put(PaintEditor().edit(store.open(a), "make it red"))
    scores = CriticTool(critic=PixelChangeCritic(), store=store).invoke(
        {"source": a, "edited": b, "instruction": "make it red"}
    )
    assert scores["valid"] and scores["overall"] > 0 and "changed" in scores["reasoning"]
    same = CriticTool(critic=PixelChangeCritic(), store=store).invoke(
        {"source": a, "edited": a, "instruction": "make it red"}
    )
    assert same["prompt_following"] == 0 and same["overall"] == 0
    plan = PlannerTool(
        planner=ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: x"]), store=store
    ).invoke(
        {
            "original": a,
            "current": b,
            "instruction": "x",
            "history": [{"instruction": "y", "outcome": "accepted"}],
        }
    )
    assert plan == {"raw": "NEXT_EDITING_INSTRUCTION: x", "stop": False, "instruction": "x"}
