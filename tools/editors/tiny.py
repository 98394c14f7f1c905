"""Random-weight pipelines for every editor family, built offline: tiny ones for CPU tests and
the ``tiny`` preset, real-size ones from ``tools/model_configs`` for GPU timing.

Both go through one code path: ``build_from_configs(config_dir, dtype, device, overrides=)``
reads the real architecture configs (``tools/model_configs/<config_dir>/*.json``), deep-merges
``overrides`` into them, and builds every component with random weights; the tiny builders are
that call with the ``TINY`` overrides (1-layer transformers, 2-layer text encoders, 4-block VAEs
so the VAE factor is the real 8) and a fixed seed.

Tokenizers are never downloaded: they are built inline over the 256 byte-level symbols
(``qwen2_tokenizer``, ``clip_tokenizer``, ``t5_tokenizer``), with the special tokens at the
ids the model config expects. They tokenise any text, but not as the real vocabularies do, so
a real-size pipeline built here is for timing and memory, never for image quality.

Scheduler settings are the families' published ones as far as known (timing does not depend
on them).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tools.editors._base import import_diffusers
from tools.editors.flux2 import Flux2Editor, Flux2KleinEditor
from tools.editors.flux_kontext import FluxKontextEditor
from tools.editors.ip2p import InstructPix2PixEditor
from tools.editors.qwen_edit import QwenImageEditPlusEditor
from tools.models import REGISTRY, torch_dtype

__all__ = [
    "CONFIG_ROOT",
    "CONFIG_DIRS",
    "TINY",
    "TINY_CALL_KWARGS",
    "build_from_configs",
    "tiny_pipeline",
    "qwen2_tokenizer",
    "clip_tokenizer",
    "t5_tokenizer",
    "tiny_ip2p_editor",
    "tiny_flux_kontext_editor",
    "tiny_flux2_editor",
    "tiny_flux2_klein_editor",
    "tiny_flux2_klein_base_editor",
    "tiny_qwen_edit_plus_editor",
]

#: Where the real architecture configs live (see its SOURCES.md).
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "model_configs"

#: config directory -> pipeline class it builds.
CONFIG_DIRS: dict[str, str] = {
    "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
    "FLUX.1-Kontext-dev": "FluxKontextPipeline",
    "FLUX.2-dev": "Flux2Pipeline",
    "FLUX.2-klein-4B": "Flux2KleinPipeline",
    "FLUX.2-klein-9B": "Flux2KleinPipeline",
    "FLUX.2-klein-base-4B": "Flux2KleinPipeline",
    "FLUX.2-klein-base-9B": "Flux2KleinPipeline",
    "Qwen-Image-Edit-2509": "QwenImageEditPlusPipeline",
    "Qwen-Image-Edit-2511": "QwenImageEditPlusPipeline",
}

# Special tokens of the Qwen2 vocabulary, in id order from <|endoftext|> (151643 in Qwen2/3).
_QWEN_SPECIALS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [f"<|reserved_{i}|>" for i in range(6)]  # object/box/quad tokens in the real vocabulary
    + ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
)

# Qwen-style chat template; content is a string or a list of {"type": "text"|"image"} parts.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small sizes every tiny text encoder shares.
_TINY_QWEN_TEXT = {
    "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 1024, "max_window_layers": 2,
    "bos_token_id": 256, "eos_token_id": 258, "vocab_size": 272,
    "layer_types": ["full_attention", "full_attention"],
}
_TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
              "projection_dim": 32, "vocab_size": 520}
_TINY_FLUX_VAE = {  # 4 blocks: VAE factor 8 as in the real models
    "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4,
    "latent_channels": 4, "sample_size": 32,
}
_TINY_FLUX2 = {"in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
               "num_attention_heads": 2, "joint_attention_dim": 16, "axes_dims_rope": [4, 4, 4, 4]}

#: Overrides that turn each real config into a tiny one (deep-merged, per component).
TINY: dict[str, dict[str, dict[str, Any]]] = {
    "instruct-pix2pix": {
        "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "sample_size": 16,
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                 "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8},
        "vae": _TINY_FLUX_VAE,
        "text_encoder": _TINY_CLIP,
    },
    "FLUX.1-Kontext-dev": {
        "transformer": {"in_channels": 16, "num_layers": 1, "num_single_layers": 1,
                        "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                        "pooled_projection_dim": 32, "axes_dims_rope": [4, 4, 8]},
        "vae": _TINY_FLUX_VAE,
        "text_encoder": _TINY_CLIP,
        "text_encoder_2": {"d_model": 32, "d_ff": 37, "d_kv": 8, "num_layers": 2, "num_heads": 4,
                           "relative_attention_num_buckets": 8, "vocab_size": 128},
    },
    "FLUX.2-dev": {
        "transformer": _TINY_FLUX2,
        "vae": _TINY_FLUX_VAE,
        "text_encoder": {
            "text_config": {"vocab_size": 272, "hidden_size": 16, "intermediate_size": 37, "head_dim": 4,
                            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
                            "max_position_embeddings": 512},
            "vision_config": {"hidden_size": 16, "head_dim": 4, "num_hidden_layers": 1,
                              "num_attention_heads": 4, "intermediate_size": 37, "image_size": 30,
                              "patch_size": 6},
            "image_token_index": 268,
        },
    },
    "FLUX.2-klein-4B": {"transformer": _TINY_FLUX2, "vae": _TINY_FLUX_VAE, "text_encoder": _TINY_QWEN_TEXT},
    "Qwen-Image-Edit-2511": {
        "transformer": {"in_channels": 16, "out_channels": 4, "num_layers": 1, "attention_head_dim": 16,
                        "num_attention_heads": 2, "joint_attention_dim": 16, "axes_dims_rope": [8, 4, 4]},
        "vae": {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
                "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4},
        "text_encoder": {
            **_TINY_QWEN_TEXT, "vocab_size": 272,
            "image_token_id": 268, "video_token_id": 269, "vision_start_token_id": 265,
            "vision_end_token_id": 266, "vision_token_id": 267,
            "rope_scaling": {"mrope_section": [2, 1, 1], "rope_type": "default", "type": "default"},
            "text_config": {**_TINY_QWEN_TEXT, "vision_start_token_id": 265, "vision_end_token_id": 266,
                            "vision_token_id": 267,
                            "rope_scaling": {"mrope_section": [2, 1, 1], "rope_type": "default",
                                             "type": "default"}},
            "vision_config": {"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                              "out_hidden_size": 16, "fullatt_block_indexes": [1], "window_size": 56},
        },
        "processor": {"min_pixels": 28 * 28, "max_pixels": 56 * 56},
    },
}
TINY["FLUX.2-klein-base-4B"] = TINY["FLUX.2-klein-4B"]
TINY["Qwen-Image-Edit-2509"] = TINY["Qwen-Image-Edit-2511"]

#: Call arguments tiny pipelines need: out-layer indices that exist in a 2-layer text encoder,
#: short prompt padding.
TINY_CALL_KWARGS: dict[str, dict[str, Any]] = {
    "instruct-pix2pix": {},
    "FLUX.1-Kontext-dev": {"max_sequence_length": 32},
    "FLUX.2-dev": {"max_sequence_length": 64, "text_encoder_out_layers": (1,)},
    "FLUX.2-klein-4B": {"max_sequence_length": 64, "text_encoder_out_layers": (1,)},
    "FLUX.2-klein-base-4B": {"max_sequence_length": 64, "text_encoder_out_layers": (1,)},
    "Qwen-Image-Edit-2509": {},
    "Qwen-Image-Edit-2511": {},
}

# Scheduler configs (FlowMatchEulerDiscreteScheduler unless named).
_FLUX_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
                   "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
                   "use_dynamic_shifting": True}
_QWEN_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 8192,
                   "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
                   "time_shift_type": "exponential", "use_dynamic_shifting": True}
_SD_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1}


# -- tokenizers -------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def qwen2_tokenizer(first_special_id: int = 151643, *, model_max_length: int = 4096) -> Any:
    """A byte-level Qwen2 tokenizer with no merges: ids 0..255 are bytes, the Qwen2 special
    tokens (``<|endoftext|>``, ``<|im_start|>``, ... ``<|image_pad|>``) sit at
    ``first_special_id`` + their offset in the real vocabulary (151643 = the real ids), and a
    Qwen-style chat template that renders images as ``<|vision_start|><|image_pad|><|vision_end|>``."""
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for i, name in enumerate(_QWEN_SPECIALS):
        vocab[name] = first_special_id + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=model_max_length, unk_token=None,
                         bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS[1:]})
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer (symbols and their ``</w>`` forms, no merges), 77 tokens."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> Any:
    """A character-level T5 (unigram) tokenizer over printable ASCII; ids < 128."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _qwen2vl_processor(tokenizer: Any, preprocessor: Mapping[str, Any]) -> Any:
    """A Qwen2-VL processor (image processor + tokenizer) that needs no torchvision: the PIL
    image processor, and a subclass without the video processor (whose registry needs
    torchvision in transformers 5)."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class _ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

    keys = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size",
            "image_mean", "image_std")
    image_processor = Qwen2VLImageProcessorPil(
        **{k: v for k, v in preprocessor.items() if k in keys and "pixels" not in k},
        size={"shortest_edge": preprocessor["min_pixels"], "longest_edge": preprocessor["max_pixels"]},
    )
    return _ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


# -- building ---------------------------------------------------------------------------------
def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursing into nested dicts."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _configs(config_dir: str, overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if config_dir not in CONFIG_DIRS:
        raise ValueError(f"config_dir must be one of {sorted(CONFIG_DIRS)}, got {config_dir!r}")
    folder = CONFIG_ROOT / config_dir
    configs = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    for component, override in (overrides or {}).items():
        name = "processor_preprocessor_config" if component == "processor" else component
        if name not in configs:
            raise ValueError(f"overrides names component {component!r}, not in {sorted(configs)} "
                             f"of {config_dir!r}")
        configs[name] = _merge(configs[name], override)
    return configs


@contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _strip_dtypes(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without dtype keys, at any depth: weights take the default dtype instead (a
    nested ``text_config.dtype`` would otherwise give one sub-model another dtype)."""
    return {k: _strip_dtypes(v) if isinstance(v, dict) else v
            for k, v in config.items() if k not in ("dtype", "torch_dtype")}


