"""AgentConfig validation, presets, component resolution, the backend registry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent import AgentConfig, create_edit_agent
from agent.testing import PaintEditor, ScriptedCritic, ScriptedPlanner, SplitPlanner
from tools import registry


def test_defaults_and_descriptions():
    cfg = AgentConfig()
    assert (cfg.max_steps, cfg.preset, cfg.editors) == (5, None, ())
    schema = AgentConfig.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_steps": 0}, ["max_steps", "0"]),
        ({"min_step_score": 11}, ["min_step_score", "11"]),
        ({"preset": "flux9"}, ["unknown preset", "'flux9'", "dry-run"]),
        ({"allowed_uri_schemes": ("http",)}, ["unsupported URI schemes", "http"]),
        ({"max_stepz": 3}, ["max_stepz"]),
        ({"stop_when_satisfied": 8, "check_regression": False}, ["stop_when_satisfied"]),
    ],
)
def test_clear_validation_errors(kwargs, words):
    with pytest.raises(ValidationError) as info:
        AgentConfig(**kwargs)
    assert all(w in str(info.value) for w in words)


def test_preset_fills_unset_backends_only():
    cfg = AgentConfig(preset="dry-run", planner="mine")
    assert cfg.planner == "mine" and cfg.editors == ("paint",) and cfg.critic == "pixel-change"


def test_micro_preset_starts_from_one_shot_and_stops_on_the_critics_word():
    """The micro preset's loop settings (chosen on validation cases, docs/loop.md): one shot
    first and the critic's stop at 10, in the config and the graph's context defaults; a
    config that names either keeps its own value, even False or None; other presets set
    neither; and check_regression=False, which the critic's stop reads, is refused by name."""
    cfg = AgentConfig(preset="micro")
    assert (cfg.one_shot_first, cfg.stop_when_satisfied) == (True, 10.0)
    ctx = cfg.context()
    assert (ctx.one_shot_first, ctx.stop_when_satisfied) == (True, 10.0)
    off = AgentConfig(preset="micro", one_shot_first=False, stop_when_satisfied=None)
    assert (off.one_shot_first, off.stop_when_satisfied) == (False, None)
    assert AgentConfig(preset="micro", stop_when_satisfied=9).stop_when_satisfied == 9
    for preset in ("dry-run", "tiny", None):
        cfg = AgentConfig(preset=preset)
        assert (cfg.one_shot_first, cfg.stop_when_satisfied) == (False, None)
    with pytest.raises(ValidationError, match="preset 'micro' sets stop_when_satisfied=10.0"):
        AgentConfig(preset="micro", check_regression=False)
    cfg = AgentConfig(preset="micro", check_regression=False, stop_when_satisfied=None)
    assert cfg.one_shot_first and cfg.stop_when_satisfied is None


def test_components_override_config(store, image_path):
    planner = ScriptedPlanner(["<stop>"])
    agent = create_edit_agent(AgentConfig(preset="dry-run"), planner=planner, artifacts=store)
    agent.invoke({"image": image_path, "instruction": "x"})
    assert len(planner.calls) == 1  # the given planner ran, not the preset's


def test_missing_component_says_how_to_provide_it(store):
    with pytest.raises(ValueError, match=r"no planner: pass planner=.*preset"):
        create_edit_agent(
            AgentConfig(), editors=PaintEditor(), critic=ScriptedCritic([]), artifacts=store
        )
    with pytest.raises(ValueError, match="no editor"):
        create_edit_agent(
            AgentConfig(), planner=SplitPlanner(), critic=ScriptedCritic([]), artifacts=store
        )
    with pytest.raises(TypeError, match="no edit"):
        create_edit_agent(AgentConfig(preset="dry-run"), editors=[object()], artifacts=store)
    with pytest.raises(TypeError, match="AgentConfig"):
        create_edit_agent({"max_steps": 3})


def test_registry_unknown_and_custom_backends(store, image_path):
    with pytest.raises(ValueError, match=r"unknown editor backend 'flux'.*paint"):
        registry.build("editor", "flux")
    with pytest.raises(ValueError, match="unknown tool kind"):
        registry.available("painter")
    registry.register("planner", "test-stopper", lambda: ScriptedPlanner(["<stop>"]), replace=True)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("planner", "test-stopper", SplitPlanner)
    agent = create_edit_agent(
        AgentConfig(preset="dry-run", planner="test-stopper"), artifacts=store
    )
    assert agent.invoke({"image": image_path, "instruction": "x"})["stop_reason"] == "planner_stop"


def test_step_seeds_distinct_and_reproducible():
    cfg = AgentConfig(seed=7)
    seeds = {cfg.step_seed(s, a) for s in range(1, 6) for a in range(4)}
    assert len(seeds) == 20 and cfg.step_seed(2, 1) == AgentConfig(seed=7).step_seed(2, 1)
