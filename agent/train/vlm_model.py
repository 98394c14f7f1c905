"""The micro VLM: a real ``Qwen2_5_VLForConditionalGeneration`` from a small config, a byte-level
BPE tokenizer trained on micro-world text, and the real Qwen2.5-VL processor, saved as one local
folder that ``tools.vlm._qwen.load_qwen_vl`` (and so ``QwenVLGrounder``, ``EditScoreCritic``,
``MiraPlanner``, ``VLMInstructionParser``) loads with no special case.

Images: the micro-world's 224 px scenes. The image processor resizes every image to exactly
224 x 224 (``min_pixels = max_pixels = 224**2``): 16 x 16 patches of 14 px, merged 2 x 2 into 64
tokens of 28 px, so each 32 px scene cell's centre falls in its own merged token, and
Qwen2.5-VL's pixel boxes are source pixels of a 224 px scene.

``GPU_MODEL`` is about 9.6 M parameters (about 19 MB in bf16; the repository also ships a 33 MB
editor and everything carried to the GPU machine must stay under 64 MB); ``SMOKE_MODEL`` is a
tiny variant for CPU tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.vlm.tiny import CHAT_TEMPLATES, SPECIAL_TOKENS

__all__ = [
    "MicroVLMConfig",
    "SMOKE_MODEL",
    "GPU_MODEL",
    "IMAGE_SIZE",
    "SPECIALS",
    "CHAT_TEMPLATE",
    "corpus",
    "build_tokenizer",
    "build_processor",
    "build_model",
    "save_micro_vlm",
    "MANIFEST",
]

IMAGE_SIZE = 224
PATCH = 14
MERGE = 2
MANIFEST = "micro_vlm.json"

#: Qwen-VL special tokens (``<|endoftext|>`` first: the pad) and Qwen2.5-VL's chat template
#: reduced to text and image items: the same constants as the tiny test models.
SPECIALS = SPECIAL_TOKENS
CHAT_TEMPLATE = CHAT_TEMPLATES["qwen2.5"]


@dataclass(frozen=True)
class MicroVLMConfig:
    """Sizes of the micro Qwen2.5-VL. ``head_dim`` must be ``2 * sum(mrope_section)``."""

    vocab_size: int = 4096
    hidden: int = 256
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 768
    mrope_section: tuple[int, int, int] = (8, 12, 12)
    vision_hidden: int = 192
    vision_depth: int = 4
    vision_heads: int = 3
    vision_intermediate: int = 512
    max_positions: int = 4096
    tokenizer_seeds: int = 150


GPU_MODEL = MicroVLMConfig()
SMOKE_MODEL = MicroVLMConfig(
    vocab_size=600,
    hidden=32,
    layers=2,
    heads=2,
    kv_heads=1,
    head_dim=16,
    intermediate=64,
    mrope_section=(2, 3, 3),
    vision_hidden=32,
    vision_depth=2,
    vision_heads=2,
    vision_intermediate=64,
    tokenizer_seeds=3,
)


def corpus(n_seeds: int, *, offset: int = 0) -> Iterator[str]:
    """Text the tokenizer is trained on: every prompt and answer of the role samples (planner,
    grounder, parser, critic) on the first ``n_seeds`` train seeds, train-split language only."""
    from agent.microworld import formats
    from agent.microworld.splits import seeds
    from tools.vlm.grounder import GROUNDING_PROMPTS

    chosen = seeds("train", n_seeds, offset=offset)
    yield GROUNDING_PROMPTS["qwen2.5"]
    for name in ("planner_samples", "grounder_samples", "parse_samples", "critic_samples"):
        for record in getattr(formats, name)(chosen, language="train"):
            chats = [record[k] for k in ("messages", "sc", "pq") if k in record]
            for chat in chats:
                for message in chat:
                    for item in message["content"]:
                        if item.get("type") == "text":
                            yield item["text"]


def build_tokenizer(texts: Iterable[str], config: MicroVLMConfig) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (``train_qwen_bpe``), with the Qwen-VL
    special tokens, ``CHAT_TEMPLATE`` and left padding."""
    from agent.train._tokenizer import train_qwen_bpe

    tok = train_qwen_bpe(
        texts,
        vocab_size=config.vocab_size,
        specials=SPECIALS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=config.max_positions,
    )
    tok.padding_side = "left"
    return tok


def build_processor(tokenizer: Any) -> Any:
    """The real Qwen2.5-VL processor (images only: no torchvision) over ``tokenizer``, with the
    PIL image processor resizing every image to 224 x 224 (64 merged tokens)."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    from tools.vlm._qwen import processor_without_video

    pixels = IMAGE_SIZE * IMAGE_SIZE
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=PATCH,
        merge_size=MERGE,
        temporal_patch_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return processor_without_video("qwen2.5")(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


def model_config(config: MicroVLMConfig, tokenizer: Any) -> Any:
    """The ``Qwen2_5_VLConfig`` of ``config`` with the token ids of ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    if 2 * sum(config.mrope_section) != config.head_dim:
        raise ValueError(f"head_dim {config.head_dim} must be 2 * sum{config.mrope_section}")
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=config.hidden,
            intermediate_size=config.intermediate,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.kv_heads,
            head_dim=config.head_dim,
            vocab_size=config.vocab_size,
            max_position_embeddings=config.max_positions,
            rope_parameters={
                "rope_type": "default",
                "mrope_section": list(config.mrope_section),
                "rope_theta": 10000.0,
            },
            tie_word_embeddings=True,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=config.vision_depth,
            hidden_size=config.vision_hidden,
            intermediate_size=config.vision_intermediate,
            num_heads=config.vision_heads,
            out_hidden_size=config.hidden,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=2,
            # full attention in every block: 64 merged tokens need no windows
            fullatt_block_indexes=list(range(config.vision_depth)),
            window_size=IMAGE_SIZE,
        ),
        tie_word_embeddings=True,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def build_model(config: MicroVLMConfig, processor: Any, *, seed: int = 0) -> Any:
    """A ``tools.vlm.QwenVL`` over a freshly initialised micro Qwen2.5-VL (float32, CPU) and
    ``processor``; greedy generation config with the tokenizer's EOS and pad."""
    from tools.models import LoadOptions
    from tools.vlm._qwen import qwen_vl_from_config

    cfg = model_config(config, processor.tokenizer)
    vlm = qwen_vl_from_config(
        cfg,
        processor,
        seed=seed,
        options=LoadOptions(device="cpu", dtype="float32"),
        name="micro-vlm",
    )
    gen = vlm.model.generation_config
    gen.eos_token_id = cfg.text_config.eos_token_id
    gen.pad_token_id = cfg.text_config.pad_token_id
    gen.bos_token_id = cfg.text_config.bos_token_id
    gen.do_sample = False
    return vlm


def save_micro_vlm(
    vlm: Any, path: str | os.PathLike[str], *, config: MicroVLMConfig, extra: dict[str, Any]
) -> Path:
    """Write the base model (weights as bf16, config), tokenizer with its chat template, image
    processor config and ``micro_vlm.json`` (sizes and ``extra``) to ``path``. Adapters are not
    saved here (see ``agent.train.vlm.save_folder``)."""
    import torch

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model = vlm.model
    state = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    model.config.dtype = "bfloat16"
    model.save_pretrained(out, state_dict=state)
    model.generation_config.save_pretrained(out)
    vlm.processor.tokenizer.save_pretrained(out)
    vlm.processor.image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    manifest = {"model": asdict(config), **extra}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
