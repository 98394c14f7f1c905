"""Vision-language backends: MIRA planner, Qwen-VL grounder (+ SAM2), EditScore critic.

Importing this package is cheap: torch, transformers, peft and sam2 load on first use.
Registry factories (``"module:attribute"`` strings for ``tools.registry``):

- tiny, random weights, CPU: ``tools.vlm.tiny:tiny_mira_planner``, ``tools.vlm.tiny:tiny_grounder``,
  ``tools.vlm.tiny:tiny_editscore_critic`` (grounder and critic share one tiny Qwen3-VL);
- real weights, local only: ``tools.vlm.planner:mira_7b`` / ``mira_3b``,
  ``tools.vlm.grounder:qwen3vl_8b`` / ``qwen25vl_7b``,
  ``tools.vlm.critic:editscore_qwen3vl_8b`` / ``editscore_qwen3vl_4b`` / ``editscore_7b``;
- on an OpenAI-compatible server (vLLM): ``tools.vlm.served:served_planner``,
  ``served_grounder``, ``served_critic`` (``docs/serving.md``).
"""

from tools.vlm._qwen import QwenVL, RawPrompt, load_qwen_vl, qwen_vl_from_config
from tools.vlm.critic import (
    AveragedCritique,
    ChatModelCritic,
    EditScoreCritic,
    ScoreParseError,
    average_passes,
    editscore_pass,
    parse_editscore_output,
)
from tools.vlm.grounder import BoxParseError, QwenVLGrounder, parse_boxes, to_source_box
from tools.vlm.planner import ChatModelPlanner, MiraPlanner
from tools.vlm.sam2_refiner import Sam2Refiner, build_sam2_predictor, load_sam2_predictor

__all__ = [
    "QwenVL",
    "RawPrompt",
    "load_qwen_vl",
    "qwen_vl_from_config",
    "MiraPlanner",
    "ChatModelPlanner",
    "QwenVLGrounder",
    "BoxParseError",
    "parse_boxes",
    "to_source_box",
    "Sam2Refiner",
    "build_sam2_predictor",
    "load_sam2_predictor",
    "EditScoreCritic",
    "ChatModelCritic",
    "AveragedCritique",
    "ScoreParseError",
    "parse_editscore_output",
    "editscore_pass",
    "average_passes",
]
