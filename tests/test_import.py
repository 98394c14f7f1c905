"""`import agent` stays light: no langgraph, torch, diffusers, transformers or sam2."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_agent_is_light():
    code = ("import sys, json, agent, agent.config, agent.testing, tools, tools.registry; "
            "print(json.dumps(sorted(m for m in ('langgraph', 'torch', 'diffusers', 'transformers', "
            "'sam2', 'langchain_core') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_lower_layers_import_no_higher_one():
    """tools < graphs < agent: building the loop imports no agent module, and the registry of
    tools names no backend of agent (agent registers its own test doubles)."""
    code = ("import sys, json, tools.registry, tools.mirage.tool, tools.vlm, graphs.editing; "
            "from tools.registry import _entries; "
            "print(json.dumps({'agent': sorted(m for m in sys.modules if m.split('.')[0] == 'agent'), "
            "'names': sorted(f for kind in _entries.values() for f in kind.values() "
            "if isinstance(f, str) and f.startswith('agent.'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"agent": [], "names": []}


def test_agent_registers_its_test_doubles():
    import agent  # noqa: F401
    from tools.registry import available

    assert "paint" in available("editor") and "split" in available("planner")
    assert "side" in available("grounder") and "pixel-change" in available("critic")
