"""FLUX.1-Kontext [dev] (``FluxKontextPipeline``, black-forest-labs/FLUX.1-Kontext-dev).

The source image's latent tokens are appended to the sequence (in-context editing). The
pipeline's own sizing would rescale any ``height``/``width`` to exactly ``max_area`` (default
1024x1024) and snap the reference image to one of Kontext's preferred resolutions
(``_auto_resize``): the editor passes ``max_area = width * height`` of its own generation size
so its size is kept, and ``auto_resize`` decides the reference snapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.editors._base import DiffusersEditor, factory_kwargs
from tools.editors._random import (
    FLUX_SCHEDULER,
    TINY_CLIP,
    TINY_FLUX_VAE,
    RandomRecipe,
    clip_tokenizer,
    t5_tokenizer,
    tiny_editor,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "FluxKontextEditor",
    "kontext_dev",
    "tiny_flux_kontext_editor",
    "EDITORS",
    "RECIPES",
    "BACKENDS",
]


class FluxKontextEditor(DiffusersEditor):
    """FLUX.1-Kontext editor.

    Defaults (model card): 28 steps, ``guidance_scale`` 2.5 (the distilled guidance embedding,
    one transformer pass per step); generation at ~1024x1024 area whatever the input's size
    (``min_area = max_area = 1024**2``, Kontext's training resolution), pixel multiple 16.

    Args:
        auto_resize: snap the reference image to the nearest of Kontext's preferred
            resolutions (the pipeline's ``_auto_resize``, on by default as in diffusers); off
            keeps the reference at the generation size (what tiny test models need).
            Other arguments: ``DiffusersEditor``.
    """

    pipeline_class = "FluxKontextPipeline"
    family = "FLUX.1-Kontext [dev]"
    default_model = "black-forest-labs/FLUX.1-Kontext-dev"
    default_steps = 28
    default_guidance = 2.5
    default_max_area = 1024 * 1024
    default_min_area = 1024 * 1024

    def __init__(
        self, model: str | None = None, *, auto_resize: bool = True, **kwargs: Any
    ) -> None:
        if not isinstance(auto_resize, bool):
            raise ValueError(f"auto_resize must be a bool, got {auto_resize!r}")
        super().__init__(model, **kwargs)
        self.auto_resize = auto_resize

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
        return {
            "guidance_scale": guidance,
            "height": height,
            "width": width,
            "max_area": width * height,
            "_auto_resize": self.auto_resize,
        }

    supports_mirage = True

    def mirage_sampler(self, **options: Any) -> tuple[Any, dict[str, Any]]:
        """``tools.mirage.flux_kontext.MirageKontext`` on this editor's pipeline."""
        from tools.mirage.flux_kontext import MirageKontext

        call = {k: v for k, v in self.call_kwargs.items() if k == "max_sequence_length"}
        return MirageKontext(self._pipeline(), **options), call


def kontext_dev(**options: Any) -> FluxKontextEditor:
    """Registry factory: black-forest-labs/FLUX.1-Kontext-dev from the local cache; ``options``
    as ``factory_kwargs``."""
    return FluxKontextEditor(**factory_kwargs(options))


# -- random weights (``tools.editors._random``) and registry names ------------------------------
def _parts(diffusers: Any, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": t5_tokenizer(),
    }


#: Random-weight builds of this family: the real config folder, and a tiny CPU variant.
RECIPES = (
    RandomRecipe(
        pipeline_class=FluxKontextEditor.pipeline_class,
        models={
            "transformer": ("diffusers", "FluxTransformer2DModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "T5EncoderModel"),
        },
        parts=_parts,
        config_dirs=("FLUX.1-Kontext-dev",),
        tiny={
            "FLUX.1-Kontext-dev": {
                "transformer": {
                    "in_channels": 16,
                    "num_layers": 1,
                    "num_single_layers": 1,
                    "attention_head_dim": 16,
                    "num_attention_heads": 2,
                    "joint_attention_dim": 32,
                    "pooled_projection_dim": 32,
                    "axes_dims_rope": [4, 4, 8],
                },
                "vae": TINY_FLUX_VAE,
                "text_encoder": TINY_CLIP,
                "text_encoder_2": {
                    "d_model": 32,
                    "d_ff": 37,
                    "d_kv": 8,
                    "num_layers": 2,
                    "num_heads": 4,
                    "relative_attention_num_buckets": 8,
                    "vocab_size": 128,
                },
            }
        },
        tiny_call_kwargs={"FLUX.1-Kontext-dev": {"max_sequence_length": 32}},
    ),
)


def tiny_flux_kontext_editor(**options: Any) -> FluxKontextEditor:
    """Tiny FLUX.1-Kontext, reference image kept at the generation size (no auto-resize)."""
    return tiny_editor(FluxKontextEditor, "FLUX.1-Kontext-dev", options, auto_resize=False)


#: The editor classes of this family (``tools.editors.editor_classes``).
EDITORS = (FluxKontextEditor,)

#: Registry names of this family (``tools.registry``): kind -> name -> factory in this module.
BACKENDS = {"editor": {"kontext-dev": "kontext_dev", "kontext-tiny": "tiny_flux_kontext_editor"}}
