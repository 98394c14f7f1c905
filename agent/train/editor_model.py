"""The micro editor: a FLUX.2 [klein] pipeline small enough to train in minutes and ship.

Every part is the real class a FLUX.2 [klein] checkpoint uses, so the trained folder loads
through ``Flux2KleinPipeline.from_pretrained`` and the project's ``Flux2KleinEditor`` like any
real checkpoint:

- ``AutoencoderKLFlux2``: 8x downsampling, 32 latent channels (as the real VAE), thin blocks;
- ``Qwen3ForCausalLM`` text encoder, a few narrow layers; the pipeline stacks the hidden
  states named by ``text_encoder_out_layers`` (here every layer) into ``joint_attention_dim``;
- a byte-level BPE tokenizer trained with ``tokenizers`` on micro-world text, served by
  ``Qwen2Tokenizer`` with a Qwen3-style chat template (the pipeline renders every prompt with
  ``apply_chat_template(..., enable_thinking=False)``);
- ``Flux2Transformer2DModel``: double- and single-stream blocks, 4-axis RoPE;
- ``FlowMatchEulerDiscreteScheduler`` with FLUX.2's dynamic shifting.

The pipeline pads every prompt to ``max_sequence_length`` tokens and indexes hidden states
``text_encoder_out_layers``; both differ from the pipeline defaults (512, (9, 18, 27)), so a
caller passes ``MicroEditorConfig.call_kwargs()`` (the ``micro`` preset does).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MicroEditorConfig",
    "SMOKE",
    "GPU",
    "build_tokenizer",
    "build_pipeline",
    "save_pipeline",
    "CHAT_TEMPLATE",
]

#: Qwen3's chat template, cut to what the pipeline renders: one user turn, generation prompt,
#: and the empty think block Qwen3 writes when ``enable_thinking`` is False.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


@dataclass(frozen=True)
class MicroEditorConfig:
    """Sizes of the micro editor's parts (defaults: the shipped GPU configuration)."""

    #: canvas the editor is trained at (pixels, a multiple of 16)
    image_size: int = 224
    #: VAE encoder widths; 4 blocks give the real 8x downsampling
    vae_blocks: tuple[int, ...] = (32, 64, 128, 128)
    #: VAE decoder widths (a wider decoder keeps 2-3 px patterns)
    vae_decoder_blocks: tuple[int, ...] = (64, 128, 128, 128)
    vae_layers_per_block: int = 1
    #: text encoder (Qwen3): width, layers, heads; every layer's hidden state is stacked
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vocab_size: int = 1024
    #: prompt length the pipeline pads to (whole 3-edit instructions fit)
    max_sequence_length: int = 96
    #: transformer: heads x head dim = width; double- then single-stream blocks
    heads: int = 4
    head_dim: int = 64
    double_blocks: int = 3
    single_blocks: int = 6
    #: Euler steps at inference (the pipeline is "distilled": no CFG)
    num_inference_steps: int = 8

    @property
    def text_out_layers(self) -> tuple[int, ...]:
        """Hidden-state indices the pipeline stacks: every layer's output (1..layers)."""
        return tuple(range(1, self.text_layers + 1))

    def call_kwargs(self) -> dict[str, Any]:
        """Pipeline call arguments this model needs beyond the pipeline's defaults."""
        return {
            "max_sequence_length": self.max_sequence_length,
            "text_encoder_out_layers": self.text_out_layers,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MicroEditorConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MicroEditorConfig fields {unknown!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


#: CPU smoke configuration: every part present, tiny, trains in seconds (tests).
SMOKE = MicroEditorConfig(
    image_size=64,
    vae_blocks=(8, 8, 16, 16),
    vae_decoder_blocks=(8, 8, 16, 16),
    vae_layers_per_block=1,
    text_hidden=32,
    text_layers=2,
    text_heads=2,
    vocab_size=400,
    max_sequence_length=48,
    heads=2,
    head_dim=16,
    double_blocks=1,
    single_blocks=1,
    num_inference_steps=2,
)
GPU = MicroEditorConfig()


def build_tokenizer(corpus: Iterable[str], config: MicroEditorConfig) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus`` (``train_qwen_bpe``) with the Qwen3
    chat template the pipeline renders prompts with."""
    from agent.train._tokenizer import train_qwen_bpe

    return train_qwen_bpe(
        corpus,
        vocab_size=config.vocab_size,
        specials=_SPECIALS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=config.max_sequence_length,
    )


def build_pipeline(config: MicroEditorConfig, tokenizer: Any, *, seed: int = 0) -> Any:
    """A ``Flux2KleinPipeline`` (distilled: no CFG) with freshly initialised parts."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    n = len(config.vae_blocks)
    vae = AutoencoderKLFlux2(
        block_out_channels=config.vae_blocks,
        decoder_block_out_channels=config.vae_decoder_blocks,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=32,
        norm_num_groups=min(32, min(config.vae_blocks)),
        sample_size=config.image_size,
    )
    text = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=config.vocab_size,
            hidden_size=config.text_hidden,
            intermediate_size=3 * config.text_hidden,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            num_key_value_heads=config.text_heads,
            head_dim=config.text_hidden // config.text_heads,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    rope = config.head_dim // 4
    transformer = Flux2Transformer2DModel(
        in_channels=4 * 32,
        num_layers=config.double_blocks,
        num_single_layers=config.single_blocks,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.heads,
        joint_attention_dim=config.text_hidden * config.text_layers,
        axes_dims_rope=(rope,) * 4,
        guidance_embeds=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=4096,
        max_shift=1.15,
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
    )
    return Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def save_pipeline(
    pipe: Any,
    folder: str | Path,
    config: MicroEditorConfig,
    *,
    card: dict[str, Any] | None = None,
    dtype: str = "bfloat16",
) -> Path:
    """Save ``pipe`` as a diffusers folder (safetensors shards of at most 15 MB, weights in
    ``dtype``), plus ``micro_editor.json``: the config, the call arguments and ``card``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, dtype)
    originals = {}
    for name in ("vae", "text_encoder", "transformer"):
        module = getattr(pipe, name)
        originals[name] = next(module.parameters()).dtype
        module.to(target)
    try:
        pipe.save_pretrained(folder, safe_serialization=True, max_shard_size="15MB")
    finally:
        for name, dt in originals.items():
            getattr(pipe, name).to(dt)
    meta = {
        "config": config.to_json(),
        "call_kwargs": config.call_kwargs(),
        "num_inference_steps": config.num_inference_steps,
        "dtype": dtype,
        **(card or {}),
    }
    (folder / "micro_editor.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return folder
