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
from tools.editors._random import (
    FLUX_SCHEDULER,
    TINY_FLUX2,
    TINY_FLUX_VAE,
    TINY_QWEN_TEXT,
    RandomRecipe,
    qwen2_tokenizer,
    tiny_editor,
)


class _Flux2Mirage:
    """MIRAGE support shared by both FLUX.2 editors (``tools.mirage.flux2.MirageFlux2``)."""

    supports_mirage = True

    def mirage_sampler(self: Any, **options: Any) -> tuple[Any, dict[str, Any]]:
        from tools.mirage.flux2 import MirageFlux2

        extra = dict(self.call_kwargs)
        options.setdefault("text_encoder_out_layers", extra.pop("text_encoder_out_layers", None))
        call = {k: v for k, v in extra.items() if k == "max_sequence_length"}
        return MirageFlux2(self._pipeline(), **options), call


__all__ = [
    "Flux2Editor",
    "Flux2KleinEditor",
    "dev",
    "klein_4b",
    "klein_9b",
    "klein_base_4b",
    "klein_base_9b",
    "tiny_flux2_editor",
    "tiny_flux2_klein_editor",
    "tiny_flux2_klein_base_editor",
    "EDITORS",
    "RECIPES",
    "BACKENDS",
]

KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"
KLEIN_BASE_4B = "black-forest-labs/FLUX.2-klein-base-4B"
KLEIN_BASE_9B = "black-forest-labs/FLUX.2-klein-base-9B"


class Flux2Editor(_Flux2Mirage, DiffusersEditor):
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


class Flux2KleinEditor(_Flux2Mirage, DiffusersEditor):
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

    def __init__(
        self,
        model: str | None = None,
        *,
        distilled: bool | None = None,
        pipeline: Any = None,
        **kwargs: Any,
    ) -> None:
        if distilled is not None and not isinstance(distilled, bool):
            raise ValueError(f"distilled must be None or a bool, got {distilled!r}")
        if pipeline is not None:
            flag = bool(pipeline.config.is_distilled)
            if distilled is not None and distilled != flag:
                raise ValueError(
                    f"distilled={distilled!r} but the pipeline has is_distilled={flag!r}"
                )
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
            raise ValueError(
                f"model {self.model!r} is a {kind} FLUX.2 [klein] checkpoint "
                f"(is_distilled={flag}) but the editor has distilled={self.distilled!r}"
            )


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


# -- random weights (``tools.editors._random``) and registry names ------------------------------
def _dev_parts(diffusers: Any, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
        "tokenizer": qwen2_tokenizer(256),
    }  # only its chat template and ids < 272 are used


def _klein_parts(diffusers: Any, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
        "tokenizer": qwen2_tokenizer(configs["text_encoder"]["bos_token_id"]),
        "is_distilled": bool(configs["model_index"]["is_distilled"]),
    }


#: Call arguments tiny pipelines need: out-layer indices that exist in a 2-layer text encoder,
#: short prompt padding.
_TINY_CALL = {"max_sequence_length": 64, "text_encoder_out_layers": (1,)}
_TINY_KLEIN = {"transformer": TINY_FLUX2, "vae": TINY_FLUX_VAE, "text_encoder": TINY_QWEN_TEXT}

#: Random-weight builds of this family: the real config folders, and tiny CPU variants.
RECIPES = (
    RandomRecipe(
        pipeline_class=Flux2Editor.pipeline_class,
        models={
            "transformer": ("diffusers", "Flux2Transformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLFlux2"),
            "text_encoder": ("transformers", "Mistral3ForConditionalGeneration"),
        },
        parts=_dev_parts,
        config_dirs=("FLUX.2-dev",),
        tiny={
            "FLUX.2-dev": {
                "transformer": TINY_FLUX2,
                "vae": TINY_FLUX_VAE,
                "text_encoder": {
                    "text_config": {
                        "vocab_size": 272,
                        "hidden_size": 16,
                        "intermediate_size": 37,
                        "head_dim": 4,
                        "num_attention_heads": 4,
                        "num_hidden_layers": 2,
                        "num_key_value_heads": 2,
                        "max_position_embeddings": 512,
                    },
                    "vision_config": {
                        "hidden_size": 16,
                        "head_dim": 4,
                        "num_hidden_layers": 1,
                        "num_attention_heads": 4,
                        "intermediate_size": 37,
                        "image_size": 30,
                        "patch_size": 6,
                    },
                    "image_token_index": 268,
                },
            }
        },
        tiny_call_kwargs={"FLUX.2-dev": _TINY_CALL},
    ),
    RandomRecipe(
        pipeline_class=Flux2KleinEditor.pipeline_class,
        models={
            "transformer": ("diffusers", "Flux2Transformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLFlux2"),
            "text_encoder": ("transformers", "Qwen3ForCausalLM"),
        },
        parts=_klein_parts,
        config_dirs=(
            "FLUX.2-klein-4B",
            "FLUX.2-klein-9B",
            "FLUX.2-klein-base-4B",
            "FLUX.2-klein-base-9B",
        ),
        tiny={"FLUX.2-klein-4B": _TINY_KLEIN, "FLUX.2-klein-base-4B": _TINY_KLEIN},
        tiny_call_kwargs={"FLUX.2-klein-4B": _TINY_CALL, "FLUX.2-klein-base-4B": _TINY_CALL},
    ),
)


def tiny_flux2_editor(**options: Any) -> Flux2Editor:
    """Tiny FLUX.2 [dev] (Mistral3 text encoder, embedded guidance)."""
    return tiny_editor(Flux2Editor, "FLUX.2-dev", options)


def tiny_flux2_klein_editor(**options: Any) -> Flux2KleinEditor:
    """Tiny FLUX.2 [klein], distilled (no CFG)."""
    return tiny_editor(Flux2KleinEditor, "FLUX.2-klein-4B", options)


def tiny_flux2_klein_base_editor(**options: Any) -> Flux2KleinEditor:
    """Tiny FLUX.2 [klein] base: CFG with the base default guidance 4.0."""
    return tiny_editor(Flux2KleinEditor, "FLUX.2-klein-base-4B", options)


#: The editor classes of this family (``tools.editors.editor_classes``).
EDITORS = (Flux2Editor, Flux2KleinEditor)

#: Registry names of this family (``tools.registry``): kind -> name -> factory in this module.
BACKENDS = {
    "editor": {
        "flux2-klein-9b": "klein_9b",
        "flux2-klein-4b": "klein_4b",
        "flux2-klein-base-9b": "klein_base_9b",
        "flux2-klein-base-4b": "klein_base_4b",
        "flux2-dev": "dev",
        "flux2-klein-tiny": "tiny_flux2_klein_editor",
        "flux2-klein-base-tiny": "tiny_flux2_klein_base_editor",
        "flux2-dev-tiny": "tiny_flux2_editor",
    }
}
