"""Tiny Qwen2.5-VL / Qwen3-VL / SAM2 built from configs, for CPU tests and the ``tiny`` preset.

Nothing is downloaded: the tokenizer has the 256 byte-level symbols as vocabulary plus the
Qwen-VL special tokens and a small Qwen-VL-style chat template; the processor is the real
Qwen-VL processor (images only, no torchvision) with the real PIL image processor at a small
size. Models have random weights (seeded), so their text is garbage: these builders prove the
pipeline (chat template -> processor -> vision tower -> generate -> decode -> parse), never
quality. Built once per process through ``REGISTRY``.
"""

from __future__ import annotations

from typing import Any

from tools.models import REGISTRY
from tools.vlm._qwen import Family, QwenVL, processor_without_video, qwen_vl_from_config

__all__ = [
    "SPECIAL_TOKENS",
    "tiny_tokenizer",
    "tiny_processor",
    "tiny_qwen25vl",
    "tiny_qwen3vl",
    "tiny_sam2_predictor",
    "tiny_lora_config",
    "save_tiny_qwen_vl",
    "save_tiny_lora",
    "tiny_mira_planner",
    "tiny_grounder",
    "tiny_editscore_critic",
]

#: The Qwen-VL special tokens the processor and chat template use.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-VL-style chat templates: images become <|vision_start|><|image_pad|><|vision_end|> in
# place; Qwen2.5-VL adds the default system turn, Qwen3-VL does not (as their real templates).
_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
)
_TURNS = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _CONTENT
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATES: dict[Family, str] = {
    "qwen2.5": (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n{% endif %}" + _TURNS
    ),
    "qwen3": _TURNS,
}

