"""Instruction-guided editors on diffusers pipelines, one module per model family.

All share ``DiffusersEditor``'s arguments and behaviour: ``edit(image, instruction, *, seed,
num_inference_steps, guidance_scale, progress)`` returns an RGB image of the input's size;
pipelines load lazily, once per process, from a hub id or local directory (never downloaded),
or come ready-built (``from_pipeline``; ``tools.editors.tiny`` builds random-weight ones).
Importing this package imports neither torch nor diffusers.
"""

from typing import Any

from tools.editors._base import DiffusersEditor, is_pipeline
from tools.editors.flux2 import Flux2Editor, Flux2KleinEditor
from tools.editors.flux_kontext import FluxKontextEditor
from tools.editors.ip2p import InstructPix2PixEditor
from tools.editors.qwen_edit import QwenImageEditPlusEditor

__all__ = [
    "EDITOR_CLASSES",
    "editor_for_pipeline",
    "DiffusersEditor",
    "Flux2Editor",
    "Flux2KleinEditor",
    "FluxKontextEditor",
    "InstructPix2PixEditor",
    "QwenImageEditPlusEditor",
]

#: Every editor class, most specific pipeline first (``editor_for_pipeline`` takes the first
#: whose ``pipeline_class`` the pipeline is an instance of).
EDITOR_CLASSES: tuple[type[DiffusersEditor], ...] = (
    Flux2KleinEditor,
    Flux2Editor,
    FluxKontextEditor,
    QwenImageEditPlusEditor,
    InstructPix2PixEditor,
)


def editor_for_pipeline(pipe: Any, **options: Any) -> DiffusersEditor:
    """The editor of ``pipe``'s family around ``pipe`` (``options`` as ``from_pipeline``):
    chosen by the pipeline's type, so its capabilities (e.g. ``mirage_sampler``) come with it."""
    for cls in EDITOR_CLASSES:
        if is_pipeline(pipe, cls.pipeline_class):
            return cls.from_pipeline(pipe, **options)
    raise ValueError(f"no editor drives {pipe!r}; known pipelines: "
                     f"{[c.pipeline_class for c in EDITOR_CLASSES]}")
