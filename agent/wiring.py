"""Component wiring: backend names of ``AgentConfig`` -> live tools for the loop, and the
strategy wrapping (MIRAGE) around the editors. Lives with the public API, not in the graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.config import AgentConfig
from graphs.editing import Components
from tools.artifacts import ArtifactStore
from tools.contracts import Critic, Editor, Grounder, Planner

__all__ = ["components_from", "backend_options"]


def backend_options(config: AgentConfig, kind: str, name: str) -> dict[str, Any]:
    """The options of backend ``name`` in role ``kind``: those keyed by the role (``planner``,
    ``grounder``, ``critic``, ``editor``: e.g. ``--backend-option planner.base_url=...``),
    overridden by those keyed by the backend's own name."""
    return {**config.backend_options.get(kind, {}), **config.backend_options.get(name, {})}


def components_from(
    config: AgentConfig,
    *,
    store: ArtifactStore,
    planner: Planner | None = None,
    editors: Editor | Sequence[Editor] | dict[str, Editor] | None = None,
    grounder: Grounder | None = None,
    critic: Critic | None = None,
    build: Callable[[str, str], Any] | None = None,
) -> Components:
    """Resolve components: objects given win over backend names in the config."""
    if build is None:
        from tools.registry import build as registry_build

        def build(kind: str, name: str) -> Any:
            return registry_build(kind, name, **backend_options(config, kind, name))

    def need(kind: str, obj: Any, name: str | None) -> Any:
        if obj is not None:
            return obj
        if name is None:
            raise ValueError(
                f"no {kind}: pass {kind}=... to create_edit_agent, name a {kind} backend in "
                f"AgentConfig, or choose a preset (e.g. AgentConfig(preset='dry-run'))"
            )
        return build(kind, name)

    if editors is None:
        if not config.editors:
            need("editor", None, None)
        named = tuple((n, build("editor", n)) for n in config.editors)
    elif isinstance(editors, dict):
        named = tuple(editors.items())
    elif isinstance(editors, (list, tuple)):
        named = tuple(
            (type(e).__name__ if i == 0 else f"{type(e).__name__}#{i}", e)
            for i, e in enumerate(editors)
        )
    else:
        named = ((type(editors).__name__, editors),)
    for label, editor in named:
        if not callable(getattr(editor, "edit", None)):
            raise TypeError(f"editor {label!r} has no edit() method: {editor!r}")
    planner = need("planner", planner, config.planner)
    critic = need("critic", critic, config.critic)
    if not callable(getattr(planner, "next_action", None)):
        raise TypeError(f"planner has no next_action() method: {planner!r}")
    if not callable(getattr(critic, "critique", None)):
        raise TypeError(f"critic has no critique() method: {critic!r}")
    if grounder is None and config.grounder is not None:
        grounder = build("grounder", config.grounder)
    if config.strategy != "mira":
        named = tuple((n, _regional(n, e, grounder, config)) for n, e in named)
    if config.strategy == "mirage":  # one regional step for the whole instruction
        from agent.policies import WholeInstructionPlanner

        planner = WholeInstructionPlanner()
    return Components(planner=planner, editors=named, critic=critic, store=store, grounder=grounder)


def _regional(name: str, editor: Any, grounder: Grounder | None, config: AgentConfig) -> Any:
    """The editor as a MIRAGE ``RegionalEditor`` (strategies 'mirage' and 'mira+mirage')."""
    from tools.mirage.tool import RegionalEditor

    if isinstance(editor, RegionalEditor):
        return editor
    if grounder is None or not hasattr(type(grounder), "vlm"):
        raise ValueError(
            f"strategy {config.strategy!r} parses and grounds with the grounder's VLM: name a "
            f"grounder backend with a Qwen-VL (e.g. the 'tiny' preset's), or pass "
            f"editors=[RegionalEditor(...)]"
        )
    if not getattr(editor, "supports_mirage", False):
        raise ValueError(
            f"strategy {config.strategy!r} needs an editor whose family has a MIRAGE "
            f"sampler (supports_mirage, e.g. FLUX.2, Kontext or Qwen-Image-Edit); "
            f"editor {name!r} is {editor!r}"
        )
    from tools.mirage.parse import VLMInstructionParser

    return RegionalEditor.for_editor(
        editor,
        parser=VLMInstructionParser(vlm=lambda: grounder.vlm),
        grounder=grounder,
        rho=config.rho,
    )
