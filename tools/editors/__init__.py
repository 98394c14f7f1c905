"""Instruction-guided editors on diffusers pipelines, one module per model family.

All share ``DiffusersEditor``'s arguments and behaviour: ``edit(image, instruction, *, seed,
num_inference_steps, guidance_scale, progress)`` returns an RGB image of the input's size;
pipelines load lazily, once per process, from a hub id or local directory (never downloaded),
or come ready-built (``from_pipeline``; ``tools.editors.tiny`` builds random-weight ones).
Importing this package imports neither torch nor diffusers.

A family is one module here that declares what it has: ``EDITORS`` (its editor classes),
``BACKENDS`` (its registry names), ``RECIPES`` (random-weight builds, tiny ones for tests) and,
on an editor class, ``supports_mirage`` / ``mirage_sampler``. Nothing else lists families:
``editor_classes()``, ``tools.registry`` and ``tools.editors._random`` collect the declarations.
"""

from typing import Any

from tools._discovery import declared
from tools.editors._base import DiffusersEditor, import_diffusers, is_pipeline
from tools.editors.flux2 import Flux2Editor, Flux2KleinEditor
from tools.editors.flux_kontext import FluxKontextEditor
from tools.editors.ip2p import InstructPix2PixEditor
from tools.editors.qwen_edit import QwenImageEditPlusEditor

__all__ = [
    "editor_classes",
    "editor_for_pipeline",
    "DiffusersEditor",
    "Flux2Editor",
    "Flux2KleinEditor",
    "FluxKontextEditor",
    "InstructPix2PixEditor",
    "QwenImageEditPlusEditor",
]


def editor_classes() -> tuple[type[DiffusersEditor], ...]:
    """Every editor class, as the family modules of this package declare them (``EDITORS``)."""
    return tuple(cls for _, classes in declared("tools.editors", "EDITORS") for cls in classes)


def editor_for_pipeline(pipe: Any, **options: Any) -> DiffusersEditor:
    """The editor of ``pipe``'s family around ``pipe`` (``options`` as ``from_pipeline``):
    chosen by the pipeline's type (the most specific match), so the family's capabilities
    (e.g. ``mirage_sampler``) come with it."""
    matches = [cls for cls in editor_classes() if is_pipeline(pipe, cls.pipeline_class)]
    if not matches:
        raise ValueError(
            f"no editor drives {pipe!r}; known pipelines: "
            f"{sorted(c.pipeline_class for c in editor_classes())}"
        )
    diffusers = import_diffusers()
    best = max(matches, key=lambda cls: len(getattr(diffusers, cls.pipeline_class).__mro__))
    return best.from_pipeline(pipe, **options)
