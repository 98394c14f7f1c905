"""``AgentConfig``: the one settings object. Budgets, thresholds, backends, seeds.

Which backends run, the strategy and the input limits are fixed when the graph is built. The
budgets, verify policy, seeds, steps and guidance (``graphs.context.CONTEXT_KEYS``) become the
graph's LangGraph context defaults: a run may override them with
``graph.invoke(inputs, context={"max_steps": 1})``, and ``langgraph dev`` / LangGraph Studio
shows them with these descriptions (tests/test_langgraph_dev.py reads them from the server).
Nothing deeper reads environment variables. Every field carries a description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graphs.context import CONTEXT_KEYS, EditContext, InputLimits
from tools import registry
from tools.images import DEFAULT_MAX_INPUT_BYTES, SUPPORTED_URI_SCHEMES
from tools.registry import Kind

__all__ = ["AgentConfig", "PRESETS"]

#: Named stacks of backends (names resolved by ``tools.registry``), and for some the loop
#: settings they are measured with (``_PRESET_SETTINGS``). ``dry-run`` uses the test doubles of
#: ``agent.testing``: it exercises the whole loop offline, but its "edits" are painted tints,
#: not model output.
PRESETS: dict[str, dict[str, object]] = {
    "dry-run": {
        "planner": "split",
        "editors": ["paint"],
        "grounder": "side",
        "critic": "pixel-change",
    },
    # Every real backend class on tiny random weights (CPU, seconds): output is noise. The
    # planner is the model-free split planner: a random-weight MIRA planner never writes a
    # parseable instruction, so the loop would never reach act (it is tested on its own).
    "tiny": {
        "planner": "split",
        "editors": ["flux2-klein-tiny"],
        "grounder": "qwen-vl-tiny",
        "critic": "editscore-tiny",
    },
    # The project's own learned models, trained on the micro-world by `mira-train`: the micro
    # editor (weights/micro-editor), the micro VLM (weights/micro-vlm) as grounder, MIRAGE
    # parser and critic, and the planner adapter on it (weights/micro-planner). Edits
    # micro-world scenes for real on a CPU; `mira-edit`'s default. Its loop starts from one
    # shot and ends once the critic scores the whole instruction 10: chosen on validation
    # cases in the seventeenth session, where the planner alone, step by step, does worse than
    # the editor alone (docs/loop.md).
    "micro": {
        "planner": "micro-planner",
        "editors": ["micro-editor"],
        "grounder": "micro-grounder",
        "critic": "micro-critic",
        "one_shot_first": True,
        "stop_when_satisfied": 10.0,
    },
    # Real stacks: need the weights on this machine (nothing is downloaded) and a GPU.
    "flux2-klein": {
        "planner": "mira-7b",
        "editors": ["flux2-klein-9b"],
        "grounder": "qwen3-vl-8b",
        "critic": "editscore-qwen3-vl-8b",
    },
    "kontext": {
        "planner": "mira-7b",
        "editors": ["kontext-dev"],
        "grounder": "qwen3-vl-8b",
        "critic": "editscore-qwen3-vl-8b",
    },
    "qwen-edit": {
        "planner": "mira-7b",
        "editors": ["qwen-edit-2511"],
        "grounder": "qwen3-vl-8b",
        "critic": "editscore-qwen3-vl-8b",
    },
    "ip2p": {
        "planner": "mira-7b",
        "editors": ["ip2p"],
        "grounder": "qwen3-vl-8b",
        "critic": "editscore-qwen3-vl-8b",
    },
    # The VLM roles on OpenAI-compatible servers (docs/serving.md: the `vllm serve` commands),
    # the editor local: MIRA on :8000, Qwen3-VL-8B with the EditScore LoRA on :8001.
    "vllm": {
        "planner": "mira-server",
        "editors": ["flux2-klein-9b"],
        "grounder": "qwen-vl-server",
        "critic": "editscore-server",
    },
}

#: The loop settings a preset may set besides its backends. A preset fills them unless the
#: config names them itself (``one_shot_first=False`` turns the micro preset's off).
_PRESET_SETTINGS = frozenset({"one_shot_first", "stop_when_satisfied"})


#: The test doubles of ``agent.testing`` as registry backends (the ``dry-run`` preset's), and
#: the project's shipped micro models (``agent.micro``).
#: ``tools.registry`` lists only the backends of ``tools``; the layer above adds its own.
_TEST_DOUBLES: tuple[tuple[Kind, str, str], ...] = (
    ("planner", "split", "agent.testing:SplitPlanner"),
    ("editor", "paint", "agent.testing:PaintEditor"),
    ("grounder", "side", "agent.testing:SideGrounder"),
    ("critic", "pixel-change", "agent.testing:PixelChangeCritic"),
    ("editor", "micro-editor", "agent.micro:micro_editor"),
    ("planner", "micro-planner", "agent.micro:micro_planner"),
    ("grounder", "micro-grounder", "agent.micro:micro_grounder"),
    ("critic", "micro-critic", "agent.micro:micro_critic"),
)


def _register_test_doubles() -> None:
    """Add the test doubles to the registry (names only: nothing is imported until built)."""
    for kind, name, target in _TEST_DOUBLES:
        if name not in registry.available(kind):
            registry.register(kind, name, target)


_register_test_doubles()


class AgentConfig(BaseModel):
    """Settings of one edit agent. Components passed to ``create_edit_agent`` override the
    backends named here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- backends -----------------------------------------------------------------------------
    preset: str | None = Field(
        default=None,
        description="named stack of backends filling any of planner/editors/grounder/critic left "
        "unset, and for some presets (micro) the loop settings one_shot_first and "
        f"stop_when_satisfied unless given; one of {sorted(PRESETS)}",
    )
    planner: str | None = Field(default=None, description="planner backend name (tools.registry)")
    editors: tuple[str, ...] = Field(
        default=(),
        description="editor backend names; the first edits, retries of a rejected edit move on "
        "to the next one (cycling) with a new seed",
    )
    grounder: str | None = Field(default=None, description="grounder backend name")
    critic: str | None = Field(default=None, description="critic backend name")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="keyword options per backend name, passed to its factory, e.g. "
        "{'mira-7b': {'checkpoint': '/models/mira-7b'}, "
        "'flux2-klein-9b': {'model': '/models/klein'}}; a role's key (planner, editor, "
        "grounder, critic) gives options to whichever backend fills that role, e.g. "
        "{'planner': {'base_url': 'http://gpu-host:8000/v1'}} (the backend's own key wins)",
    )
    strategy: Literal["mira", "mirage", "mira+mirage"] = Field(
        default="mira",
        description="how act edits: 'mira' = the planner picks each atomic edit, a whole-image "
        "editor applies it; 'mirage' = one MIRAGE regional step for the whole instruction "
        "(parse, ground, edit every target at once), then verify; 'mira+mirage' = the planner "
        "picks each atomic edit and MIRAGE edits only its grounded region",
    )
    rho: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="MIRAGE: share of the denoising steps run by the global branch (the first "
        "1-rho run the region branches alone)",
    )

    # -- budgets ------------------------------------------------------------------------------
    max_steps: int = Field(
        default=5,
        ge=1,
        le=100,
        description="most atomic edits the planner may issue (retries of one edit count once)",
    )
    max_retries_per_step: int = Field(
        default=1,
        ge=0,
        le=20,
        description="after verify rejects an edit, how many times the same edit is retried with "
        "a new seed (or the next editor) before the planner is asked again",
    )
    max_tool_calls: int = Field(
        default=40,
        ge=1,
        le=10_000,
        description="most model calls of a run: planner, editor, grounder and critic together",
    )
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="wall-clock budget in seconds; checked before each tool call, so a running "
        "call is never cut off",
    )
    max_repeats_of_rejected: int = Field(
        default=1,
        ge=0,
        le=20,
        description="how often the planner may propose again an edit whose retries were all "
        "rejected before the run ends with stop_reason='no_progress'",
    )
    one_shot_first: bool = Field(
        default=False,
        description="the first edit is the whole instruction in one editor call, with no "
        "planner call; verify judges it as any edit, and the planner then corrects the result "
        "or stops",
    )
    max_plan_errors: int = Field(
        default=3,
        ge=1,
        le=100,
        description="planner answers in a row that cannot be parsed before the run ends with "
        "stop_reason='error' (a greedy planner repeats the same answer to the same input)",
    )

    # -- verify -------------------------------------------------------------------------------
    min_step_score: float = Field(
        default=6.0,
        ge=0,
        le=10,
        description="least critic Overall (0..10) for an atomic edit to be accepted",
    )
    check_regression: bool = Field(
        default=True,
        description="also score each candidate against the full instruction and reject it when "
        "that score drops below the last accepted image's by more than regression_tolerance",
    )
    regression_tolerance: float = Field(
        default=0.5, ge=0, le=10, description="allowed drop of the full-instruction Overall"
    )
    stop_when_satisfied: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="if set (needs check_regression), stop with 'critic_satisfied' once the "
        "full-instruction Overall reaches this value",
    )

    # -- human approval -----------------------------------------------------------------------
    approve_edits: bool = Field(
        default=False,
        description="pause before each planned edit (a LangGraph interrupt showing the edit, "
        "the current image and the history) until a person resumes with approve, a "
        "replacement instruction or stop; needs a checkpointer",
    )

    # -- editing ------------------------------------------------------------------------------
    seed: int = Field(
        default=0, ge=0, description="base seed; step i, try j uses a seed derived from it"
    )
    num_inference_steps: int | None = Field(
        default=None, ge=1, description="denoising steps per edit; None = the editor's default"
    )
    guidance_scale: float | None = Field(
        default=None, ge=0, description="guidance scale per edit; None = the editor's default"
    )

    # -- inputs and storage -------------------------------------------------------------------
    artifacts_dir: Path | None = Field(
        default=None,
        description="root of the content-addressed image store; None = "
        "$XDG_CACHE_HOME/mira-agent/artifacts",
    )
    max_input_pixels: int = Field(
        default=4096 * 4096, ge=1, description="largest input image accepted, in pixels (w*h)"
    )
    max_instruction_chars: int = Field(
        default=2000, ge=1, description="longest instruction accepted"
    )
    max_input_bytes: int = Field(
        default=DEFAULT_MAX_INPUT_BYTES,
        ge=1,
        description="largest input file (or decoded data URL) read, in bytes; checked "
        "before reading",
    )
    allowed_uri_schemes: tuple[str, ...] = Field(
        default=SUPPORTED_URI_SCHEMES,
        description="URI schemes accepted for the input image, a subset of "
        f"{SUPPORTED_URI_SCHEMES}",
    )

    allowed_file_roots: tuple[str, ...] | None = Field(
        default=None,
        description="folders input image files may be read from (links resolved); None = any "
        "file (the CLI, the Python API), () = no file at all (the graph served by langgraph "
        "dev, unless $MIRA_FILE_ROOTS names folders); data URLs and ImageRefs always work",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known presets: {sorted(PRESETS)}")
        return value

    @field_validator("allowed_uri_schemes")
    @classmethod
    def _known_schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if s not in SUPPORTED_URI_SCHEMES]
        if bad:
            raise ValueError(f"unsupported URI schemes {bad!r}; supported: {SUPPORTED_URI_SCHEMES}")
        return value

    @model_validator(mode="after")
    def _fill_from_preset(self) -> AgentConfig:
        if self.stop_when_satisfied is not None and not self.check_regression:
            raise ValueError(
                "stop_when_satisfied needs check_regression=True (it reads that score)"
            )
        if self.preset is not None:
            for key, value in PRESETS[self.preset].items():
                if key in _PRESET_SETTINGS:
                    if key in self.model_fields_set:
                        continue  # the caller's own setting, even False or None
                    if key == "stop_when_satisfied" and not self.check_regression:
                        raise ValueError(
                            f"preset {self.preset!r} sets stop_when_satisfied={value!r}, which "
                            "needs check_regression=True; with check_regression=False pass "
                            "stop_when_satisfied=None too"
                        )
                elif getattr(self, key):
                    continue
                object.__setattr__(self, key, tuple(value) if isinstance(value, list) else value)
        return self

    def context(self) -> EditContext:
        """The per-run settings this config sets as the graph's context defaults."""
        return EditContext(**{k: getattr(self, k) for k in CONTEXT_KEYS})

    def limits(self) -> InputLimits:
        """The input refusals the graph applies (fixed when it is built)."""
        return InputLimits(
            max_input_pixels=self.max_input_pixels,
            max_instruction_chars=self.max_instruction_chars,
            max_input_bytes=self.max_input_bytes,
            allowed_file_roots=self.allowed_file_roots,
            allowed_uri_schemes=self.allowed_uri_schemes,
        )

    def step_seed(self, step: int, attempt: int) -> int:
        """Seed of try ``attempt`` (0-based) of step ``step``: distinct, reproducible."""
        return self.context().step_seed(step, attempt)
