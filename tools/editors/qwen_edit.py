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
from tools.editors._random import (
    QWEN_SCHEDULER,
    TINY_QWEN_TEXT,
    RandomRecipe,
    qwen2_tokenizer,
    qwen2vl_processor,
    tiny_editor,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "QwenImageEditPlusEditor",
    "qwen_edit_2509",
    "qwen_edit_2511",
    "tiny_qwen_edit_plus_editor",
    "EDITORS",
    "RECIPES",
    "BACKENDS",
]

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

    def __init__(
        self,
        model: str | None = None,
        *,
        negative_prompt: str = " ",
        vae_image_size: int | None = None,
        condition_image_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(negative_prompt, str) or not negative_prompt:
            raise ValueError(f"negative_prompt must be a non-empty string, got {negative_prompt!r}")
        sizes = {"vae_image_size": vae_image_size, "condition_image_size": condition_image_size}
        for name, value in sizes.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1024
            ):
                raise ValueError(f"{name} must be None or an area in pixels >= 1024, got {value!r}")
        super().__init__(model, **kwargs)
        self.negative_prompt = negative_prompt
        self.vae_image_size = vae_image_size
        self.condition_image_size = condition_image_size

    def _call_kwargs(
        self,
        pipe: Any,
        image: Image.Image,
        instruction: str,
        steps: int,
        guidance: float,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"true_cfg_scale": guidance, "height": height, "width": width}
        if guidance > 1:  # the pipeline runs CFG only with a negative prompt
            kwargs["negative_prompt"] = self.negative_prompt
        return kwargs

    supports_mirage = True

    def mirage_sampler(self, **options: Any) -> tuple[Any, dict[str, Any]]:
        """``tools.mirage.qwen_edit.MirageQwenEdit`` on this editor's pipeline, with its
        reference sizes and negative prompt."""
        from tools.mirage.qwen_edit import MirageQwenEdit

        options.setdefault("vae_image_size", self.vae_image_size)
        options.setdefault("condition_image_size", self.condition_image_size)
        call = {
            "negative_prompt": self.negative_prompt,
            **{k: v for k, v in self.call_kwargs.items() if k == "max_sequence_length"},
        }
        return MirageQwenEdit(self._pipeline(), **options), call

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


# -- random weights (``tools.editors._random``) and registry names ------------------------------
def _parts(diffusers: Any, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tokenizer = qwen2_tokenizer(configs["text_encoder"]["bos_token_id"])
    return {
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(QWEN_SCHEDULER),
        "tokenizer": tokenizer,
        "processor": qwen2vl_processor(tokenizer, configs["processor_preprocessor_config"]),
    }


_TINY = {
    "transformer": {
        "in_channels": 16,
        "out_channels": 4,
        "num_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 16,
        "axes_dims_rope": [8, 4, 4],
    },
    "vae": {
        "base_dim": 8,
        "z_dim": 4,
        "dim_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "latents_mean": [0.0] * 4,
        "latents_std": [1.0] * 4,
    },
    "text_encoder": {
        **TINY_QWEN_TEXT,
        "vocab_size": 272,
        "image_token_id": 268,
        "video_token_id": 269,
        "vision_start_token_id": 265,
        "vision_end_token_id": 266,
        "vision_token_id": 267,
        "rope_scaling": {"mrope_section": [2, 1, 1], "rope_type": "default", "type": "default"},
        "text_config": {
            **TINY_QWEN_TEXT,
            "vision_start_token_id": 265,
            "vision_end_token_id": 266,
            "vision_token_id": 267,
            "rope_scaling": {"mrope_section": [2, 1, 1], "rope_type": "default", "type": "default"},
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "fullatt_block_indexes": [1],
            "window_size": 56,
        },
    },
    "processor": {"min_pixels": 28 * 28, "max_pixels": 56 * 56},
}

#: Random-weight builds of this family: the real config folders, and tiny CPU variants.
RECIPES = (
    RandomRecipe(
        pipeline_class=QwenImageEditPlusEditor.pipeline_class,
        models={
            "transformer": ("diffusers", "QwenImageTransformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLQwenImage"),
            "text_encoder": ("transformers", "Qwen2_5_VLForConditionalGeneration"),
        },
        parts=_parts,
        config_dirs=("Qwen-Image-Edit-2509", "Qwen-Image-Edit-2511"),
        tiny={"Qwen-Image-Edit-2511": _TINY, "Qwen-Image-Edit-2509": _TINY},
        tiny_call_kwargs={"Qwen-Image-Edit-2509": {}, "Qwen-Image-Edit-2511": {}},
    ),
)


def tiny_qwen_edit_plus_editor(**options: Any) -> QwenImageEditPlusEditor:
    """Tiny Qwen-Image-Edit-2511, with reference images at 64x64 (VAE) and 56x56 (VLM)."""
    return tiny_editor(
        QwenImageEditPlusEditor,
        "Qwen-Image-Edit-2511",
        options,
        vae_image_size=64 * 64,
        condition_image_size=56 * 56,
    )


#: The editor classes of this family (``tools.editors.editor_classes``).
EDITORS = (QwenImageEditPlusEditor,)

#: Registry names of this family (``tools.registry``): kind -> name -> factory in this module.
BACKENDS = {
    "editor": {
        "qwen-edit-2509": "qwen_edit_2509",
        "qwen-edit-2511": "qwen_edit_2511",
        "qwen-edit-tiny": "tiny_qwen_edit_plus_editor",
    }
}
