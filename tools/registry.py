"""Backend names -> factories, per tool kind.

Entries are ``"module:attribute"`` strings, imported only when a backend is built, so naming
a heavy backend costs nothing until it is used. A factory is called with no arguments and
returns an object satisfying the kind's protocol (``tools.contracts``).
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
_entries: dict[str, dict[str, str | Callable[[], Any]]] = {
    "planner": {"split": "agent.testing:SplitPlanner"},
    "editor": {"paint": "agent.testing:PaintEditor"},
    "grounder": {"side": "agent.testing:SideGrounder"},
    "critic": {"pixel-change": "agent.testing:PixelChangeCritic"},
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


def build(kind: Kind, name: str) -> Any:
    """Build the backend ``name`` of ``kind``; raises ``ValueError`` naming the known ones."""
    _check_kind(kind)
    with _lock:
        factory = _entries[kind].get(name)
    if factory is None:
        raise ValueError(f"unknown {kind} backend {name!r}; registered: {available(kind)}")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory()


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown tool kind {kind!r}; one of {_KINDS}")
