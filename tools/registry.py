"""Backend names -> factories, per tool kind.

Entries are ``"module:attribute"`` strings, imported only when a backend is built, so naming
a heavy backend costs nothing until it is used. A factory is called with the backend's options (none by default) and
returns an object satisfying the kind's protocol (``tools.contracts``); keyword options come
from ``AgentConfig.backend_options``.

This module lists the backends of ``tools``; layers above add their own with ``register``
(``agent`` registers its test doubles, e.g. the ``dry-run`` preset's ``"paint"`` editor).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Kind", "register", "available", "build"]

Kind = Literal["planner", "editor", "grounder", "critic"]
_KINDS: tuple[str, ...] = ("planner", "editor", "grounder", "critic")

_lock = threading.Lock()
_entries: dict[str, dict[str, str | Callable[..., Any]]] = {
    "planner": {
        "mira-tiny": "tools.vlm.tiny:tiny_mira_planner",
        "mira-7b": "tools.vlm.planner:mira_7b",
        "mira-3b": "tools.vlm.planner:mira_3b",
    },
    "editor": {
        "flux2-klein-tiny": "tools.editors.tiny:tiny_flux2_klein_editor",
        "flux2-klein-base-tiny": "tools.editors.tiny:tiny_flux2_klein_base_editor",
        "flux2-dev-tiny": "tools.editors.tiny:tiny_flux2_editor",
        "kontext-tiny": "tools.editors.tiny:tiny_flux_kontext_editor",
        "qwen-edit-tiny": "tools.editors.tiny:tiny_qwen_edit_plus_editor",
        "ip2p-tiny": "tools.editors.tiny:tiny_ip2p_editor",
        "flux2-klein-9b": "tools.editors.flux2:klein_9b",
        "flux2-klein-4b": "tools.editors.flux2:klein_4b",
        "flux2-klein-base-9b": "tools.editors.flux2:klein_base_9b",
        "flux2-klein-base-4b": "tools.editors.flux2:klein_base_4b",
        "flux2-dev": "tools.editors.flux2:dev",
        "kontext-dev": "tools.editors.flux_kontext:kontext_dev",
        "qwen-edit-2509": "tools.editors.qwen_edit:qwen_edit_2509",
        "qwen-edit-2511": "tools.editors.qwen_edit:qwen_edit_2511",
        "ip2p": "tools.editors.ip2p:instruct_pix2pix",
    },
    "grounder": {
        "qwen-vl-tiny": "tools.vlm.tiny:tiny_grounder",
        "qwen3-vl-8b": "tools.vlm.grounder:qwen3vl_8b",
        "qwen2.5-vl-7b": "tools.vlm.grounder:qwen25vl_7b",
    },
    "critic": {
        "editscore-tiny": "tools.vlm.tiny:tiny_editscore_critic",
        "editscore-qwen3-vl-8b": "tools.vlm.critic:editscore_qwen3vl_8b",
        "editscore-qwen3-vl-4b": "tools.vlm.critic:editscore_qwen3vl_4b",
        "editscore-7b": "tools.vlm.critic:editscore_7b",
    },
}


def register(kind: Kind, name: str, factory: str | Callable[[], Any], *, replace: bool = False) -> None:
    """Add a backend. ``factory`` is a callable or a ``"module:attribute"`` string."""
    _check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    with _lock:
        if name in _entries[kind] and not replace:
            raise ValueError(f"{kind} backend {name!r} is already registered (pass replace=True)")
        _entries[kind][name] = factory


def available(kind: Kind) -> list[str]:
    """The registered backend names of one kind, sorted."""
    _check_kind(kind)
    with _lock:
        return sorted(_entries[kind])


def build(kind: Kind, name: str, **options: Any) -> Any:
    """Build the backend ``name`` of ``kind``, passing ``options`` to its factory (e.g. a local
    checkpoint path); raises ``ValueError`` naming the known ones."""
    _check_kind(kind)
    with _lock:
        factory = _entries[kind].get(name)
    if factory is None:
        raise ValueError(f"unknown {kind} backend {name!r}; registered: {available(kind)}")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory(**options)


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown tool kind {kind!r}; one of {_KINDS}")
