"""InstructPix2Pix (``StableDiffusionInstructPix2PixPipeline``, timbrooks/instruct-pix2pix).

SD 1.5 UNet with the source latent concatenated to the noise (8 input channels); two guidance
scales: text (``guidance_scale``) and image (``image_guidance_scale``), three UNet passes per
step. It generates at the input's aspect ratio: a different ``width``/``height`` in ``edit``
is reached by resizing the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.editors._base import DiffusersEditor, _check_guidance, factory_kwargs
from tools.editors._random import (
    SD_SCHEDULER,
    TINY_CLIP,
    TINY_FLUX_VAE,
    RandomRecipe,
    clip_tokenizer,
    tiny_editor,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "InstructPix2PixEditor",
    "instruct_pix2pix",
    "tiny_ip2p_editor",
    "EDITORS",
    "RECIPES",
    "BACKENDS",
]


class InstructPix2PixEditor(DiffusersEditor):
    """InstructPix2Pix editor.

    Defaults: 20 steps, ``guidance_scale`` 7.5 (text CFG), ``image_guidance_scale`` 1.5 (the
    diffusers documentation's values; the model card also shows 10 steps with image guidance
    1.0); ``max_area`` 512x512, SD 1.5's resolution (larger inputs are edited at ~512x512 and
    scaled back). Pixel multiple 8 (the VAE factor; the UNet has no patching).

    Args:
        image_guidance_scale: how strongly the result follows the source image (>= 1 enables
            image guidance). Other arguments: ``DiffusersEditor``.
    """

    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    family = "InstructPix2Pix"
    default_model = "timbrooks/instruct-pix2pix"
    default_steps = 20
    default_guidance = 7.5
    default_max_area = 512 * 512
    min_side = 64

    def __init__(
        self, model: str | None = None, *, image_guidance_scale: float = 1.5, **kwargs: Any
    ) -> None:
        _check_guidance("image_guidance_scale", image_guidance_scale)
        super().__init__(model, **kwargs)
        self.image_guidance_scale = float(image_guidance_scale)

    @staticmethod
    def _multiple(pipe: Any) -> int:
        return int(pipe.vae_scale_factor)

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
        # The output takes the (already resized) input's size; width/height are not arguments.
        return {"guidance_scale": guidance, "image_guidance_scale": self.image_guidance_scale}


def instruct_pix2pix(**options: Any) -> InstructPix2PixEditor:
    """Registry factory: timbrooks/instruct-pix2pix from the local cache; ``options`` as
    ``factory_kwargs`` (e.g. ``model="/models/ip2p"``, ``dtype="float16"``)."""
    return InstructPix2PixEditor(**factory_kwargs(options))


# -- random weights (``tools.editors._random``) and registry names ------------------------------
def _parts(diffusers: Any, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "scheduler": diffusers.EulerAncestralDiscreteScheduler.from_config(SD_SCHEDULER),
        "tokenizer": clip_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


#: Random-weight builds of this family: the real config folder, and a tiny CPU variant.
RECIPES = (
    RandomRecipe(
        pipeline_class=InstructPix2PixEditor.pipeline_class,
        models={
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
        },
        parts=_parts,
        config_dirs=("instruct-pix2pix",),
        tiny={
            "instruct-pix2pix": {
                "unet": {
                    "block_out_channels": [16, 32],
                    "layers_per_block": 1,
                    "sample_size": 16,
                    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                    "cross_attention_dim": 32,
                    "attention_head_dim": 8,
                    "norm_num_groups": 8,
                },
                "vae": TINY_FLUX_VAE,
                "text_encoder": TINY_CLIP,
            }
        },
        tiny_call_kwargs={"instruct-pix2pix": {}},
    ),
)


def tiny_ip2p_editor(**options: Any) -> InstructPix2PixEditor:
    """Tiny InstructPix2Pix (text and image CFG: one UNet pass on a batch of 3 per step)."""
    return tiny_editor(InstructPix2PixEditor, "instruct-pix2pix", options)


#: The editor classes of this family (``tools.editors.editor_classes``).
EDITORS = (InstructPix2PixEditor,)

#: Registry names of this family (``tools.registry``): kind -> name -> factory in this module.
BACKENDS = {"editor": {"ip2p": "instruct_pix2pix", "ip2p-tiny": "tiny_ip2p_editor"}}
