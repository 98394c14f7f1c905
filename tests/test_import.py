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