# Small image frames keep the vision tower cheap: at most 8x8 patches before merging.
_IMAGE = {
    "qwen2.5": {
        "patch": 14,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
    "qwen3": {"patch": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def tiny_tokenizer(family: Family = "qwen3") -> Any:
    """A Qwen2 byte-level tokenizer with no download: 256 byte symbols + the special tokens."""
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        model_max_length=8192,
        unk_token=None,
        chat_template=CHAT_TEMPLATES[family],
    )
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True
    )
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    return tok


def tiny_processor(family: Family = "qwen3", *, max_patches: int = 8) -> Any:
    """The real Qwen-VL processor (images only) over ``tiny_tokenizer`` and a PIL image
    processor that resizes every image to at most ``max_patches`` x ``max_patches`` patches."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    spec = _IMAGE[family]
    side = spec["patch"] * max_patches
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": (spec["patch"] * 2) ** 2, "longest_edge": side * side},
        patch_size=spec["patch"],
        merge_size=2,
        temporal_patch_size=2,
        image_mean=spec["mean"],
        image_std=spec["std"],
    )
    tok = tiny_tokenizer(family)
    return processor_without_video(family)(
        image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATES[family]
    )


def _token_ids(tok: Any) -> dict[str, int]:
    ids = {
        name: tok.convert_tokens_to_ids(t)
        for name, t in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    return ids


def _text_config(tok: Any, *, interleaved: bool) -> dict[str, Any]:
    rope: dict[str, Any] = {
        "rope_type": "default",
        "mrope_section": [2, 1, 1],
        "rope_theta": 10000.0,
    }
    if interleaved:
        rope["mrope_interleaved"] = True
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=len(tok),
        max_position_embeddings=8192,
        rope_parameters=rope,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )


def tiny_qwen25vl_config(tok: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_text_config(tok, interleaved=False),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            fullatt_block_indexes=[1],
            window_size=56,
        ),
        **_token_ids(tok),
    )


def tiny_qwen3vl_config(tok: Any) -> Any:
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=_text_config(tok, interleaved=True),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[1],
        ),
        **_token_ids(tok),
    )


def _build(family: Family, seed: int) -> QwenVL:
    processor = tiny_processor(family)
    build_config = tiny_qwen25vl_config if family == "qwen2.5" else tiny_qwen3vl_config
    config = build_config(processor.tokenizer)
    vlm = qwen_vl_from_config(config, processor, seed=seed, name=f"tiny-{family}")
    vlm.model.generation_config.eos_token_id = config.text_config.eos_token_id
    vlm.model.generation_config.pad_token_id = config.text_config.pad_token_id
    return vlm


def tiny_qwen25vl(*, seed: int = 0, shared: bool = True) -> QwenVL:
    """A tiny random Qwen2.5-VL (about 0.1 M parameters) with its processor, on CPU.
    ``shared=True`` returns the process-wide instance (REGISTRY key ``("tiny-qwen-vl",
    "qwen2.5", seed)``)."""
    if not shared:
        return _build("qwen2.5", seed)
    return REGISTRY.get(("tiny-qwen-vl", "qwen2.5", seed), lambda: _build("qwen2.5", seed))


def tiny_qwen3vl(*, seed: int = 0, shared: bool = True) -> QwenVL:
    """A tiny random Qwen3-VL (about 0.15 M parameters) with its processor, on CPU."""
    if not shared:
        return _build("qwen3", seed)
    return REGISTRY.get(("tiny-qwen-vl", "qwen3", seed), lambda: _build("qwen3", seed))


def tiny_lora_config(r: int = 4) -> Any:
    """A small LoRA on the language model's attention projections (peft ``LoraConfig``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        init_lora_weights=False,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )


def save_tiny_qwen_vl(vlm: QwenVL, path: Any) -> str:
    """Write a (tiny) ``QwenVL`` as a local model directory that ``load_qwen_vl`` reads: weights,
    config, tokenizer (with its chat template) and image-processor config. Pass a model with no
    adapter added (e.g. ``tiny_qwen3vl(shared=False)``): with one, only the adapter is saved."""
    import os

    path = os.fspath(path)
    vlm.model.save_pretrained(path)
    vlm.processor.tokenizer.save_pretrained(path)
    vlm.processor.image_processor.save_pretrained(path)
    return path


def save_tiny_lora(family: Family, path: Any, *, seed: int = 1) -> str:
    """Create a random LoRA for the tiny model of ``family`` and save it (peft format) to
    ``path``, as a fine-tuned adapter would be shipped. Built on a private model instance."""
    import os

    import torch

    vlm = _build(family, seed=0)
    torch.manual_seed(seed)
    vlm.model.add_adapter(tiny_lora_config(), adapter_name="default")
    vlm.model.save_pretrained(os.fspath(path))
    return os.fspath(path)


def tiny_sam2_predictor(*, image_size: int = 256, seed: int = 0) -> Any:
    """A SAM2 image predictor on the packaged hiera-tiny config with random weights at a small
    input size (``++model.image_size``), on CPU."""
    from tools.vlm.sam2_refiner import build_sam2_predictor

    return build_sam2_predictor(
        None,
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        image_size=image_size,
        device="cpu",
        seed=seed,
    )


# -- zero-argument factories for the registry's ``tiny`` preset ---------------------------------
def tiny_mira_planner() -> Any:
    """MiraPlanner on a tiny random Qwen2.5-VL: its text is garbage, so it raises
    ``PlannerOutputError``; it proves the wiring, not planning."""
    from tools.vlm.planner import MiraPlanner

    return MiraPlanner(tiny_qwen25vl(), max_new_tokens=16, image_size=64)


def tiny_grounder() -> Any:
    """QwenVLGrounder on the shared tiny Qwen3-VL (random weights: raises ``GroundingError``)."""
    from tools.vlm.grounder import QwenVLGrounder

    return QwenVLGrounder(tiny_qwen3vl(), max_new_tokens=24)


def tiny_editscore_critic() -> Any:
    """EditScoreCritic on the same tiny Qwen3-VL as ``tiny_grounder``, with an in-memory
    ``editscore`` LoRA (random): its critiques come back ``valid=False``."""
    from tools.vlm.critic import EditScoreCritic

    vlm = tiny_qwen3vl()
    with vlm._lock:
        if "editscore" not in vlm.adapters:
            vlm.add_adapter("editscore", tiny_lora_config())
    return EditScoreCritic(vlm, max_new_tokens=24, retries=0)


#: Registry names declared by this module (``tools.registry``): kind -> name -> factory here.
BACKENDS = {
    "planner": {"mira-tiny": "tiny_mira_planner"},
    "grounder": {"qwen-vl-tiny": "tiny_grounder"},
    "critic": {"editscore-tiny": "tiny_editscore_critic"},
}
