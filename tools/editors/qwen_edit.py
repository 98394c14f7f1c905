"""Qwen-Image-Edit-2509 / -2511 (``QwenImageEditPlusPipeline``).

A 20B MMDiT with a Qwen2.5-VL-7B text encoder that also *sees* the source image. The pipeline
resizes every reference image twice, to module constants of
``diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus`` (diffusers 0.42):
``VAE_IMAGE_SIZE`` (1024x1024 area, for the VAE latent the transformer attends to) and
``CONDITION_IMAGE_SIZE`` (384x384 area, for the VLM). Those areas are fixed for real models;
tiny test models need them small (a tiny call takes ~20 s at the shipped sizes). The editor's
``vae_image_size`` / ``condition_image_size`` options set those constants *for the duration of
its own pipeline call only*, under a module lock that every call of this editor takes, so two
Qwen edits in one process never see each other's sizes; nothing is changed at import time.
The cost: Qwen edits of one process run one at a time even on different GPUs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tools.editors._base import DiffusersEditor, factory_kwargs

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["QwenImageEditPlusEditor", "qwen_edit_2509", "qwen_edit_2511"]

QWEN_EDIT_2509 = "Qwen/Qwen-Image-Edit-2509"
QWEN_EDIT_2511 = "Qwen/Qwen-Image-Edit-2511"

#: Held while a call runs with this editor's reference sizes in the pipeline module.
_SIZES_LOCK = threading.RLock()


class QwenImageEditPlusEditor(DiffusersEditor):
    """Qwen-Image-Edit-2509/2511 editor (default model: 2511).

    Defaults (model cards): 40 steps, ``guidance_scale`` 4.0, which is the pipeline's
    ``true_cfg_scale`` (real CFG against ``negative_prompt``, two transformer passes per step;
    <= 1 turns CFG off); generation at ~1024x1024 area whatever the input's size
    (``min_area = max_area = 1024**2``, as the pipeline's own default), multiple of 16.

    Args:
        negative_prompt: the CFG negative prompt (the model cards use a single space).
        vae_image_size, condition_image_size: reference-image areas in pixels for the VAE and
            the VLM; None = the pipeline's (1024*1024 and 384*384). See the module docstring.
            Other arguments: ``DiffusersEditor``.
    """

    pipeline_class = "QwenImageEditPlusPipeline"
    family = "Qwen-Image-Edit"
    default_model = QWEN_EDIT_2511
    default_steps = 40
    default_guidance = 4.0
    default_max_area = 1024 * 1024
    default_min_area = 1024 * 1024

    def __init__(self, model: str | None = None, *, negative_prompt: str = " ",
                 vae_image_size: int | None = None, condition_image_size: int | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(negative_prompt, str) or not negative_prompt:
            raise ValueError(f"negative_prompt must be a non-empty string, got {negative_prompt!r}")
        sizes = {"vae_image_size": vae_image_size, "condition_image_size": condition_image_size}
        for name, value in sizes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1024):
                raise ValueError(f"{name} must be None or an area in pixels >= 1024, got {value!r}")
        super().__init__(model, **kwargs)
        self.negative_prompt = negative_prompt
        self.vae_image_size = vae_image_size
        self.condition_image_size = condition_image_size

    def _call_kwargs(self, pipe: Any, image: Image.Image, instruction: str, steps: int,
                     guidance: float, width: int, height: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"true_cfg_scale": guidance, "height": height, "width": width}
        if guidance > 1:  # the pipeline runs CFG only with a negative prompt
            kwargs["negative_prompt"] = self.negative_prompt
        return kwargs

    def _run(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

        with _SIZES_LOCK:
            shipped = module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE
            module.VAE_IMAGE_SIZE = self.vae_image_size or shipped[0]
            module.CONDITION_IMAGE_SIZE = self.condition_image_size or shipped[1]
            try:
                return pipe(**kwargs)
            finally:
                module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = shipped


def qwen_edit_2509(**options: Any) -> QwenImageEditPlusEditor:
    """Registry factory: Qwen/Qwen-Image-Edit-2509 from the local cache; ``options`` as
    ``factory_kwargs``."""
    return QwenImageEditPlusEditor(**factory_kwargs(options, model=QWEN_EDIT_2509))


def qwen_edit_2511(**options: Any) -> QwenImageEditPlusEditor:
    """Registry factory: Qwen/Qwen-Image-Edit-2511 from the local cache; ``options`` as
    ``factory_kwargs``."""
    return QwenImageEditPlusEditor(**factory_kwargs(options, model=QWEN_EDIT_2511))
