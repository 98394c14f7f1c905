"""A model family is one module: it declares its editors, registry names, random-weight recipes
and MIRAGE support, and everything that needs them finds them (no list to edit elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_families_declare_their_backends_and_tiny_recipes():
    """A family's registry names and tiny recipe live in its own module."""
    code = (
        "import json, tools.registry as r; "
        "print(json.dumps({k: {n: r._entries[k][n] for n in r.available(k)} "
        "for k in ('planner', 'editor', 'grounder', 'critic')}))"
    )
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


TOY = """
from tools.editors.flux2 import Flux2KleinEditor


class ToyEditor(Flux2KleinEditor):
    family = "toy"


def toy(**options):
    return ToyEditor(**options)


EDITORS = (ToyEditor,)
BACKENDS = {"editor": {"toy-editor": "toy"}}
"""


def test_a_new_family_module_is_found_without_any_other_edit(tmp_path, monkeypatch):
    """What docs/architecture.md promises: a module in tools/editors that declares EDITORS and
    BACKENDS is picked up by the registry and by editor_classes(), nothing else edited."""
    import tools.editors
    import tools.registry as registry
    from tools.editors import editor_classes

    (tmp_path / "toy_family.py").write_text(TOY)
    monkeypatch.setattr(tools.editors, "__path__", [*tools.editors.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_entries", {kind: {} for kind in registry._KINDS})
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.delitem(sys.modules, "tools.editors.toy_family", raising=False)
    try:
        assert registry._entries["editor"] == {}
        assert "toy-editor" in registry.available("editor")
        assert registry._entries["editor"]["toy-editor"] == "tools.editors.toy_family:toy"
        assert type(registry.build("editor", "toy-editor")).__name__ == "ToyEditor"
        assert "ToyEditor" in [cls.__name__ for cls in editor_classes()]
    finally:
        sys.modules.pop("tools.editors.toy_family", None)