def _transformers_model(cls_name: str, config: dict[str, Any]) -> Any:
    import transformers

    cfg = _strip_dtypes(config)
    cfg.pop("architectures", None)
    cfg.pop("transformers_version", None)
    config_obj = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return getattr(transformers, cls_name)(config_obj)


def _diffusers_model(cls_name: str, config: dict[str, Any]) -> Any:
    import diffusers

    return getattr(diffusers, cls_name).from_config(config)


def build_from_configs(
    config_dir: str,
    dtype: str = "bfloat16",
    device: str = "cuda",
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
) -> Any:
    """A pipeline of ``CONFIG_DIRS[config_dir]`` with random weights, real size by default.

    Args:
        config_dir: a folder of ``tools/model_configs`` (``CONFIG_DIRS`` keys), e.g.
            ``"FLUX.2-klein-9B"``.
        dtype: float32 | float16 | bfloat16; the default dtype while building.
        device: where the weights are created (``"cuda"``, ``"cpu"``, or ``"meta"`` to count
            parameters without memory; a meta pipeline cannot run).
        overrides: per component (``transformer``, ``vae``, ``text_encoder``, ``unet``,
            ``processor`` ...), keys deep-merged into its config; ``TINY`` holds tiny ones.
        seed: ``torch.manual_seed`` before each component, for reproducible weights.

    Tokenizers are the byte-level inline ones of this module (see the module docstring). A
    real-size FLUX.2 [dev] is ~56 B parameters (112 GB in bf16): it needs a 141 GB GPU.
    """
    import torch

    configs = _configs(config_dir, overrides)
    pipeline_cls = CONFIG_DIRS[config_dir]
    diffusers = import_diffusers()
    text = configs.get("text_encoder", {})

    # 1. the parts without weights: scheduler, tokenizers (CPU, float32, whatever the device)
    parts: dict[str, Any] = {}
    if pipeline_cls == "StableDiffusionInstructPix2PixPipeline":
        parts["scheduler"] = diffusers.EulerAncestralDiscreteScheduler.from_config(_SD_SCHEDULER)
        parts["tokenizer"] = clip_tokenizer()
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif pipeline_cls == "FluxKontextPipeline":
        parts["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler.from_config(_FLUX_SCHEDULER)
        parts["tokenizer"], parts["tokenizer_2"] = clip_tokenizer(), t5_tokenizer()
    elif pipeline_cls == "Flux2Pipeline":
        parts["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler.from_config(_FLUX_SCHEDULER)
        parts["tokenizer"] = qwen2_tokenizer(256)  # only its chat template and ids < 272 are used
    elif pipeline_cls == "Flux2KleinPipeline":
        parts["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler.from_config(_FLUX_SCHEDULER)
        parts["tokenizer"] = qwen2_tokenizer(text["bos_token_id"])
        parts["is_distilled"] = bool(configs["model_index"]["is_distilled"])
    else:  # QwenImageEditPlusPipeline
        parts["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler.from_config(_QWEN_SCHEDULER)
        parts["tokenizer"] = qwen2_tokenizer(text["bos_token_id"])
        parts["processor"] = _qwen2vl_processor(parts["tokenizer"], configs["processor_preprocessor_config"])

    # 2. the models, created on ``device`` in ``dtype`` (no CPU copy of real-size weights)
    models = {  # component -> (library, class)
        "StableDiffusionInstructPix2PixPipeline": {
            "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel")},
        "FluxKontextPipeline": {
            "transformer": ("diffusers", "FluxTransformer2DModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "T5EncoderModel")},
        "Flux2Pipeline": {
            "transformer": ("diffusers", "Flux2Transformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLFlux2"),
            "text_encoder": ("transformers", "Mistral3ForConditionalGeneration")},
        "Flux2KleinPipeline": {
            "transformer": ("diffusers", "Flux2Transformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLFlux2"),
            "text_encoder": ("transformers", "Qwen3ForCausalLM")},
        "QwenImageEditPlusPipeline": {
            "transformer": ("diffusers", "QwenImageTransformer2DModel"),
            "vae": ("diffusers", "AutoencoderKLQwenImage"),
            "text_encoder": ("transformers", "Qwen2_5_VLForConditionalGeneration")},
    }[pipeline_cls]
    with torch.device(device), _default_dtype(torch_dtype(dtype)):
        for component, (library, cls_name) in models.items():
            if seed is not None:
                torch.manual_seed(seed)
            build = _diffusers_model if library == "diffusers" else _transformers_model
            parts[component] = build(cls_name, configs[component]).eval()

    # 3. the pipeline
    pipe = getattr(diffusers, pipeline_cls)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(config_dir: str) -> Any:
    """The tiny random-weight pipeline of a family (seed 0, float32, CPU), built once per
    process (shared through ``REGISTRY``; do not modify it)."""
    if config_dir not in TINY:
        raise ValueError(f"config_dir must be one of {sorted(TINY)}, got {config_dir!r}")
    return REGISTRY.get(("tiny", config_dir), lambda: _build_tiny(config_dir))


def _build_tiny(config_dir: str) -> Any:
    import torch

    pipe = build_from_configs(config_dir, "float32", "cpu", overrides=TINY[config_dir], seed=0)
    bn = getattr(pipe.vae, "bn", None)
    if bn is not None:  # FLUX.2 VAE latent normalisation: exercise it with non-trivial stats
        gen = torch.Generator().manual_seed(0)
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return pipe


# -- registry factories for the ``tiny`` preset (kind "editor") --------------------------------
# Tiny editors run 2 steps at most 128x128 px: a few tenths of a second per edit on a CPU.
# ``options`` override any of the editor arguments set here (e.g. ``num_inference_steps=4``).
def _tiny_editor(cls: type[Any], config_dir: str, options: Mapping[str, Any], **extra: Any) -> Any:
    kwargs = {"num_inference_steps": 2, "max_area": 128 * 128, "min_area": 0,
              "call_kwargs": TINY_CALL_KWARGS[config_dir], **extra, **options}
    return cls.from_pipeline(tiny_pipeline(config_dir), **kwargs)


def tiny_ip2p_editor(**options: Any) -> InstructPix2PixEditor:
    """Tiny InstructPix2Pix (text and image CFG: one UNet pass on a batch of 3 per step)."""
    return _tiny_editor(InstructPix2PixEditor, "instruct-pix2pix", options)


def tiny_flux_kontext_editor(**options: Any) -> FluxKontextEditor:
    """Tiny FLUX.1-Kontext, reference image kept at the generation size (no auto-resize)."""
    return _tiny_editor(FluxKontextEditor, "FLUX.1-Kontext-dev", options, auto_resize=False)


def tiny_flux2_editor(**options: Any) -> Flux2Editor:
    """Tiny FLUX.2 [dev] (Mistral3 text encoder, embedded guidance)."""
    return _tiny_editor(Flux2Editor, "FLUX.2-dev", options)


def tiny_flux2_klein_editor(**options: Any) -> Flux2KleinEditor:
    """Tiny FLUX.2 [klein], distilled (no CFG)."""
    return _tiny_editor(Flux2KleinEditor, "FLUX.2-klein-4B", options)


def tiny_flux2_klein_base_editor(**options: Any) -> Flux2KleinEditor:
    """Tiny FLUX.2 [klein] base: CFG with the base default guidance 4.0."""
    return _tiny_editor(Flux2KleinEditor, "FLUX.2-klein-base-4B", options)


def tiny_qwen_edit_plus_editor(**options: Any) -> QwenImageEditPlusEditor:
    """Tiny Qwen-Image-Edit-2511, with reference images at 64x64 (VAE) and 56x56 (VLM)."""
    return _tiny_editor(QwenImageEditPlusEditor, "Qwen-Image-Edit-2511", options,
                        vae_image_size=64 * 64, condition_image_size=56 * 56)
