"""The LangGraph graph of the editing loop, its state and its per-run context.

Names load on first use (``langgraph`` is heavy): ``import graphs`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["GRAPH_NAME", "Components", "build_graph", "EditContext", "InputLimits"]

_WHERE = {
    "GRAPH_NAME": "graphs.editing",
    "Components": "graphs.editing",
    "build_graph": "graphs.editing",
    "EditContext": "graphs.context",
    "InputLimits": "graphs.context",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
