"""The MIRA planner prompt and its parser, re-exported from ``tools.prompts`` (where they live)."""

from tools.prompts import (
    MIRA_PLANNER_TEMPLATE,
    STOP_TOKEN,
    parse_planner_output,
    render_planner_prompt,
)

__all__ = ["MIRA_PLANNER_TEMPLATE", "STOP_TOKEN", "render_planner_prompt", "parse_planner_output"]
