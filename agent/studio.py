"""``langgraph dev`` entry points (see ``langgraph.json``): the dry-run agent as ``graph``
(``mira_edit``) and its chat-native form as ``chat_graph`` (``mira_chat``).

``langgraph dev`` wants a module-level compiled graph without a checkpointer (the server
brings its own persistence). The artifact root comes from ``$MIRA_ARTIFACTS_DIR`` when set,
else ``default_artifacts_dir()``. Reading an environment variable here is intended: this is a
top-level entry point, like a CLI's ``main``; ``AgentConfig`` and the nodes never read one.
Served, the graph reads input files only under ``$MIRA_FILE_ROOTS`` (none when unset).
``agent/http.py`` serves the same root through ``artifacts_root()``.

When served, every ``ImageRef`` the graphs write (state, output, trace, interrupts) also carries
``url``, the http URL of the artifact route (``GET /artifacts/<sha256>.png``), so Studio and
SDK users can open it: the base is ``$MIRA_PUBLIC_URL`` if set, else ``$LANGGRAPH_API_URL``,
which ``langgraph dev`` sets to its own address before it loads the graphs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from agent import (
    AgentConfig,
    ArtifactStore,
    create_chat_agent,
    create_edit_agent,
    default_artifacts_dir,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from agent import ImageRef

__all__ = [
    "ARTIFACTS_ENV",
    "PUBLIC_URL_ENV",
    "ServedStore",
    "artifact_url",
    "artifacts_root",
    "FILE_ROOTS_ENV",
    "file_roots",
    "store",
    "public_url",
    "graph",
    "chat_graph",
]

ARTIFACTS_ENV = "MIRA_ARTIFACTS_DIR"
PUBLIC_URL_ENV = "MIRA_PUBLIC_URL"
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


def public_url() -> str | None:
    """The server's base URL: ``$MIRA_PUBLIC_URL``, else ``$LANGGRAPH_API_URL``, else None."""
    value = os.environ.get(PUBLIC_URL_ENV) or os.environ.get("LANGGRAPH_API_URL")
    return value.rstrip("/") if value else None


def artifact_url(base_url: str, sha256: str) -> str:
    """The URL of an artifact on the route of ``agent/http.py``."""
    return f"{base_url.rstrip('/')}/artifacts/{sha256}.png"


class ServedStore(ArtifactStore):
    """An ``ArtifactStore`` whose refs also carry ``url``, the artifact route's http URL."""

    def __init__(self, root: str | os.PathLike[str] | None, *, base_url: str) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        super().__init__(root)
        self.base_url = base_url.rstrip("/")

    def put(self, image: Image.Image) -> ImageRef:
        ref = super().put(image)
        return {**ref, "url": artifact_url(self.base_url, ref["sha256"])}

    def put_mask(self, mask: Image.Image | np.ndarray) -> ImageRef:
        ref = super().put_mask(mask)
        return {**ref, "url": artifact_url(self.base_url, ref["sha256"])}


def _served_store() -> ArtifactStore:
    base = public_url()
    root = artifacts_root()
    return ServedStore(root, base_url=base) if base else ArtifactStore(root)


store = _served_store()
_config = AgentConfig(preset="dry-run", allowed_file_roots=file_roots())
graph = create_edit_agent(_config, artifacts=store)
chat_graph = create_chat_agent(_config, artifacts=store)
