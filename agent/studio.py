"""``langgraph dev`` entry points (see ``langgraph.json``): the dry-run agent as ``graph``
(``mira_edit``) and its chat-native form as ``chat_graph`` (``mira_chat``).

``langgraph dev`` wants a module-level compiled graph without a checkpointer (the server
brings its own persistence). The artifact root comes from ``$MIRA_ARTIFACTS_DIR`` when set,
else ``default_artifacts_dir()``. Reading an environment variable here is intended: this is a
top-level entry point, like a CLI's ``main``; ``AgentConfig`` and the nodes never read one.
``agent/http.py`` serves the same root through ``artifacts_root()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent import AgentConfig, create_chat_agent, create_edit_agent, default_artifacts_dir

__all__ = ["ARTIFACTS_ENV", "artifacts_root", "graph", "chat_graph"]

ARTIFACTS_ENV = "MIRA_ARTIFACTS_DIR"


def artifacts_root() -> Path:
    """The artifact store root: ``$MIRA_ARTIFACTS_DIR`` if set and non-empty, else the default."""
    value = os.environ.get(ARTIFACTS_ENV)
    return Path(value).expanduser() if value else default_artifacts_dir()


graph = create_edit_agent(AgentConfig(preset="dry-run"), artifacts=artifacts_root())
chat_graph = create_chat_agent(AgentConfig(preset="dry-run"), artifacts=artifacts_root())
