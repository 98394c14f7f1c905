"""Backend names -> factories, per tool kind.

Entries are ``"module:attribute"`` strings, imported only when a backend is built, so naming
a heavy backend costs nothing until it is used. A factory is called with the backend's options
(none by default) and returns an object satisfying the kind's protocol (``tools.contracts``);
keyword options come from ``AgentConfig.backend_options``.

Each model family declares its own names in its own module (``BACKENDS``, e.g.
``tools/editors/flux2.py``); the registry collects them from ``FAMILY_PACKAGES`` on first use.
Layers above add their own with ``register`` (``agent`` registers its test doubles, e.g. the
``dry-run`` preset's ``"paint"`` editor).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Literal

from tools._discovery import declared

__all__ = ["Kind", "FAMILY_PACKAGES", "register", "available", "build"]

Kind = Literal["planner", "editor", "grounder", "critic"]
_KINDS: tuple[str, ...] = ("planner", "editor", "grounder", "critic")

#: Packages whose public modules may declare ``BACKENDS`` (kind -> name -> factory attribute
#: of that module): a model family lists its own names in its own module.
FAMILY_PACKAGES: tuple[str, ...] = ("tools.editors", "tools.vlm")

_lock = threading.RLock()
#: kind -> name -> factory; filled from the families on first use, plus ``register`` calls.
_entries: dict[str, dict[str, str | Callable[..., Any]]] = {kind: {} for kind in _KINDS}
_discovered = False


def _discover() -> None:
    """Add the ``BACKENDS`` the family modules declare (once; they import no heavy library)."""
    global _discovered
    with _lock:
        if _discovered:
            return
        for package in FAMILY_PACKAGES:
            for module, backends in declared(package, "BACKENDS"):
                for kind, names in backends.items():
                    _check_kind(kind)
                    for name, attr in names.items():
                        target = f"{module}:{attr}"
                        known = _entries[kind].get(name)
                        if known is not None and known != target:
                            raise ValueError(
                                f"{kind} backend {name!r} is declared twice: "
                                f"{known!r} and {target!r}"
                            )
                        _entries[kind][name] = target
        _discovered = True


def register(
    kind: Kind, name: str, factory: str | Callable[[], Any], *, replace: bool = False
) -> None:
    """Add a backend. ``factory`` is a callable or a ``"module:attribute"`` string."""
    _check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    _discover()  # so a name a family declares is never silently shadowed
    with _lock:
        if name in _entries[kind] and not replace:
            raise ValueError(f"{kind} backend {name!r} is already registered (pass replace=True)")
        _entries[kind][name] = factory


def available(kind: Kind) -> list[str]:
    """The registered backend names of one kind, sorted."""
    _check_kind(kind)
    _discover()
    with _lock:
        return sorted(_entries[kind])


def build(kind: Kind, name: str, **options: Any) -> Any:
    """Build the backend ``name`` of ``kind``, passing ``options`` to its factory (e.g. a local
    checkpoint path); raises ``ValueError`` naming the known ones."""
    _check_kind(kind)
    _discover()
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
