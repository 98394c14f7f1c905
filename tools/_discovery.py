"""Finding what the modules of a package declare (backend names, random-weight recipes).

A model family declares its capabilities as module-level names in its own module; the code
that needs them collects them here, so adding a family adds a module and edits no list.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__all__ = ["declared"]


def declared(package: str, name: str) -> list[tuple[str, Any]]:
    """``(module name, value)`` of ``name`` in each public module of ``package`` that defines
    it, in module-name order. Modules whose names start with ``_`` are skipped."""
    pkg = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if (value := getattr(module, name, None)) is not None:
            found.append((module.__name__, value))
    return found
