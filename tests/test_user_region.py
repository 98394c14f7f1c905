"""User regions: a ``mask`` or pixel XYXY ``boxes`` confine every edit; outside the region the
result (and every tried candidate) equals the input pixel for pixel; the critic judges in its
masked mode; a regional editor (MIRAGE) gets the boxes as its regions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from agent import InvalidInputError
from agent.testing import PaintEditor, PixelChangeCritic, ScriptedCritic, SplitPlanner
from tools.mirage.tool import RegionalEditor

INSTRUCTION = "make the image red, then make the image blue"  # whole-image edits


def outputs(out):
    return [s["output"] for s in out["steps"] if s.get("output")]


def assert_only_inside(store, out, region: np.ndarray, source: np.ndarray) -> None:
    images = [out["result"], *outputs(out)]
    assert len(images) >= 3  # the result and both edits
    for ref in images:
        arr = np.asarray(store.open(ref).convert("RGB"))
        assert (arr[~region] == source[~region]).all(), "a pixel outside the region changed"
    result = np.asarray(store.open(out["result"]).convert("RGB"))
    assert (result[region] != source[region]).any(), "nothing changed inside the region"


def test_boxes_confine_whole_image_edits(make_agent, image_path, store):
    source = np.asarray(Image.open(image_path).convert("RGB"))
    boxes = [[4, 6, 20, 18], [40, 30, 64, 48]]
    critic = ScriptedCritic([8.0] * 4)
    out = make_agent(SplitPlanner(), critic).invoke(
        {"image": image_path, "instruction": INSTRUCTION, "boxes": boxes}
    )
    assert out["stop_reason"] == "planner_stop"
    region = np.zeros(source.shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        region[y1:y2, x1:x2] = True
    assert_only_inside(store, out, region, source)
    assert all(call["masked"] for call in critic.calls)  # the critic in its masked mode
    edit = next(s for s in out["steps"] if s["kind"] == "edit")
    assert edit["info"]["user_region"]["boxes"] == boxes


def test_mask_confines_whole_image_edits(make_agent, image_path, store, tmp_path):
    source = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = source.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    region = (yy - 24) ** 2 + (xx - 32) ** 2 < 15**2  # a disc
    mask_path = tmp_path / "mask.png"
    Image.fromarray(np.where(region, 255, 0).astype(np.uint8), "L").save(mask_path)

    critic = ScriptedCritic([8.0] * 4)
    out = make_agent(SplitPlanner(), critic).invoke(
        {"image": image_path, "instruction": INSTRUCTION, "mask": str(mask_path)}
    )
    assert out["stop_reason"] == "planner_stop"
    assert_only_inside(store, out, region, source)
    assert all(call["masked"] for call in critic.calls)
    info = next(s for s in out["steps"] if s["kind"] == "edit")["info"]["user_region"]
    assert info["boxes"] == [[18, 10, 47, 39]]  # the disc's bounding box
    assert (store.open_mask(info["mask"]) == region).all()


def test_a_stored_mask_ref_works_too(make_agent, image_path, store):
    source = np.asarray(Image.open(image_path).convert("RGB"))
    region = np.zeros(source.shape[:2], bool)
    region[:, :10] = True
    out = make_agent(SplitPlanner(), PixelChangeCritic()).invoke(
        {"image": image_path, "instruction": INSTRUCTION, "mask": store.put_mask(region)}
    )
    assert_only_inside(store, out, region, source)


def test_a_regional_editor_gets_the_boxes_as_its_regions(make_agent, image_path, store):
    seen = []

    def sampler(image, instruction, regions, **kwargs):
        seen.append([(r.instruction, r.box.as_tuple()) for r in regions])
        painted = PaintEditor().edit(image, "make the image green")
        return SimpleNamespace(
            image=painted, timings={}, boxes=[r.box.as_tuple() for r in regions], calls=[]
        )

    source = np.asarray(Image.open(image_path).convert("RGB"))
    out = make_agent(SplitPlanner(), PixelChangeCritic(), editors=[RegionalEditor(sampler)]).invoke(
        {"image": image_path, "instruction": INSTRUCTION, "boxes": [[8, 8, 24, 40]]}
    )
    assert seen[0] == [("make the image red", (8, 8, 24, 40))]
    region = np.zeros(source.shape[:2], bool)
    region[8:40, 8:24] = True
    assert_only_inside(store, out, region, source)
    edit = next(s for s in out["steps"] if s["kind"] == "edit")
    assert edit["info"]["strategy"] == "mirage" and edit["info"]["regions"][0]["box"] == [
        8,
        8,
        24,
        40,
    ]


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"boxes": [[0, 0, 10, 10]], "mask": "m.png"}, "not both"),
        ({"boxes": [[0, 0, 65, 10]]}, "boxes item [0, 0, 65, 10] must have 0 <= x1 < x2 <= 64"),
        ({"boxes": [[5, 5, 5, 9]]}, "x1 < x2"),
        ({"boxes": [[0, 0, 1.5, 3]]}, "not four integer pixels"),
        ({"boxes": []}, "non-empty list"),
        ({"mask": "missing.png"}, "mask cannot be read: image file not found"),
        ({"mask": "small.png"}, "mask is 8x8, the image is 64x48"),
        ({"mask": "black.png"}, "is empty"),
    ],
)
def test_bad_regions_are_refused_before_any_model_work(
    make_agent, image_path, tmp_path, extra, needle
):
    Image.new("L", (8, 8), 255).save(tmp_path / "small.png")
    Image.new("L", (64, 48), 0).save(tmp_path / "black.png")
    extra = {k: (str(tmp_path / v) if isinstance(v, str) else v) for k, v in extra.items()}
    critic = ScriptedCritic([])
    with pytest.raises(InvalidInputError) as info:
        make_agent(SplitPlanner(), critic).invoke(
            {"image": image_path, "instruction": INSTRUCTION, **extra}
        )
    assert needle in str(info.value)
    assert critic.calls == []


def test_the_chat_graph_passes_boxes_on(store, image_path):
    import base64

    from langchain_core.messages import HumanMessage

    from agent import AgentConfig, create_chat_agent

    source = np.asarray(Image.open(image_path).convert("RGB"))
    chat = create_chat_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        critic=PixelChangeCritic(),
        editors=PaintEditor(),
        artifacts=store,
    )
    with open(image_path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    message = HumanMessage(
        content=[
            {"type": "text", "text": INSTRUCTION},
            {"type": "image", "base64": data, "mime_type": "image/png"},
        ]
    )
    out = chat.invoke({"messages": [message], "boxes": [[0, 0, 16, 16]]})
    assert "Applied 2 edits" in out["messages"][-1].content[0]["text"]
    # the chat graph's output is messages only; read the result from the image block
    block = out["messages"][-1].content[1]
    import io

    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(block["base64"]))).convert("RGB"))
    region = np.zeros(source.shape[:2], bool)
    region[:16, :16] = True
    assert (result[~region] == source[~region]).all() and (result[region] != source[region]).any()


def test_a_mask_file_is_read_under_the_same_file_roots_as_the_image(make_agent, tmp_path):
    from agent.testing import make_test_image

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir(), outside.mkdir()
    make_test_image(32, 32).save(inside / "in.png")
    Image.new("L", (32, 32), 255).save(outside / "mask.png")
    agent = make_agent(SplitPlanner(), PixelChangeCritic(), allowed_file_roots=(str(inside),))
    with pytest.raises(InvalidInputError, match="mask cannot be read"):
        agent.invoke(
            {
                "image": str(inside / "in.png"),
                "instruction": INSTRUCTION,
                "mask": str(outside / "mask.png"),
            }
        )
