"""`import agent` stays light: no langgraph, torch, diffusers, transformers or sam2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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
            "from tools.registry import _entries, available; "
            "all_names = [available(k) for k in ('planner', 'editor', 'grounder', 'critic')]; "
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


def test_families_declare_their_backends_and_tiny_recipes():
    """A family's registry names and tiny recipe live in its own module."""
    code = ("import json, tools.registry as r; "
            "print(json.dumps({k: {n: r._entries[k][n] for n in r.available(k)} "
            "for k in ('planner', 'editor', 'grounder', 'critic')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    entries = json.loads(out.stdout)
    assert entries["editor"]["flux2-klein-tiny"] == "tools.editors.flux2:tiny_flux2_klein_editor"
    assert entries["editor"]["kontext-dev"] == "tools.editors.flux_kontext:kontext_dev"
    assert entries["critic"]["editscore-tiny"] == "tools.vlm.tiny:tiny_editscore_critic"
    assert entries["planner"]["mira-7b"] == "tools.vlm.planner:mira_7b"
    from tools.editors._random import recipes

    assert recipes()["FLUX.1-Kontext-dev"].pipeline_class == "FluxKontextPipeline"
    from tools.editors import flux_kontext

    assert recipes()["FLUX.1-Kontext-dev"] is flux_kontext.RECIPES[0]


def test_registry_refuses_a_name_declared_by_a_family():
    from tools.registry import register

    with pytest.raises(ValueError, match="'flux2-dev' is already registered"):
        register("editor", "flux2-dev", "my_pkg.module:factory")
