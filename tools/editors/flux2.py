"""FLUX.2 [dev] (``Flux2Pipeline``) and FLUX.2 [klein] (``Flux2KleinPipeline``).

Both append the source image's latent tokens to the sequence as reference conditioning and
take any size that is a multiple of 16 (8x VAE, 2x2 patches), at least 64 px a side; the
reference image is capped at 1024x1024 by the pipelines, so that is the default ``max_area``.

- [dev]: 32B transformer, Mistral-Small-3.2 text encoder; ``guidance_scale`` feeds the
  guidance-distilled embedding (one transformer pass per step).
- [klein] 4B / 9B, Qwen3 text encoder, in two kinds: *distilled* (4 steps, no CFG:
  ``guidance_scale`` is ignored by the pipeline) and *base* (~50 steps, real classifier-free
  guidance: two transformer passes per step when ``guidance_scale > 1``). The kind is the
  checkpoint's ``is_distilled`` flag (``model_index.json``); the editor checks it agrees.
"""

from __future__ import annotations

from typing import Any

from tools.editors._base import DiffusersEditor, factory_kwargs

__all__ = [
    "Flux2Editor",
    "Flux2KleinEditor",
    "dev",
    "klein_4b",
    "klein_9b",
    "klein_base_4b",
    "klein_base_9b",
]

KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"
KLEIN_BASE_4B = "black-forest-labs/FLUX.2-klein-base-4B"
KLEIN_BASE_9B = "black-forest-labs/FLUX.2-klein-base-9B"


class Flux2Editor(DiffusersEditor):
    """FLUX.2 [dev] editor.

    Defaults (model card): 50 steps, ``guidance_scale`` 4.0 (embedded guidance); generation at
    the input's size capped at 1024x1024 area, at least 64 px a side, multiple of 16. Other
    arguments: ``DiffusersEditor``.
    """

    pipeline_class = "Flux2Pipeline"
    family = "FLUX.2 [dev]"
    default_model = "black-forest-labs/FLUX.2-dev"
    default_steps = 50
    default_guidance = 4.0
    default_max_area = 1024 * 1024
    min_side = 64


class Flux2KleinEditor(DiffusersEditor):
    """FLUX.2 [klein] editor, distilled or base.

    Defaults (model cards): distilled 4 steps, ``guidance_scale`` 1.0 (no CFG), default model
    FLUX.2-klein-9B; base 50 steps, ``guidance_scale`` 4.0 (CFG against an empty prompt),
    default model FLUX.2-klein-base-9B. Sizes as ``Flux2Editor``.

    Args:
        distilled: which kind of checkpoint this is; None = True, or the pipeline's
            ``is_distilled`` when a pipeline is given. Loading a checkpoint of the other kind
            raises ``ValueError``. Other arguments: ``DiffusersEditor``.
    """

    pipeline_class = "Flux2KleinPipeline"
    family = "FLUX.2 [klein]"
    default_model = KLEIN_9B
    default_steps = 4
    default_guidance = 1.0
    default_max_area = 1024 * 1024
    min_side = 64

    def __init__(self, model: str | None = None, *, distilled: bool | None = None,
                 pipeline: Any = None, **kwargs: Any) -> None:
        if distilled is not None and not isinstance(distilled, bool):
            raise ValueError(f"distilled must be None or a bool, got {distilled!r}")
        if pipeline is not None:
            flag = bool(pipeline.config.is_distilled)
            if distilled is not None and distilled != flag:
                raise ValueError(f"distilled={distilled!r} but the pipeline has is_distilled={flag!r}")
            distilled = flag
        self.distilled = True if distilled is None else distilled
        if not self.distilled:  # per-instance defaults of the base kind
            self.default_model = KLEIN_BASE_9B
            self.default_steps = 50
            self.default_guidance = 4.0
        super().__init__(model, pipeline=pipeline, **kwargs)

    @property
    def uses_cfg(self) -> bool:
        """Whether an edit at this editor's default guidance runs two passes per step."""
        return not self.distilled and self.guidance_scale > 1

    def _check_pipeline(self, pipe: Any) -> None:
        flag = bool(pipe.config.is_distilled)
        if flag != self.distilled:
            kind = "distilled" if flag else "base (undistilled)"
            raise ValueError(f"model {self.model!r} is a {kind} FLUX.2 [klein] checkpoint "
                             f"(is_distilled={flag}) but the editor has distilled={self.distilled!r}")


# Registry factories. ``options`` as ``factory_kwargs``: e.g. ``model="/models/klein-9b"``,
# ``dtype="bfloat16"``, ``device="cuda:1"``, ``cpu_offload=True``, ``num_inference_steps=8``.
def dev(**options: Any) -> Flux2Editor:
    """FLUX.2 [dev] from the local cache (bf16 weights take ~105 GiB: pass
    ``cpu_offload=True`` on an 80 GB GPU)."""
    return Flux2Editor(**factory_kwargs(options))


def klein_4b(**options: Any) -> Flux2KleinEditor:
    """FLUX.2 [klein] 4B, distilled (4 steps)."""
    return Flux2KleinEditor(**factory_kwargs(options, model=KLEIN_4B, distilled=True))


def klein_9b(**options: Any) -> Flux2KleinEditor:
    """FLUX.2 [klein] 9B, distilled (4 steps)."""
    return Flux2KleinEditor(**factory_kwargs(options, model=KLEIN_9B, distilled=True))


def klein_base_4b(**options: Any) -> Flux2KleinEditor:
    """FLUX.2 [klein] base 4B (50 steps, CFG)."""
    return Flux2KleinEditor(**factory_kwargs(options, model=KLEIN_BASE_4B, distilled=False))


def klein_base_9b(**options: Any) -> Flux2KleinEditor:
    """FLUX.2 [klein] base 9B (50 steps, CFG)."""
    return Flux2KleinEditor(**factory_kwargs(options, model=KLEIN_BASE_9B, distilled=False))
