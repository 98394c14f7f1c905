"""The front door: ``create_edit_agent`` (a compiled LangGraph graph) and ``edit_image``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig
from tools.artifacts import ArtifactStore, ImageRef

if TYPE_CHECKING:  # langgraph is imported when an agent is built: `import agent` stays light
    from collections.abc import Sequence

    from langchain_core.runnables import RunnableConfig
    from langgraph.types import Checkpointer
    from PIL import Image

    from graphs.chat import ChatGraph
    from graphs.editing import EditGraph
    from tools.contracts import Critic, Editor, Grounder, Planner

__all__ = ["create_edit_agent", "create_chat_agent", "edit_image", "EditResult"]

_COMPONENT_OPTIONS = ("planner", "editors", "grounder", "critic", "artifacts", "checkpointer")


def _store(
    artifacts: ArtifactStore | str | os.PathLike[str] | None, config: AgentConfig
) -> ArtifactStore:
    if isinstance(artifacts, ArtifactStore):
        return artifacts
    if artifacts is not None and not isinstance(artifacts, (str, os.PathLike)):
        raise TypeError(
            f"artifacts must be an ArtifactStore or a directory path, got {artifacts!r}"
        )
    return ArtifactStore(artifacts if artifacts is not None else config.artifacts_dir)


def create_edit_agent(
    config: AgentConfig | None = None,
    *,
    planner: Planner | None = None,
    editors: Editor | Sequence[Editor] | dict[str, Editor] | None = None,
    grounder: Grounder | None = None,
    critic: Critic | None = None,
    checkpointer: Checkpointer = None,
    artifacts: ArtifactStore | str | os.PathLike[str] | None = None,
) -> EditGraph:
    """Build the editing agent: a compiled LangGraph graph.

    Call it with ``agent.invoke({"image": ..., "instruction": ...})``; ``image`` is a path, a
    ``file://`` URI, a ``data:image/...;base64,`` URL or an ``ImageRef``. The output holds
    ``result`` (an ``ImageRef``), ``steps``, ``stop_reason`` and ``scores``.

    Components given here override the backends ``config`` names. ``checkpointer`` enables
    resume on a ``thread_id``; leave it ``None`` when the graph runs as a subgraph, so it
    inherits the parent's. ``artifacts`` is the image store (or its root directory).
    """
    from agent.wiring import components_from
    from graphs.editing import build_graph

    if config is None:
        config = AgentConfig()
    elif not isinstance(config, AgentConfig):
        raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}: {config!r}")
    store = _store(artifacts, config)
    components = components_from(
        config, store=store, planner=planner, editors=editors, grounder=grounder, critic=critic
    )
    return build_graph(
        components, context=config.context(), limits=config.limits(), checkpointer=checkpointer
    )


def create_chat_agent(
    config: AgentConfig | None = None,
    *,
    checkpointer: Checkpointer = None,
    **components: Any,
) -> ChatGraph:
    """Build the chat-native agent (``graphs/chat.py``): ``messages`` in (the user's text and
    an image content block), an AI message out with an account of the steps and the edited
    image as an image block. ``components`` are ``create_edit_agent``'s (planner, editors,
    grounder, critic, artifacts); the editing graph runs as its subgraph under
    ``checkpointer``."""
    from graphs.chat import build_chat_graph

    unknown = sorted(set(components) - set(_COMPONENT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown!r}; known: {list(_COMPONENT_OPTIONS)}")
    editor = create_edit_agent(config, checkpointer=None, **components)
    return build_chat_graph(editor, checkpointer=checkpointer)


@dataclass
class EditResult:
    """What ``edit_image`` returns: the edited PIL image and the whole trace."""

    image: Image.Image
    result: ImageRef
    stop_reason: str
    steps: list[dict[str, Any]]
    scores: dict[str, Any]
    store: ArtifactStore = field(repr=False)

    def intermediates(self) -> list[Image.Image]:
        """The output image of every tried edit, accepted or not, in order."""
        return [self.store.open(s["output"]) for s in self.steps if s.get("output")]


def edit_image(
    image: Image.Image | str | os.PathLike[str] | ImageRef, instruction: str, **options: Any
) -> EditResult:
    """Edit one image in one call. ``options`` are ``create_edit_agent`` keywords (planner,
    editors, grounder, critic, artifacts, checkpointer, config) or ``AgentConfig`` fields
    (``preset="dry-run"``, ``max_steps=3``, ...)."""
    from PIL import Image

    from graphs.state import InputState
    from tools.images import load_image

    components = {k: options.pop(k) for k in _COMPONENT_OPTIONS if k in options}
    config = options.pop("config", None)
    if config is None:
        config = AgentConfig(**options)
    elif options:
        config = AgentConfig.model_validate({**config.model_dump(exclude_unset=True), **options})
    store = _store(components.pop("artifacts", None), config)
    source: str | ImageRef
    if isinstance(image, Image.Image):  # state is JSON-only: store the pixels, pass the ref
        source = store.put(load_image(image, max_pixels=config.max_input_pixels))
    elif isinstance(image, (str, os.PathLike)):  # InputState.image: a str path or URI
        source = os.fspath(image)
    else:  # an ImageRef of the store, or anything else: perceive accepts or refuses it
        source = image
    agent = create_edit_agent(config, artifacts=store, **components)
    run_config: RunnableConfig | None = (
        {"configurable": {"thread_id": os.urandom(8).hex()}}
        if components.get("checkpointer")
        else None
    )
    out = agent.invoke(InputState(image=source, instruction=instruction), run_config)
    return EditResult(
        image=store.open(out["result"]),
        result=out["result"],
        stop_reason=out["stop_reason"],
        steps=out["steps"],
        scores=out["scores"],
        store=store,
    )
