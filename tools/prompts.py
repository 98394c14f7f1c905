"""Prompt texts that are interfaces, and the parser of the planner's answer.

A fine-tuned model only works with the format it was trained on, so these texts are kept
exactly as published, as constants.
"""

from __future__ import annotations

import re

from tools.contracts import PlannerDecision
from tools.errors import PlannerOutputError

__all__ = ["MIRA_PLANNER_TEMPLATE", "STOP_TOKEN", "render_planner_prompt", "parse_planner_output"]

#: The MIRA planner's instruction template, verbatim from the MIRA supplementary material,
#: section B.2 "System Prompts" / "Instruction Template" (Zeng, Hua, Luo). The two
#: ``<image>`` markers stand for the original and the latest edited image, in that order;
#: ``<instruction>`` for the full instruction set.
MIRA_PLANNER_TEMPLATE = """You are an image editing instruction planner. Your task: Based on the original image, the current edited image, and the final instruction set, determine the next image editing action that should be applied to move the image closer to the desired final result.

Inputs:

Original Image: <image>
 Latest Edited Image: <image>
 Instruction Set: <instruction>

Instructions:

1. Compare the original and latest edited image.
2. Determine which part(s) of the instruction set have already been applied.
3. Identify the next most important instruction that has not been completed.
4. Output the next editing instruction clearly and specifically.

Output format:

NEXT_EDITING_INSTRUCTION: <short, clear command to be applied next>"""

#: What the planner says when the instruction is complete (matched case-insensitively).
STOP_TOKEN = "<stop>"

_PREFIX = re.compile(r"next[\s_-]*editing[\s_-]*instruction\s*[:：]\s*(.*)", re.IGNORECASE)
_STOP = re.compile(r"^\W*(<\s*stop\s*>|stop)\W*$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"^<\s*short, clear command", re.IGNORECASE)
#: the labels of the lists a reasoning planner writes before its answer (the micro VLM's
#: ``--planner-reasoning``, ``agent.microworld.formats.plan_reason``): the cells each clause
#: changes, then the cells that changed between the two images; with ``--planner-clauses``
#: (``formats.plan_clauses``) the changed cells, then each clause with its cells and state
REASONING_LABELS = ("Cells to change", "Changed cells", "Clauses")
_REASONING = re.compile(rf"^(?:{'|'.join(REASONING_LABELS)}):", re.IGNORECASE)


def render_planner_prompt(instruction: str) -> str:
    """The template with the instruction filled in; the two ``<image>`` markers stay, for the
    caller to replace with its model's image tokens."""
    return MIRA_PLANNER_TEMPLATE.replace("<instruction>", instruction)


def parse_planner_output(raw: str) -> PlannerDecision:
    """Parse the planner's text into an edit or a stop. Never invents an instruction.

    Tolerates case, whitespace, markdown emphasis, quotes, extra prose around the
    ``NEXT_EDITING_INSTRUCTION:`` line, and a single bare line without the prefix.
    Raises ``PlannerOutputError`` (recoverable) for empty, ambiguous or placeholder output.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise PlannerOutputError(
            "the planner returned no text", raw=raw if isinstance(raw, str) else ""
        )
    text = raw.replace("**", "").replace("`", "").strip()
    matches = [m.group(1) for m in _PREFIX.finditer(text)]
    if matches:
        answer = _clean(matches[-1].splitlines()[0] if matches[-1].strip() else "")
        if not answer:
            raise PlannerOutputError("NEXT_EDITING_INSTRUCTION is empty", raw=raw)
    else:
        lines = [ln for ln in (_clean(x) for x in text.splitlines()) if ln]
        if any(_STOP.match(ln) for ln in lines) and len(lines) <= 2:
            return PlannerDecision(raw=raw, stop=True)
        if len(lines) != 1:
            raise PlannerOutputError(
                "no NEXT_EDITING_INSTRUCTION line and not a single bare instruction", raw=raw
            )
        answer = lines[0]
    if _STOP.match(answer) or STOP_TOKEN in answer.lower().replace(" ", ""):
        return PlannerDecision(raw=raw, stop=True)
    if _PLACEHOLDER.match(answer):
        raise PlannerOutputError("the planner echoed the template's placeholder", raw=raw)
    if not matches and _REASONING.match(answer):
        # reasoning with no answer after it (cut off by the token limit, or ended early)
        raise PlannerOutputError("the planner's reasoning has no answer after it", raw=raw)
    return PlannerDecision(raw=raw, stop=False, instruction=answer)


def _clean(line: str) -> str:
    return line.strip().strip("\"'“”").strip()
