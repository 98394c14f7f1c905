"""edit_image: the one-call convenience API."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent import AgentConfig, edit_image
from agent.testing import PaintEditor, ScriptedCritic, ScriptedPlanner, make_test_image


def test_pil_in_pil_out_with_trace(tmp_path):
    source = make_test_image(40, 30)
    res = edit_image(
        source,
        "make the left side red and the right side blue",
        preset="dry-run",
        max_steps=3,
        artifacts=tmp_path / "art",
    )
    assert res.stop_reason == "planner_stop" and res.image.size == (40, 30)
    assert [s["args"]["instruction"] for s in res.steps if s["kind"] == "edit"] == [
        "make the left side red",
        "the right side blue",
    ]  # split at "and"
    frames = res.intermediates()
    assert len(frames) == 2 and frames[-1].tobytes() == res.image.tobytes()
    assert res.image.getpixel((2, 15))[0] > source.getpixel((2, 15))[0]  # left half redder


def test_components_and_config_options(tmp_path, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red", "<stop>"])
    res = edit_image(
        image_path,
        "red",
        planner=planner,
        editors=PaintEditor(),
        critic=ScriptedCritic([9]),
        config=AgentConfig(check_regression=True),
        check_regression=False,
        artifacts=tmp_path / "art",
    )
    assert res.stop_reason == "planner_stop" and res.scores["overall"] == 9


def test_bad_option_is_a_validation_error(tmp_path):
    with pytest.raises(ValidationError, match="max_steps"):
        edit_image(make_test_image(8, 8), "x", preset="dry-run", max_steps=0, artifacts=tmp_path)
