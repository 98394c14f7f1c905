"""Instruction-guided editors on diffusers pipelines (DESIGN 5), one class per model family.

All share ``DiffusersEditor``'s arguments and behaviour: ``edit(image, instruction, *, seed,
num_inference_steps, guidance_scale, progress)`` returns an RGB image of the input's size;
pipelines load lazily, once per process, from a hub id or local directory (never downloaded),
or come ready-built (``from_pipeline``; ``tools.editors.tiny`` builds random-weight ones).
Importing this package imports neither torch nor diffusers.
"""

from tools.editors._base import DiffusersEditor
from tools.editors.flux2 import Flux2Editor, Flux2KleinEditor
from tools.editors.flux_kontext import FluxKontextEditor
from tools.editors.ip2p import InstructPix2PixEditor
from tools.editors.qwen_edit import QwenImageEditPlusEditor

__all__ = [
    "DiffusersEditor",
    "Flux2Editor",
    "Flux2KleinEditor",
    "FluxKontextEditor",
    "InstructPix2PixEditor",
    "QwenImageEditPlusEditor",
]
