"""The micro-world: a procedural multi-instance editing benchmark with exact ground truth.

Mirrors MIRA-Bench's structure (3-5 similar instances per image, 1-5 compositional edits of
five types: add, remove, replace, recolour, material) on rendered shapes, so the agent loop
can be measured offline with numbers: ``make_case`` draws a case, ``score_case`` scores an
answer from pixels, ``agent.microworld.tools`` has oracle and noisy tools, and ``mira-bench``
(``agent.bench``) runs strategies over many cases. See ``docs/microworld.md``.

Importing this package loads pydantic only; PIL and numpy load when an image is made.
"""

from agent.microworld.edits import (
    KINDS,
    Edit,
    EditError,
    apply_edit,
    apply_edits,
    corrective_edit,
    referring_expressions,
    resolve,
)
from agent.microworld.exports import editor_records
from agent.microworld.formats import (
    critic_samples,
    export,
    grounder_samples,
    parse_samples,
    planner_samples,
)
from agent.microworld.grammar import LANGUAGES, REF_KINDS, compose, describe, referring
from agent.microworld.language import PHRASINGS, join, parse, parse_spans, phrase
from agent.microworld.render import object_box, object_mask, render
from agent.microworld.scene import (
    CATEGORIES,
    PALETTE,
    PATTERNS,
    Background,
    Obj,
    Scene,
    generate_scene,
)
from agent.microworld.scoring import Score, Thresholds, score_case, score_edits
from agent.microworld.splits import SEED_RANGES, SPLITS, seeds, split_of
from agent.microworld.tools import (
    HeuristicPlanner,
    NoisyCritic,
    NoisyEditor,
    OracleCritic,
    OracleEditor,
    OracleGrounder,
    OraclePlanner,
    World,
)
from agent.microworld.truth import (
    Case,
    generate_cases,
    goal_scene,
    intermediate,
    make_case,
    object_truth,
    shape_mask,
    target_box,
    target_mask,
    tight_box,
    tight_mask,
)

__all__ = [
    # scenes
    "Scene",
    "Obj",
    "Background",
    "CATEGORIES",
    "PALETTE",
    "PATTERNS",
    "generate_scene",
    "render",
    "object_mask",
    "object_box",
    # seeds
    "SEED_RANGES",
    "SPLITS",
    "seeds",
    "split_of",
    # edits and language
    "Edit",
    "EditError",
    "KINDS",
    "apply_edit",
    "apply_edits",
    "referring_expressions",
    "resolve",
    "corrective_edit",
    "PHRASINGS",
    "phrase",
    "join",
    "parse",
    "parse_spans",
    "LANGUAGES",
    "REF_KINDS",
    "describe",
    "referring",
    "compose",
    # cases and ground truth
    "Case",
    "make_case",
    "generate_cases",
    "goal_scene",
    "intermediate",
    "target_box",
    "target_mask",
    "shape_mask",
    "tight_box",
    "tight_mask",
    "object_truth",
    # training data
    "editor_records",
    "planner_samples",
    "grounder_samples",
    "parse_samples",
    "critic_samples",
    "export",
    # scoring
    "Score",
    "Thresholds",
    "score_case",
    "score_edits",
    # tools
    "World",
    "OracleEditor",
    "NoisyEditor",
    "OracleCritic",
    "NoisyCritic",
    "OraclePlanner",
    "HeuristicPlanner",
    "OracleGrounder",
]
