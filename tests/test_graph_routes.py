"""Every route of the editing graph, driven by scripted doubles (wiring, not quality)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent import FatalToolError, GroundingError, PlannerOutputError
from agent.testing import PaintEditor, ScriptedCritic, ScriptedPlanner, SplitPlanner

SNAPSHOT = Path(__file__).parent / "snapshots" / "editing_graph.mmd"


def edits(out):
    return [s for s in out["steps"] if s["kind"] == "edit"]


def accepted(out):
    return [s["args"]["instruction"] for s in edits(out) if s["accepted"]]


class CountingEditor(PaintEditor):
    """PaintEditor that records (instruction, seed) per call and can fail on chosen calls."""

    def __init__(self, fail: dict[int, BaseException] | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.log: list[tuple[str, int | None]] = []
        self.fail = fail or {}
        self.delay = delay

    def edit(self, image, instruction, **kw):
        self.log.append((instruction, kw.get("seed")))
        if (exc := self.fail.get(len(self.log))) is not None:
            raise exc
        time.sleep(self.delay)
        return super().edit(image, instruction, **kw)


def test_planner_stop_at_once_returns_the_stored_input(make_agent, image_path, store):
    planner = ScriptedPlanner(["<stop>"])
    out = make_agent(planner, ScriptedCritic([])).invoke({"image": image_path, "instruction": "x"})
    assert out["stop_reason"] == "planner_stop"
    assert [s["kind"] for s in out["steps"]] == ["stop"]
    assert out["steps"][0]["planner"]["raw"] == "<stop>"
    assert out["result"]["width"] == 64 and out["result"]["height"] == 48
    assert out["scores"] == {}


def test_two_accepted_edits_then_stop(make_agent, image_path, store):
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "next_editing_instruction:  make the right blue ",
            "STOP",
        ]
    )
    critic = ScriptedCritic([8, 8, 8, 9])  # step, progress for each edit
    out = make_agent(planner, critic).invoke(
        {"image": image_path, "instruction": "red left, blue right"}
    )
    assert out["stop_reason"] == "planner_stop"
    assert accepted(out) == ["make the left red", "make the right blue"]
    e1, e2 = edits(out)
    assert e2["input"] == e1["output"] and out["result"] == e2["output"]
    assert e1["planner"]["raw"].startswith("NEXT_EDITING_INSTRUCTION")
    assert set(e1["timings"]) == {"plan_s", "act_s", "verify_s"}
    assert out["scores"]["overall"] == pytest.approx(9.0)
    # the planner saw the accepted edits in its history
    seen = planner.calls[2]["history"]
    assert [(h.instruction, h.outcome) for h in seen] == [
        ("make the left red", "accepted"),
        ("make the right blue", "accepted"),
    ]
    # pixels: the left half changed in step 1, the right half in step 2
    img = store.open(out["result"])
    src = store.open(e1["input"])
    assert img.getpixel((5, 24)) != src.getpixel((5, 24)) and img.getpixel(
        (60, 24)
    ) != src.getpixel((60, 24))


def test_max_steps_ends_with_budget_exhausted_on_last_accepted(make_agent, image_path):
    planner = ScriptedPlanner([f"NEXT_EDITING_INSTRUCTION: edit {i} red" for i in range(5)])
    critic = ScriptedCritic([8] * 10)
    out = make_agent(planner, critic, max_steps=2, check_regression=False).invoke(
        {"image": image_path, "instruction": "many edits"}
    )
    assert out["stop_reason"] == "budget_exhausted"
    assert accepted(out) == ["edit 0 red", "edit 1 red"]
    assert out["result"] == edits(out)[-1]["output"]
    assert planner.remaining == 2  # third decision made, not executed; no more calls
    assert "max_steps=2" in out["steps"][-1]["reason"]


def test_tool_call_budget_stops_before_a_call_that_does_not_fit(make_agent, image_path):
    planner = ScriptedPlanner([f"NEXT_EDITING_INSTRUCTION: edit {i} red" for i in range(5)])
    critic = ScriptedCritic([8] * 10)
    # plan(1) act(1) verify(1) = 3 per step; 7 calls: two steps, then plan, then no room for act.
    out = make_agent(planner, critic, max_tool_calls=7, check_regression=False).invoke(
        {"image": image_path, "instruction": "many edits"}
    )
    assert out["stop_reason"] == "budget_exhausted"
    assert len(accepted(out)) == 2
    assert "max_tool_calls=7" in out["steps"][-1]["reason"]


def test_time_budget(make_agent, image_path):
    planner = ScriptedPlanner([f"NEXT_EDITING_INSTRUCTION: edit {i} red" for i in range(5)])
    editor = CountingEditor(delay=0.3)
    out = make_agent(
        planner, ScriptedCritic([8] * 10), editors=editor, time_budget_s=0.2, check_regression=False
    ).invoke({"image": image_path, "instruction": "x"})
    assert out["stop_reason"] == "budget_exhausted"
    assert len(editor.log) == 1  # the running call was not cut off; the next was not started
    assert "time budget" in out["steps"][-1]["reason"]


def test_retry_with_new_seed_after_rejection_and_rollback(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the top green", "<stop>"])
    editor = CountingEditor()
    critic = ScriptedCritic([2.0, 8.0])  # first try rejected, retry accepted
    out = make_agent(
        planner, critic, editors=editor, max_retries_per_step=1, check_regression=False
    ).invoke({"image": image_path, "instruction": "green top"})
    assert out["stop_reason"] == "planner_stop"
    first, second = edits(out)
    assert (first["step"], first["attempt"], first["accepted"]) == (1, 0, False)
    assert (second["step"], second["attempt"], second["accepted"]) == (1, 1, True)
    assert "below min_step_score" in first["reason"]
    assert second["input"] == first["input"]  # rolled back: the retry edits the accepted image
    assert editor.log[0][1] != editor.log[1][1]  # new seed
    assert len(planner.calls) == 2  # the retry did not ask the planner again


def test_retries_used_up_go_back_to_plan_with_feedback(make_agent, image_path):
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the top green",
            "NEXT_EDITING_INSTRUCTION: make the top a bit greener",
            "<stop>",
        ]
    )
    critic = ScriptedCritic([1.0, 1.5, 8.0])
    out = make_agent(planner, critic, max_retries_per_step=1, check_regression=False).invoke(
        {"image": image_path, "instruction": "green top"}
    )
    history = planner.calls[1]["history"]
    assert [(h.instruction, h.outcome) for h in history] == [("make the top green", "rejected")]
    assert "after 2 tries" in history[0].reason and "below min_step_score" in history[0].reason
    assert accepted(out) == ["make the top a bit greener"]
    assert edits(out)[2]["input"] == edits(out)[0]["input"]  # still the source


def test_second_editor_used_on_retry(make_agent, image_path):
    a, b = CountingEditor(), CountingEditor()
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red", "<stop>"])
    out = make_agent(
        planner, ScriptedCritic([0.0, 9.0]), editors={"a": a, "b": b}, check_regression=False
    ).invoke({"image": image_path, "instruction": "red"})
    assert [s["tool"] for s in edits(out)] == ["a", "b"]
    assert len(a.log) == len(b.log) == 1


def test_regression_against_last_accepted_is_rejected(make_agent, image_path):
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "NEXT_EDITING_INSTRUCTION: make the right blue",
            "<stop>",
        ]
    )
    # edit 1: step 8, progress 7 -> accepted. edit 2: step 8 but progress 5 (< 7 - 0.5).
    critic = ScriptedCritic([8, 7, 8, 5])
    out = make_agent(planner, critic, max_retries_per_step=0).invoke(
        {"image": image_path, "instruction": "red left and blue right"}
    )
    first, second = edits(out)
    assert first["accepted"] and not second["accepted"]
    assert second["reason"].startswith("regression")
    assert out["result"] == first["output"]
    assert out["scores"]["overall"] == pytest.approx(7.0)
    assert critic.calls[1]["instruction"] == "red left and blue right"  # progress: full instruction


def test_invalid_critique_rejects_never_scores(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red", "<stop>"])
    out = make_agent(planner, ScriptedCritic([None]), max_retries_per_step=0).invoke(
        {"image": image_path, "instruction": "red"}
    )
    (rec,) = edits(out)
    assert not rec["accepted"] and "no valid critic score" in rec["reason"]
    assert rec["scores"]["step"]["valid"] is False and rec["scores"]["step"]["overall"] is None


def test_repeating_an_accepted_edit_is_no_progress(make_agent, image_path):
    planner = ScriptedPlanner(
        ["NEXT_EDITING_INSTRUCTION: make it red", "NEXT_EDITING_INSTRUCTION: Make it red."]
    )
    out = make_agent(planner, ScriptedCritic([8]), check_regression=False).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "no_progress"
    assert "repeated an accepted edit" in out["steps"][-1]["reason"]
    assert out["result"] == edits(out)[0]["output"]


def test_same_edit_failing_again_and_again_is_no_progress(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red"] * 5)
    critic = ScriptedCritic([1.0] * 10)
    out = make_agent(
        planner, critic, max_retries_per_step=0, max_repeats_of_rejected=1, check_regression=False
    ).invoke({"image": image_path, "instruction": "red"})
    assert out["stop_reason"] == "no_progress"
    assert len(edits(out)) == 2  # proposed, rejected, proposed again, rejected, then stop
    assert len(planner.calls) == 3


def test_unparseable_planner_output_is_fed_back(make_agent, image_path):
    planner = ScriptedPlanner(
        [
            "I think the image looks\nnice overall, hard to say.",
            "NEXT_EDITING_INSTRUCTION: make it red",
            "<stop>",
        ]
    )
    out = make_agent(planner, ScriptedCritic([8]), check_regression=False).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "planner_stop"
    assert out["steps"][0]["kind"] == "plan_error"
    assert out["steps"][0]["planner"]["raw"].startswith("I think")
    assert planner.calls[1]["history"][0].outcome == "error"
    assert accepted(out) == ["make it red"]


def test_unparseable_output_forever_ends_on_the_tool_budget(make_agent, image_path):
    planner = ScriptedPlanner([PlannerOutputError("garbage", raw="???")] * 10)
    out = make_agent(planner, ScriptedCritic([]), max_tool_calls=4, max_plan_errors=10).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "budget_exhausted"
    assert len(planner.calls) == 4


def test_unparseable_output_in_a_row_ends_the_run_with_error(make_agent, image_path):
    """A greedy planner gives the same unparseable answer to the same input: after
    ``max_plan_errors`` in a row (3 by default) the run ends with 'error', on its last accepted
    image; an answer that parses in between starts the count again."""
    garbage = PlannerOutputError("garbage", raw="???")
    planner = ScriptedPlanner([garbage] * 10)
    out = make_agent(planner, ScriptedCritic([]), max_tool_calls=100).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "error" and len(planner.calls) == 3
    assert [s["kind"] for s in out["steps"]] == ["plan_error"] * 3
    assert "3 in a row; max_plan_errors=3" in out["steps"][-1]["reason"]
    planner = ScriptedPlanner(
        [garbage, garbage, "NEXT_EDITING_INSTRUCTION: make it red", garbage, garbage, "<stop>"]
    )
    out = make_agent(planner, ScriptedCritic([8]), check_regression=False).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "planner_stop" and accepted(out) == ["make it red"]
    planner = ScriptedPlanner([garbage] * 10)
    out = make_agent(planner, ScriptedCritic([]), max_plan_errors=1).invoke(
        {"image": image_path, "instruction": "red"}
    )
    assert out["stop_reason"] == "error" and len(planner.calls) == 1


def test_recoverable_tool_error_goes_back_to_plan(make_agent, image_path):
    editor = CountingEditor(fail={1: GroundingError("no region found for 'the dog'")})
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the dog red",
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "<stop>",
        ]
    )
    out = make_agent(planner, ScriptedCritic([8]), editors=editor, check_regression=False).invoke(
        {"image": image_path, "instruction": "red dog"}
    )
    assert out["stop_reason"] == "planner_stop"
    assert out["steps"][0]["kind"] == "tool_error"
    feedback = planner.calls[1]["history"][0]
    assert feedback.outcome == "error" and "no region found" in feedback.reason
    assert accepted(out) == ["make the left red"]


def test_fatal_tool_error_ends_with_error_and_keeps_best_image(make_agent, image_path):
    editor = CountingEditor(fail={2: FatalToolError("CUDA out of memory")})
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "NEXT_EDITING_INSTRUCTION: make the right blue",
        ]
    )
    out = make_agent(planner, ScriptedCritic([8]), editors=editor, check_regression=False).invoke(
        {"image": image_path, "instruction": "x"}
    )
    assert out["stop_reason"] == "error"
    assert "out of memory" in out["steps"][-1]["reason"]
    assert out["result"] == edits(out)[0]["output"]


def test_unexpected_exception_propagates(make_agent, image_path):
    editor = CountingEditor(fail={1: ZeroDivisionError("bug")})
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red"])
    with pytest.raises(ZeroDivisionError):
        make_agent(planner, ScriptedCritic([]), editors=editor).invoke(
            {"image": image_path, "instruction": "x"}
        )


def test_critic_satisfied(make_agent, image_path):
    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "NEXT_EDITING_INSTRUCTION: make the right blue",
        ]
    )
    out = make_agent(planner, ScriptedCritic([8, 6, 8, 9.5]), stop_when_satisfied=9.0).invoke(
        {"image": image_path, "instruction": "x"}
    )
    assert out["stop_reason"] == "critic_satisfied"
    assert len(accepted(out)) == 2 and planner.remaining == 0


def test_split_planner_dry_run_end_to_end(make_agent, image_path):
    from agent.testing import PixelChangeCritic

    out = make_agent(SplitPlanner(), PixelChangeCritic()).invoke(
        {
            "image": image_path,
            "instruction": "make the left side red, then make the right side blue",
        }
    )
    assert out["stop_reason"] == "planner_stop"
    assert accepted(out) == ["make the left side red", "make the right side blue"]


def test_stream_reports_progress_events(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make it red", "<stop>"])
    agent = make_agent(planner, ScriptedCritic([8]), check_regression=False, num_inference_steps=3)
    events = list(agent.stream({"image": image_path, "instruction": "red"}, stream_mode="custom"))
    kinds = [e["event"] for e in events]
    assert kinds == [
        "run_start",
        "plan",
        "step_start",
        "tool_progress",
        "tool_progress",
        "tool_progress",
        "step_end",
        "plan",
    ]
    assert [(e["done"], e["total"]) for e in events if e["event"] == "tool_progress"] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]


def test_mermaid_drawing_snapshot(make_agent):
    drawing = make_agent(SplitPlanner(), ScriptedCritic([])).get_graph().draw_mermaid()
    if not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(drawing)
        pytest.fail(f"snapshot was missing; wrote {SNAPSHOT}: review it and commit it")
    assert drawing == SNAPSHOT.read_text(), "graph shape changed: update the snapshot if intended"


def test_critic_errors_reject_or_end(make_agent, image_path):
    from agent import RecoverableToolError

    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the left red", "<stop>"])
    critic = ScriptedCritic([RecoverableToolError("critic timed out"), 8.0])
    out = make_agent(planner, critic, max_retries_per_step=1, check_regression=False).invoke(
        {"image": image_path, "instruction": "x"}
    )
    first, second = edits(out)
    assert not first["accepted"] and "critic timed out" in first["reason"]
    assert second["accepted"] and out["stop_reason"] == "planner_stop"

    planner = ScriptedPlanner(
        [
            "NEXT_EDITING_INSTRUCTION: make the left red",
            "NEXT_EDITING_INSTRUCTION: make the right blue",
        ]
    )
    critic = ScriptedCritic([8.0, FatalToolError("critic model missing")])
    out = make_agent(planner, critic, check_regression=False).invoke(
        {"image": image_path, "instruction": "x"}
    )
    assert out["stop_reason"] == "error" and "critic model missing" in out["steps"][-1]["reason"]
    assert out["result"] == edits(out)[0]["output"]


def test_one_shot_first_edits_the_whole_instruction_then_plans(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the right blue", "<stop>"])
    editor = CountingEditor()
    critic = ScriptedCritic([8, 9])
    # no planner call is counted for the first step: edit and verify (2), plan, edit and
    # verify (3), the final plan (1) fit max_tool_calls=6 exactly
    out = make_agent(
        planner,
        critic,
        editors=editor,
        one_shot_first=True,
        check_regression=False,
        max_tool_calls=6,
    ).invoke({"image": image_path, "instruction": "red left, blue right"})
    assert out["stop_reason"] == "planner_stop"
    assert [i for i, _ in editor.log] == ["red left, blue right", "make the right blue"]
    first, second = edits(out)
    assert first["planner"] == {
        "raw": None,
        "action": {"stop": False, "instruction": "red left, blue right"},
        "one_shot_first": True,
    }
    assert second["input"] == first["output"]
    # the planner was first asked after the one-shot edit, and saw it accepted
    assert len(planner.calls) == 2
    assert [(h.instruction, h.outcome) for h in planner.calls[0]["history"]] == [
        ("red left, blue right", "accepted")
    ]


def test_one_shot_first_rejected_hands_over_to_the_planner(make_agent, image_path):
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the left red", "<stop>"])
    editor = CountingEditor()
    critic = ScriptedCritic([1.0, 1.0, 8.0])  # the one shot and its retry rejected
    out = make_agent(
        planner, critic, editors=editor, one_shot_first=True, check_regression=False
    ).invoke({"image": image_path, "instruction": "red left"})
    assert [i for i, _ in editor.log] == ["red left", "red left", "make the left red"]
    assert accepted(out) == ["make the left red"]
    history = planner.calls[0]["history"]
    assert [(h.instruction, h.outcome) for h in history] == [("red left", "rejected")]
    assert edits(out)[2]["input"] == edits(out)[0]["input"]  # still the source


def test_one_shot_first_is_off_by_default(make_agent, image_path):
    planner = ScriptedPlanner(["<stop>"])
    editor = CountingEditor()
    make_agent(planner, ScriptedCritic([]), editors=editor).invoke(
        {"image": image_path, "instruction": "red left"}
    )
    assert editor.log == [] and len(planner.calls) == 1


def test_one_shot_first_per_run_context(make_agent, image_path):
    planner = ScriptedPlanner(["<stop>"])
    editor = CountingEditor()
    out = make_agent(planner, ScriptedCritic([8]), editors=editor, check_regression=False).invoke(
        {"image": image_path, "instruction": "red left"}, context={"one_shot_first": True}
    )
    assert [i for i, _ in editor.log] == ["red left"] and accepted(out) == ["red left"]
