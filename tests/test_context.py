"""Per-run settings are LangGraph context: ``invoke(..., context={...})`` changes one run."""

from __future__ import annotations

import pytest

from agent import AgentConfig
from agent.testing import PaintEditor, ScriptedCritic, ScriptedPlanner
from graphs.context import CONTEXT_KEYS, EditContext


def _planner():
    return ScriptedPlanner([f"NEXT_EDITING_INSTRUCTION: edit {i} red" for i in range(5)])


def _edits(out):
    return [s for s in out["steps"] if s["kind"] == "edit"]


def test_context_max_steps_1_makes_exactly_one_edit(make_agent, image_path):
    graph = make_agent(_planner(), ScriptedCritic([8] * 10), check_regression=False)
    out = graph.invoke({"image": image_path, "instruction": "many edits"},
                       context={"max_steps": 1})
    assert len(_edits(out)) == 1 and _edits(out)[0]["accepted"]
    assert out["stop_reason"] == "budget_exhausted"
    assert "max_steps=1" in out["steps"][-1]["reason"]


def test_context_keeps_the_graphs_other_settings(make_agent, image_path):
    # The graph was built with check_regression=False: one critic call per edit. A run that
    # only sets max_steps keeps that (the schema's defaults are the graph's AgentConfig).
    critic = ScriptedCritic([8] * 10)
    graph = make_agent(_planner(), critic, check_regression=False, max_steps=4)
    out = graph.invoke({"image": image_path, "instruction": "x"}, context={"max_steps": 2})
    assert len(_edits(out)) == 2
    assert all(e["scores"]["progress"] is None for e in _edits(out))


def test_without_context_the_built_settings_apply(make_agent, image_path):
    graph = make_agent(_planner(), ScriptedCritic([8] * 10), check_regression=False, max_steps=3)
    out = graph.invoke({"image": image_path, "instruction": "x"})
    assert len(_edits(out)) == 3


def test_context_seed_changes_the_editor_seed(make_agent, image_path):
    seeds = []

    class SeedEditor(PaintEditor):
        def edit(self, image, instruction, **kw):
            seeds.append(kw["seed"])
            return super().edit(image, instruction, **kw)

    graph = make_agent(_planner(), ScriptedCritic([8] * 10), editors=SeedEditor(),
                       check_regression=False, max_steps=1)
    graph.invoke({"image": image_path, "instruction": "x"})
    graph.invoke({"image": image_path, "instruction": "x"}, context={"seed": 7})
    assert seeds == [AgentConfig().step_seed(1, 0), AgentConfig(seed=7).step_seed(1, 0)]


def test_unknown_context_key_is_a_clear_error(make_agent, image_path):
    graph = make_agent(_planner(), ScriptedCritic([8] * 10))
    with pytest.raises(ValueError, match=r"unknown context key\(s\) \['max_stepz'\].*known keys"):
        graph.invoke({"image": image_path, "instruction": "x"}, context={"max_stepz": 1})


@pytest.mark.parametrize(("key", "value", "match"), [
    ("max_steps", 0, r"max_steps=0 is out of range: must be >= 1 and <= 100"),
    ("max_steps", "3", r"max_steps='3' must be a int"),
    ("check_regression", 1, r"check_regression=1 must be a bool"),
    ("time_budget_s", 0, r"time_budget_s=0 is out of range: must be > 0"),
    ("min_step_score", 11.0, r"min_step_score=11.0 is out of range"),
])
def test_invalid_context_value_is_a_clear_error(make_agent, image_path, key, value, match):
    graph = make_agent(_planner(), ScriptedCritic([8] * 10))
    with pytest.raises(ValueError, match=match):
        graph.invoke({"image": image_path, "instruction": "x"}, context={key: value})


def test_context_schema_has_the_graphs_defaults_and_descriptions(make_agent):
    graph = make_agent(_planner(), ScriptedCritic([]), max_steps=3, min_step_score=4.5)
    schema = graph.get_context_jsonschema()
    props = schema["properties"]
    assert set(props) == CONTEXT_KEYS
    assert props["max_steps"]["default"] == 3 and props["min_step_score"]["default"] == 4.5
    assert all(p.get("description") for p in props.values()), props


def test_agent_config_and_context_agree():
    """Every per-run key is an AgentConfig field with the same default and description."""
    schema = AgentConfig.model_json_schema()["properties"]
    ctx = EditContext()
    for key in CONTEXT_KEYS:
        assert AgentConfig.model_fields[key].default == getattr(ctx, key), key
        field = next(f for f in __import__("dataclasses").fields(EditContext) if f.name == key)
        assert schema[key]["description"] == field.metadata["description"], key
    assert AgentConfig(max_steps=2, seed=3).context() == EditContext(max_steps=2, seed=3)
