"""Images in chat messages: find the latest one a user sent, and hand a result back as a block.

Chat UIs and chat models put images into a message's ``content`` list as content blocks. The
forms read here (the common ones of LangChain, OpenAI and Anthropic):

- ``{"type": "image", "base64": ..., "mime_type": "image/png"}`` (LangChain standard block)
- ``{"type": "image", "url": ...}``
- ``{"type": "image", "source_type": "base64", "data": ..., "mime_type": ...}`` (LangChain v0,
  what agent-chat-ui sends) and ``{"type": "image", "source_type": "url", "url": ...}``
- ``{"type": "image_url", "image_url": {"url": ...}}`` (OpenAI; ``image_url`` may be a string)
- ``{"type": "image", "source": {"type": "base64", "media_type": ..., "data": ...}}``
  (Anthropic)

A block becomes a string ``load_image`` reads (a ``data:`` URL, or the block's URL as given, so
the usual scheme checks apply). Results go back as a LangChain standard image block of the PNG.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tools.errors import InvalidInputError

__all__ = ["block_image", "latest_user_image", "message_text", "png_block", "ref_block"]

_USER_TYPES = ("human", "user")


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` for a message object, ``obj[name]`` for a message dict."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _is_user(message: Any) -> bool:
    return _field(message, "type") in _USER_TYPES or _field(message, "role") in _USER_TYPES


def block_image(block: Any) -> str | None:
    """The image of one content block as a ``data:`` URL or the block's own URL; ``None`` when
    the block is no image block. Raises ``InvalidInputError`` for an image block this cannot
    read (e.g. a provider file id), naming the block's keys."""
    if not isinstance(block, Mapping):
        return None
    kind = block.get("type")
    if kind == "image_url":
        inner = block.get("image_url")
        url = inner.get("url") if isinstance(inner, Mapping) else inner
        if isinstance(url, str) and url:
            return url
    elif kind == "image":
        mime = block.get("mime_type") or "image/png"
        if isinstance(block.get("base64"), str):
            return f"data:{mime};base64,{block['base64']}"
        source_type = block.get("source_type")
        if source_type == "base64" and isinstance(block.get("data"), str):
            return f"data:{mime};base64,{block['data']}"
        if isinstance(block.get("url"), str) and source_type in (None, "url"):
            return block["url"]
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "base64":
            return f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data')}"
    else:
        return None
    raise InvalidInputError(
        f"image content block has no readable image (base64 data or URL): keys {sorted(block)!r}"
    )


def latest_user_image(messages: Sequence[Any] | None) -> str | None:
    """The latest image content block of the user's messages (newest message first, last block
    of a message first), as ``block_image`` returns it; ``None`` when no user message has one."""
    for message in reversed(list(messages or [])):
        if not _is_user(message):
            continue
        content = _field(message, "content")
        if isinstance(content, list):
            for block in reversed(content):
                found = block_image(block)
                if found is not None:
                    return found
    return None


def message_text(message: Any) -> str:
    """The text of a message: its string content, or its text blocks joined by newlines."""
    content = _field(message, "content")
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(p for p in parts if p)


def png_block(data: bytes) -> dict[str, Any]:
    """A LangChain standard image content block holding PNG bytes."""
    return {
        "type": "image",
        "base64": base64.b64encode(data).decode("ascii"),
        "mime_type": "image/png",
    }


def ref_block(ref: Mapping[str, Any]) -> dict[str, Any]:
    """The image block of an ``ImageRef`` of a local store: its PNG bytes, checked against the
    ref's hash. Raises ``ValueError`` for a ref that is not a local ``file://`` URI or whose
    bytes do not match."""
    uri = ref.get("uri")
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"ref['uri'] must be a local file:// URI, got {uri!r}")
    data = Path(unquote(parsed.path)).read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise ValueError(f"artifact {uri!r} does not match its sha256 {ref.get('sha256')!r}")
    return png_block(data)
