"""``langgraph dev`` entry point (see ``langgraph.json``): the dry-run agent as ``graph``.

``langgraph dev`` wants a module-level compiled graph without a checkpointer (the server
brings its own persistence). The artifact root comes from ``$MIRA_ARTIFACTS_DIR`` when set,
else ``default_artifacts_dir()``. Reading an environment variable here is intended: this is a
top-level entry point, like a CLI's ``main``; ``AgentConfig`` and the nodes never read one.
Served, the graph reads input files only under ``$MIRA_FILE_ROOTS`` (none when unset).
``agent/http.py`` serves the same root through ``artifacts_root()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent import AgentConfig, create_edit_agent, default_artifacts_dir

__all__ = ["ARTIFACTS_ENV", "FILE_ROOTS_ENV", "artifacts_root", "file_roots", "graph"]

ARTIFACTS_ENV = "MIRA_ARTIFACTS_DIR"
FILE_ROOTS_ENV = "MIRA_FILE_ROOTS"


def artifacts_root() -> Path:
    """The artifact store root: ``$MIRA_ARTIFACTS_DIR`` if set and non-empty, else the default."""
    value = os.environ.get(ARTIFACTS_ENV)
    return Path(value).expanduser() if value else default_artifacts_dir()


def file_roots() -> tuple[str, ...]:
    """Folders a served graph may read input files from: ``$MIRA_FILE_ROOTS``
    (``os.pathsep``-separated); none when unset, so a client cannot make the server read (and
    then serve through the artifact route) any file it names. Data URLs and ImageRefs work."""
    value = os.environ.get(FILE_ROOTS_ENV, "")
    return tuple(str(Path(p).expanduser()) for p in value.split(os.pathsep) if p)


graph = create_edit_agent(
    AgentConfig(preset="dry-run", allowed_file_roots=file_roots()), artifacts=artifacts_root()
)
