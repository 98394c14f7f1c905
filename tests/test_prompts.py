"""Planner template constant and the tolerant planner-output parser."""

from __future__ import annotations

import pytest

from agent import PlannerOutputError
from agent.prompts import MIRA_PLANNER_TEMPLATE, parse_planner_output, render_planner_prompt


def test_template_is_the_published_one():
    assert MIRA_PLANNER_TEMPLATE.startswith("You are an image editing instruction planner.")
    assert MIRA_PLANNER_TEMPLATE.count("<image>") == 2
    assert (
        "4. Output the next editing instruction clearly and specifically." in MIRA_PLANNER_TEMPLATE
    )
    assert MIRA_PLANNER_TEMPLATE.endswith(
        "NEXT_EDITING_INSTRUCTION: <short, clear command to be applied next>"
    )
    prompt = render_planner_prompt("make the sky pink")
    assert "Instruction Set: make the sky pink" in prompt and "<instruction>" not in prompt


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("NEXT_EDITING_INSTRUCTION: make the car red", "make the car red"),
        ("next_editing_instruction:make the car red  ", "make the car red"),
        ("Next Editing Instruction: Make the car red.", "Make the car red."),
        (
            "The car is still blue.\nNEXT_EDITING_INSTRUCTION: make the car red\nThat's it.",
            "make the car red",
        ),
        ("**NEXT_EDITING_INSTRUCTION:** `make the car red`", "make the car red"),
        ('NEXT_EDITING_INSTRUCTION: "make the car red"', "make the car red"),
        ("make the car red", "make the car red"),  # a single bare line: prefix missing
        (  # a reasoning planner's cell lists before its answer (--planner-reasoning)
            "Cells to change: r0c1 | r1c2. Changed cells: r0c1. "
            "NEXT_EDITING_INSTRUCTION: make the car red",
            "make the car red",
        ),
    ],
)
def test_edits(raw, expected):
    decision = parse_planner_output(raw)
    assert not decision.stop and decision.instruction == expected and decision.raw == raw


@pytest.mark.parametrize(
    "raw",
    [
        "<stop>",
        "<STOP>",
        " < stop > ",
        "STOP",
        "stop.",
        "NEXT_EDITING_INSTRUCTION: <stop>",
        "All edits are done.\n<stop>",
        "Cells to change: r0c1 | r1c2. Changed cells: r0c1, r1c2. <stop>",
    ],
)
def test_stops(raw):
    decision = parse_planner_output(raw)
    assert decision.stop and decision.instruction is None


@pytest.mark.parametrize(
    "raw, match",
    [
        ("", "no text"),
        ("   \n ", "no text"),
        ("NEXT_EDITING_INSTRUCTION:", "empty"),
        ("NEXT_EDITING_INSTRUCTION: <short, clear command to be applied next>", "placeholder"),
        ("I looked at both images.\nThey differ in many ways.", "no NEXT_EDITING_INSTRUCTION"),
        # a reasoned answer cut off by the token limit, or ended after its lists: not an edit
        ("Cells to change: r0c1 | r1c2. Changed cells: r0c1, r1", "no answer after it"),
        ("Cells to change: r0c1. Changed cells: none.", "no answer after it"),
        ("changed cells: r0c1.", "no answer after it"),
    ],
)
def test_unparseable_is_a_typed_error_keeping_the_raw_text(raw, match):
    with pytest.raises(PlannerOutputError, match=match) as info:
        parse_planner_output(raw)
    assert info.value.raw == raw
