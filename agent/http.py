"""Read-only HTTP access to the artifact store, mounted by ``langgraph dev`` (``langgraph.json``).

``GET /artifacts/{sha256}.png`` (or without ``.png``) returns the PNG whose bytes hash to
``sha256``, from the same store root as the ``mira_edit`` graph (``agent.studio``), so a
client of the LangGraph server can show the ``ImageRef``s a run returns.

Only GET and HEAD are served (POST, PUT, PATCH, DELETE, OPTIONS: 405). A name that is not
64 lowercase hex digits is refused with 400; an unknown hash (or a store root that does not
exist yet: serving never creates it) gives 404. The file is found through
``ArtifactStore.path()``, which validates the hash and keeps the path inside the root: no
path is ever built from the URL here. Artifacts are content-addressed, so responses carry an
``ETag`` of the hash and an immutable ``Cache-Control``; every answer (GET, HEAD and a 304 to
``If-None-Match``) is given only after the bytes were read and hashed: a corrupt file, a
symbolic link or a non-regular file gives 500, never a cached lie.
"""

from __future__ import annotations

import os
import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.studio import artifacts_root
from tools.artifacts import ArtifactStore

__all__ = ["create_app", "app"]

_ALLOW = "GET, HEAD"
#: Methods the route takes, to answer every write with its own 405: left unmatched, a write
#: would fall through to the LangGraph API's catch-all mount under ``langgraph dev`` (a 404).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_CACHE = "public, max-age=31536000, immutable"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def create_app(root: str | os.PathLike[str] | None = None) -> Starlette:
    """A Starlette app serving the store at ``root``; with ``None``, ``artifacts_root()`` is
    resolved on every request (so ``$MIRA_ARTIFACTS_DIR`` is read when serving, not at import)."""
    fixed = ArtifactStore(root) if root is not None else None

    def store() -> ArtifactStore | None:
        if fixed is not None:
            return fixed
        path = artifacts_root()
        # Serving is read-only: a missing root means nothing stored, not a folder to create.
        return ArtifactStore(path, clean_temp_files=False) if path.is_dir() else None

    def artifact(request: Request) -> Response:  # sync: Starlette runs it in a thread pool
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed", 405, headers={"Allow": _ALLOW})
        sha = request.path_params["name"].removesuffix(".png")
        if not _SHA256.fullmatch(sha):  # fullmatch: "<sha>\n" (%0A) is refused too
            return PlainTextResponse("not a sha256 hex digest (64 lowercase hex digits)", 400)
        current = store()
        try:
            if current is None:
                raise FileNotFoundError(sha)
            # Every answer (GET, HEAD, 304) comes from bytes read and checked against the hash:
            # a corrupt file or a planted link is never announced as this artifact.
            data = current.read_bytes(sha)
        except ValueError:
            return PlainTextResponse("artifact is corrupt", 500)
        except FileNotFoundError:
            return PlainTextResponse("no such artifact", 404)
        etag = f'"{sha}"'
        headers = {"Cache-Control": _CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(
                b"",
                media_type="image/png",
                headers={**headers, "Content-Length": str(len(data))},
            )
        return Response(data, media_type="image/png", headers=headers)

    route = Route("/artifacts/{name}", artifact, methods=_METHODS, name="artifact")
    return Starlette(routes=[route])


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong) or is ``*``."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


app = create_app(None)
