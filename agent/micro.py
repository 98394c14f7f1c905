"""The project's own micro models, shipped in ``weights/`` and trained by ``mira-train``.

``micro_editor()`` is the ``micro-editor`` backend: the FLUX.2 [klein] editor
(``tools.editors.flux2.Flux2KleinEditor``) loading the shipped folder through
``Flux2KleinPipeline.from_pretrained``, the path of any real checkpoint. The folder's
``micro_editor.json`` gives the call arguments the tiny text encoder needs (prompt length,
hidden-state layers) and the step count it was validated at; ``docs/micro_editor.md`` is its
model card. The model knows the micro-world only: 224 px scenes of simple shapes, and the
train split of the micro-world's language.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["WEIGHTS", "MICRO_EDITOR", "micro_editor", "micro_editor_meta"]

#: The shipped weights, beside the packages in the repository.
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
MICRO_EDITOR = WEIGHTS / "micro-editor"


def micro_editor_meta(model: str | Path = MICRO_EDITOR) -> dict[str, Any]:
    """The ``micro_editor.json`` of a micro editor folder; ``FileNotFoundError`` naming the
    folder when it is not one."""
    path = Path(model) / "micro_editor.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no micro editor at {str(model)!r} (no micro_editor.json): the shipped one is "
            f"{str(MICRO_EDITOR)!r} in a checkout of the repository; `mira-train editor` makes one"
        )
    return json.loads(path.read_text())


def micro_editor(*, model: str | Path | None = None, **options: Any) -> Any:
    """The micro editor as a ``Flux2KleinEditor``. ``model`` = another trained folder;
    ``options`` as the editor's (``num_inference_steps``, ``device``, ``dtype``, ...)."""
    from tools.editors._base import factory_kwargs
    from tools.editors.flux2 import Flux2KleinEditor

    folder = Path(model) if model is not None else MICRO_EDITOR
    meta = micro_editor_meta(folder)
    defaults = {
        "num_inference_steps": int(meta["num_inference_steps"]),
        "call_kwargs": dict(meta["call_kwargs"]),
        "dtype": "float32",
    }
    return Flux2KleinEditor(
        **factory_kwargs({**defaults, **options}, model=str(folder), distilled=True)
    )
