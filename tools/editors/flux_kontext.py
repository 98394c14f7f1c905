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

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["FluxKontextEditor", "kontext_dev"]


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

    def __init__(self, model: str | None = None, *, auto_resize: bool = True, **kwargs: Any) -> None:
        if not isinstance(auto_resize, bool):
            raise ValueError(f"auto_resize must be a bool, got {auto_resize!r}")
        super().__init__(model, **kwargs)
        self.auto_resize = auto_resize

    def _call_kwargs(self, pipe: Any, image: Image.Image, instruction: str, steps: int,
                     guidance: float, width: int, height: int) -> dict[str, Any]:
        return {"guidance_scale": guidance, "height": height, "width": width,
                "max_area": width * height, "_auto_resize": self.auto_resize}


def kontext_dev(**options: Any) -> FluxKontextEditor:
    """Registry factory: black-forest-labs/FLUX.1-Kontext-dev from the local cache; ``options``
    as ``factory_kwargs``."""
    return FluxKontextEditor(**factory_kwargs(options))
