"""Random-weight pipelines built offline from real architecture configs: the machinery.

What to build for a family is declared in the family's own module as ``RECIPES`` (a tuple of
``RandomRecipe``: pipeline class, component classes, the parts without weights, its config
folders under ``tools/model_configs``, and the tiny overrides and call arguments for CPU tests).
This module finds the recipes (``recipes()``) and builds from them: ``build_from_configs``
reads the real configs, deep-merges overrides, and builds every component with random
weights; ``tiny_pipeline`` is that call with the recipe's tiny overrides and a fixed seed.

Tokenizers are never downloaded: they are built inline over the 256 byte-level symbols
(``qwen2_tokenizer``, ``clip_tokenizer``, ``t5_tokenizer``), with the special tokens at the
ids the model config expects. They tokenise any text, but not as the real vocabularies do, so
a real-size pipeline built here is for timing and memory, never for image quality.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools._discovery import declared
from tools.editors._base import import_diffusers
from tools.models import REGISTRY, torch_dtype

#: Where the real architecture configs live (see its SOURCES.md).
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "model_configs"


@dataclass(frozen=True)
class RandomRecipe:
    """How to build one diffusers pipeline class with random weights.

    ``models``: component -> (library, class name), built from the config of the same name.
    ``parts``: ``(diffusers, configs) -> dict`` of the components without weights (scheduler,
    tokenizers, flags). ``config_dirs``: folders of ``tools/model_configs`` it builds.
    ``tiny``: config folder -> per-component overrides that make a tiny CPU model (1-layer
    transformers, 2-layer text encoders, 4-block VAEs so the VAE factor is the real 8).
    ``tiny_call_kwargs``: config folder -> call arguments a tiny pipeline needs.
    """

    pipeline_class: str
    models: Mapping[str, tuple[str, str]]
    parts: Callable[[Any, dict[str, dict[str, Any]]], dict[str, Any]]
    config_dirs: tuple[str, ...]
    tiny: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    tiny_call_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def recipes() -> dict[str, RandomRecipe]:
    """config folder -> its recipe, from the ``RECIPES`` of every module of ``tools.editors``."""
    found: dict[str, RandomRecipe] = {}
    for module, declared_recipes in declared("tools.editors", "RECIPES"):
        for recipe in declared_recipes:
            for config_dir in recipe.config_dirs:
                if config_dir in found:
                    raise ValueError(f"config folder {config_dir!r} has two recipes ({module})")
                found[config_dir] = recipe
    return found


def config_dirs() -> dict[str, str]:
    """config folder -> the pipeline class it builds."""
    return {d: r.pipeline_class for d, r in recipes().items()}


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
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small sizes every tiny text encoder shares.
TINY_QWEN_TEXT = {
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 1024,
    "max_window_layers": 2,
    "bos_token_id": 256,
    "eos_token_id": 258,
    "vocab_size": 272,
    "layer_types": ["full_attention", "full_attention"],
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
    "vocab_size": 520,
}
TINY_FLUX_VAE = {  # 4 blocks: VAE factor 8 as in the real models
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "sample_size": 32,
}
TINY_FLUX2 = {
    "in_channels": 16,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 16,
    "axes_dims_rope": [4, 4, 4, 4],
}

# Scheduler configs (FlowMatchEulerDiscreteScheduler unless named).
FLUX_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
QWEN_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


# -- tokenizers -------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def qwen2_tokenizer(first_special_id: int = 151643, *, model_max_length: int = 4096) -> Any:
    """A byte-level Qwen2 tokenizer with no merges: ids 0..255 are bytes, the Qwen2 special
    tokens (``<|endoftext|>``, ``<|im_start|>``, ... ``<|image_pad|>``) sit at
    ``first_special_id`` + their offset in the real vocabulary (151643 = the real ids), and a
    Qwen-style chat template that renders images as
    ``<|vision_start|><|image_pad|><|vision_end|>``."""
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for i, name in enumerate(_QWEN_SPECIALS):
        vocab[name] = first_special_id + i
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        model_max_length=model_max_length,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
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


def qwen2vl_processor(tokenizer: Any, preprocessor: Mapping[str, Any]) -> Any:
    """A Qwen2-VL processor (image processor + tokenizer) that needs no torchvision: the PIL
    image processor, and a subclass without the video processor (whose registry needs
    torchvision in transformers 5)."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class _ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

    keys = (
        "min_pixels",
        "max_pixels",
        "patch_size",
        "temporal_patch_size",
        "merge_size",
        "image_mean",
        "image_std",
    )
    image_processor = Qwen2VLImageProcessorPil(
        **{k: v for k, v in preprocessor.items() if k in keys and "pixels" not in k},
        size={
            "shortest_edge": preprocessor["min_pixels"],
            "longest_edge": preprocessor["max_pixels"],
        },
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


def _configs(
    config_dir: str, overrides: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    known = config_dirs()
    if config_dir not in known:
        raise ValueError(f"config_dir must be one of {sorted(known)}, got {config_dir!r}")
    folder = CONFIG_ROOT / config_dir
    configs = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    for component, override in (overrides or {}).items():
        name = "processor_preprocessor_config" if component == "processor" else component
        if name not in configs:
            raise ValueError(
                f"overrides names component {component!r}, not in {sorted(configs)} "
                f"of {config_dir!r}"
            )
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
    return {
        k: _strip_dtypes(v) if isinstance(v, dict) else v
        for k, v in config.items()
        if k not in ("dtype", "torch_dtype")
    }


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
    """A pipeline of ``config_dir``'s recipe with random weights, real size by default.

    Args:
        config_dir: a folder of ``tools/model_configs`` that a recipe builds, e.g.
            ``"FLUX.2-klein-9B"``.
        dtype: float32 | float16 | bfloat16; the default dtype while building.
        device: where the weights are created (``"cuda"``, ``"cpu"``, or ``"meta"`` to count
            parameters without memory; a meta pipeline cannot run).
        overrides: per component (``transformer``, ``vae``, ``text_encoder``, ``unet``,
            ``processor`` ...), keys deep-merged into its config; a recipe's ``tiny`` holds
            tiny ones.
        seed: ``torch.manual_seed`` before each component, for reproducible weights.

    Tokenizers are the byte-level inline ones of this module (see the module docstring). A
    real-size FLUX.2 [dev] is ~56 B parameters (112 GB in bf16): it needs a 141 GB GPU.
    """
    import torch

    configs = _configs(config_dir, overrides)
    recipe = recipes()[config_dir]
    diffusers = import_diffusers()

    # 1. the parts without weights: scheduler, tokenizers (CPU, float32, whatever the device)
    parts: dict[str, Any] = recipe.parts(diffusers, configs)

    # 2. the models, created on ``device`` in ``dtype`` (no CPU copy of real-size weights)
    with torch.device(device), _default_dtype(torch_dtype(dtype)):
        for component, (library, cls_name) in recipe.models.items():
            if seed is not None:
                torch.manual_seed(seed)
            build = _diffusers_model if library == "diffusers" else _transformers_model
            parts[component] = build(cls_name, configs[component]).eval()

    # 3. the pipeline
    pipe = getattr(diffusers, recipe.pipeline_class)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_overrides(config_dir: str) -> Mapping[str, Mapping[str, Any]]:
    """The overrides that make ``config_dir`` tiny (its recipe's ``tiny``)."""
    recipe = recipes().get(config_dir)
    if recipe is None or config_dir not in recipe.tiny:
        known = sorted(d for d, r in recipes().items() if d in r.tiny)
        raise ValueError(f"config_dir must be one of {known}, got {config_dir!r}")
    return recipe.tiny[config_dir]


def tiny_call_kwargs(config_dir: str) -> dict[str, Any]:
    """The call arguments a tiny ``config_dir`` pipeline needs (the recipe's
    ``tiny_call_kwargs``)."""
    tiny_overrides(config_dir)  # refuses an unknown folder
    return dict(recipes()[config_dir].tiny_call_kwargs.get(config_dir, {}))


def tiny_pipeline(config_dir: str) -> Any:
    """The tiny random-weight pipeline of a family (seed 0, float32, CPU), built once per
    process (shared through ``REGISTRY``; do not modify it)."""
    tiny_overrides(config_dir)  # refuses an unknown folder
    return REGISTRY.get(("tiny", config_dir), lambda: _build_tiny(config_dir))


def _build_tiny(config_dir: str) -> Any:
    import torch

    pipe = build_from_configs(
        config_dir, "float32", "cpu", overrides=tiny_overrides(config_dir), seed=0
    )
    bn = getattr(pipe.vae, "bn", None)
    if bn is not None:  # FLUX.2 VAE latent normalisation: exercise it with non-trivial stats
        gen = torch.Generator().manual_seed(0)
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return pipe


# Tiny editors run 2 steps at most 128x128 px: a few tenths of a second per edit on a CPU.
# ``options`` override any of the editor arguments set here (e.g. ``num_inference_steps=4``).
def tiny_editor(cls: type[Any], config_dir: str, options: Mapping[str, Any], **extra: Any) -> Any:
    """A ``cls`` editor on the tiny ``config_dir`` pipeline (for a family's tiny factory)."""
    kwargs = {
        "num_inference_steps": 2,
        "max_area": 128 * 128,
        "min_area": 0,
        "call_kwargs": tiny_call_kwargs(config_dir),
        **extra,
        **options,
    }
    return cls.from_pipeline(tiny_pipeline(config_dir), **kwargs)
