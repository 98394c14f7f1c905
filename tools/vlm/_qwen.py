"""Qwen2.5-VL / Qwen3-VL through transformers: load once, switch peft adapters, generate.

Three ways to get a ``QwenVL``:
- ``load_qwen_vl(model)``: a hub id or local directory, from local files only (a missing model
  raises ``ModelNotFoundError``); one shared object per ``(weights, dtype, device)`` through
  ``REGISTRY``, so a grounder and a critic naming the same base weights load them once;
- ``qwen_vl_from_config(config, processor)``: random weights (tiny for tests, real size for GPU
  timing);
- ``QwenVL(model, processor)``: an already built pair.

Named LoRA adapters (peft, through transformers' adapter integration) live on the shared model;
each ``generate`` call says which one is on (``adapter="editscore"``) or none (base weights),
and the switch happens under the model's lock, so a grounding call can never run with the
critic's adapter on. ``with vlm.adapter(name):`` / ``with vlm.disable_adapter():`` hold that
state for a block of calls.

Speed options are arguments of ``generate``: ``num_return_sequences`` samples N
answers per prompt in one call (Avg@N), several prompts go in one padded batch, and ``fast``
picks the decoder. The fast decoder (``tools/vlm/_decode.py``) prefills once and replays a
compiled one-token step on a static KV cache (CUDA graphs), with the N answers to a prompt
sharing one prefill; it is the default on CUDA (``fast=None``). ``fast=False`` uses transformers'
``generate``, where ``cache_implementation="static"`` selects a static KV cache and ``compile``
torch.compile's the decoding step (transformers compiles automatically with a static cache on
CUDA; ``compile=False`` turns that off).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tools.models import REGISTRY, LoadOptions, resolve_local, torch_dtype
from tools.vlm._common import check_generate_args

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Family",
    "RawPrompt",
    "QwenVL",
    "load_qwen_vl",
    "qwen_vl_from_config",
    "family_of",
    "processor_without_video",
]

Family = Literal["qwen2.5", "qwen3"]
_MODEL_TYPES: dict[str, Family] = {"qwen2_5_vl": "qwen2.5", "qwen3_vl": "qwen3"}

#: A chat: ``[{"role": "user", "content": [{"type": "image", "image": PIL}, {"type": "text",
#: "text": "..."}]}, ...]``. Images are RGB PIL images, in the order the text refers to them.
Messages = list[dict[str, Any]]


class _OtherAdaptersMissing(logging.Filter):
    """Drops transformers' load report of adapter ``name`` when every key it calls MISSING is
    another loaded adapter's: transformers (5.x) expects every LoRA key of the model in each
    adapter's checkpoint, so loading a second adapter reports the first one's weights as
    missing and "newly initialized", though they are left as they were
    (tests/test_vlm_critic.py). A report with any other line passes."""

    def __init__(self, name: str, others: Sequence[str]) -> None:
        super().__init__()
        self.adapter, self.others = name, list(others)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not self.others or "LOAD REPORT" not in text:
            return True
        rows = [line for line in text.splitlines() if "|" in line and "MISSING" in line]
        keys = [line.split("|")[0].strip() for line in rows]
        table = [line for line in text.splitlines() if re.match(r"^\S.*\|.*\|", line)]
        if not keys or len(table) != len(keys) + 1:  # other statuses than MISSING (or none)
            return True
        theirs = [f".{other}." for other in self.others]
        return not all(any(t in k for t in theirs) and f".{self.adapter}." not in k for k in keys)


@dataclass(frozen=True)
class RawPrompt:
    """A prompt already in the model's chat format (special tokens included), with its images in
    the order of their ``<|image_pad|>`` markers. For formats a model was trained on that the
    processor's chat template does not produce (e.g. EditScore's Qwen2.5-VL template)."""

    text: str
    images: tuple[Any, ...] = field(default_factory=tuple)


def family_of(model_type: str) -> Family:
    """``"qwen2_5_vl"`` -> ``"qwen2.5"``, ``"qwen3_vl"`` -> ``"qwen3"``; ValueError otherwise."""
    try:
        return _MODEL_TYPES[model_type]
    except KeyError:
        raise ValueError(
            f"model_type {model_type!r} is not a supported Qwen-VL architecture; "
            f"supported: {sorted(_MODEL_TYPES)}"
        ) from None


class QwenVL:
    """A loaded Qwen-VL model with its processor and named peft adapters. Thread-safe.

    ``family`` decides the grounding convention (Qwen3-VL: boxes normalised to 0..1000;
    Qwen2.5-VL: pixels of the processor-resized image) and the EditScore prompt format.
    """

    def __init__(
        self, model: Any, processor: Any, *, family: Family | None = None, name: str = "qwen-vl"
    ) -> None:
        if family is None:
            family = family_of(getattr(model.config, "model_type", ""))
        if family not in ("qwen2.5", "qwen3"):
            raise ValueError(f"family must be 'qwen2.5' or 'qwen3', got {family!r}")
        self.model = model
        self.processor = processor
        self.family: Family = family
        self.name = name
        self._lock = threading.RLock()
        self._adapters: dict[str, str | None] = {}  # name -> source path (None: built in memory)
        self._active: str | None = None  # adapter forced on by an ``adapter()`` block
        self._forced = False  # True inside adapter()/disable_adapter() blocks
        self._state: str | None = None  # what the model's adapter layers are switched to now
        # Batched generation appends new tokens on the right, so prompts pad on the left.
        processor.tokenizer.padding_side = "left"

    # -- adapters -----------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters."""
        with self._lock:
            return sorted(self._adapters)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load a peft LoRA adapter from a local directory (or a hub id already in the cache)
        under ``name``. Loading the same name again is a no-op; a different path under an
        existing name is a ValueError."""
        source = os.fspath(path)
        with self._lock:
            if name in self._adapters:
                if self._adapters[name] != source:
                    raise ValueError(
                        f"adapter {name!r} is already loaded from "
                        f"{self._adapters[name]!r}, not {source!r}"
                    )
                return
            local = resolve_local(source, what=f"{name} adapter")
            # transformers' integration applies the model's checkpoint key conversions, so
            # adapters saved with older Qwen-VL module names load too. An extracted adapter's
            # lora_bias (``mira-train extract-lora``) makes peft warn, per layer with no bias,
            # that peft could not merge it; adapters here are switched, never merged by peft.
            # A second adapter makes peft warn of "multiple adapters in the model": several
            # adapters on one base (critic, grounder, planner) are what this class is for.
            quiet = _OtherAdaptersMissing(name, list(self._adapters))
            peft_log = logging.getLogger("transformers.integrations.peft")
            peft_log.addFilter(quiet)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r".*lora_bias=True.*has no bias")
                    warnings.filterwarnings("ignore", message=r"Already found a `peft_config`")
                    self.model.load_adapter(local, adapter_name=name)
            finally:
                peft_log.removeFilter(quiet)
            self._adapters[name] = source
            self._set_state(None)

    def add_adapter(self, name: str, config: Any) -> None:
        """Attach a new, untrained peft adapter (``peft.LoraConfig``) under ``name``: for tests and
        for training."""
        with self._lock:
            if name in self._adapters:
                raise ValueError(f"adapter {name!r} already exists")
            self.model.add_adapter(config, adapter_name=name)
            self._adapters[name] = None
            self._set_state(None)

    @contextmanager
    def adapter(self, name: str) -> Iterator[QwenVL]:
        """Hold ``name`` on (and every other adapter off) for the calls inside the block."""
        with self._lock:
            self._check_adapter(name)
            saved = (self._forced, self._active)
            self._forced, self._active = True, name
            try:
                yield self
            finally:
                self._forced, self._active = saved

    @contextmanager
    def disable_adapter(self) -> Iterator[QwenVL]:
        """Hold the base weights (every adapter off) for the calls inside the block."""
        with self._lock:
            saved = (self._forced, self._active)
            self._forced, self._active = True, None
            try:
                yield self
            finally:
                self._forced, self._active = saved

    def _check_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            raise ValueError(f"unknown adapter {name!r}; loaded: {sorted(self._adapters)}")

    def _set_state(self, name: str | None) -> None:
        """Switch the model to adapter ``name`` or to the base weights (lock held)."""
        if not self._adapters:
            return
        if name is None:
            self.model.disable_adapters()
        else:
            self.model.enable_adapters()
            self.model.set_adapter(name)
        self._state = name

    def active_adapter(self) -> str | None:
        """The adapter the model was last switched to (None: base weights)."""
        with self._lock:
            return self._state

    # -- generation ---------------------------------------------------------------------------
    def image_frame(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) of ``image`` as the processor resizes it for the model: the frame of
        Qwen2.5-VL's pixel boxes (``image_grid_thw`` x patch size)."""
        ip = self.processor.image_processor
        grid = ip(images=[image.convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
        patch = int(ip.patch_size)
        return int(grid[2]) * patch, int(grid[1]) * patch

    def render(self, prompt: Messages | RawPrompt) -> tuple[str, list[Any]]:
        """The prompt text in the model's chat format and its images, in order."""
        if isinstance(prompt, RawPrompt):
            return prompt.text, list(prompt.images)
        text = self.processor.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )
        images = [
            item["image"]
            for message in prompt
            if isinstance(message.get("content"), list)
            for item in message["content"]
            if item.get("type") == "image"
        ]
        return text, images

    def generate(
        self,
        prompts: Sequence[Messages | RawPrompt],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        num_return_sequences: int = 1,
        adapter: str | None = None,
        cache_implementation: str | None = None,
        compile: bool | None = None,
        fast: bool | None = None,
    ) -> list[list[str]]:
        """Generate for several prompts in one padded batch; ``num_return_sequences`` answers each.

        Returns ``answers[i][j]``: the j-th answer to prompt i, special tokens removed, stripped.
        ``temperature=0`` decodes greedily (then ``num_return_sequences`` must be 1); otherwise
        samples with ``top_p``/``top_k``, seeded by ``seed``. ``adapter`` names the peft adapter
        to use (None: base weights) unless an ``adapter()``/``disable_adapter()`` block holds one.

        ``fast``: True decodes with ``tools.vlm._decode.fast_generate`` (compiled step unless
        ``compile=False``); False with transformers' ``generate`` (``cache_implementation`` and
        ``compile`` as documented there); None (default) picks the fast decoder when the model is
        on CUDA, no ``cache_implementation`` is asked for and the model's generation config uses
        nothing it lacks (see ``_fast_unsupported``). Greedy output is the same either way;
        sampled answers differ draw by draw (another sampler), not in distribution.
        """
        # 1. check inputs
        check_generate_args(prompts, max_new_tokens, temperature, num_return_sequences)
        import torch

        # 2. render and tokenise: one batch, left-padded
        texts, images = [], []
        for prompt in prompts:
            text, imgs = self.render(prompt)
            texts.append(text)
            images.extend(img.convert("RGB") for img in imgs)
        inputs = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        )
        inputs = inputs.to(self.device)
        prompt_len = inputs["input_ids"].shape[1]

        # 3. decoding options
        tok = self.processor.tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "num_return_sequences": num_return_sequences,
            "pad_token_id": tok.pad_token_id,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
            if top_p is not None:
                kwargs["top_p"] = top_p
            if top_k is not None:
                kwargs["top_k"] = top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        unsupported = _fast_unsupported(self.model.generation_config)
        if fast is None:
            fast = (
                self.device.startswith("cuda") and cache_implementation is None and not unsupported
            )
        elif fast and (unsupported or cache_implementation is not None):
            raise ValueError(
                f"fast=True cannot honour cache_implementation={cache_implementation!r} "
                f"or generation-config settings {unsupported}; pass fast=False"
            )
        if fast:
            kwargs = self._fast_kwargs(
                kwargs,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                seed=seed,
                compile=compile is not False,
            )
        else:
            if cache_implementation is not None:
                kwargs["cache_implementation"] = cache_implementation
            if compile is False:
                kwargs["disable_compile"] = True
            elif compile:
                self._compile()

        # 4. generate with the right adapter, one call at a time per model and device
        with REGISTRY.device_lock(self.device), self._lock:
            self._check_adapter(adapter)
            self._set_state(self._active if self._forced else adapter)
            if fast:
                from tools.vlm._decode import fast_generate

                new = fast_generate(self.model, dict(inputs), **kwargs)  # (B * n, T)
            else:
                if seed is not None:
                    torch.manual_seed(seed)
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **kwargs)  # (B * num_return_sequences, L)
                new = out[:, prompt_len:]

        # 5. decode the new tokens only
        decoded = tok.batch_decode(
            new, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        decoded = [d.strip() for d in decoded]
        n = num_return_sequences
        return [decoded[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _fast_kwargs(
        self,
        kwargs: dict[str, Any],
        *,
        temperature: float,
        top_p: float | None,
        top_k: int | None,
        seed: int | None,
        compile: bool,
    ) -> dict[str, Any]:
        """``fast_generate`` arguments equal to what ``model.generate`` would use: unset sampling
        settings come from the model's generation config, then transformers' defaults."""
        gen = self.model.generation_config
        out = {
            "max_new_tokens": kwargs["max_new_tokens"],
            "seed": seed,
            "compile": compile,
            "num_return_sequences": kwargs["num_return_sequences"],
            "pad_token_id": kwargs["pad_token_id"],
            "eos_token_id": gen.eos_token_id,
            "repetition_penalty": gen.repetition_penalty or 1.0,
            "min_new_tokens": gen.min_new_tokens or 0,
            "temperature": temperature,
        }
        if temperature > 0:
            out["top_k"] = (
                top_k if top_k is not None else (gen.top_k if gen.top_k is not None else 50)
            )
            out["top_p"] = top_p if top_p is not None else gen.top_p
        return out

    def _compile(self) -> None:
        """torch.compile the decoder forward once (lock held by caller or not needed)."""
        with self._lock:
            if getattr(self, "_compiled", False):
                return
            import torch

            self.model.forward = torch.compile(
                self.model.forward, mode="reduce-overhead", dynamic=False
            )
            self._compiled = True


def _fast_unsupported(gen: Any) -> list[str]:
    """Generation-config settings that ``fast_generate`` does not implement and that would change
    ``model.generate``'s output (names; empty when the fast decoder gives the same answers)."""
    neutral = {
        "no_repeat_ngram_size": (None, 0),
        "bad_words_ids": (None,),
        "suppress_tokens": (None,),
        "begin_suppress_tokens": (None,),
        "sequence_bias": (None,),
        "forced_bos_token_id": (None,),
        "forced_eos_token_id": (None,),
        "min_p": (None,),
        "typical_p": (None, 1.0),
        "epsilon_cutoff": (None, 0.0),
        "eta_cutoff": (None, 0.0),
        "min_length": (None, 0),
        "exponential_decay_length_penalty": (None,),
        "stop_strings": (None,),
        "num_beams": (None, 1),
        "renormalize_logits": (None, False),
    }
    return [name for name, ok in neutral.items() if getattr(gen, name, None) not in ok]


# -- processors without torchvision -------------------------------------------------------------
_PROCESSOR_CLASSES: dict[str, type] = {}


def processor_without_video(family: Family) -> type:
    """The Qwen-VL processor class of ``family`` that handles images only.

    Without torchvision, building ``Qwen2_5_VLProcessor``/``Qwen3VLProcessor`` fails on their
    video processor; this subclass declares only ``image_processor`` and ``tokenizer``.
    """
    if family not in _PROCESSOR_CLASSES:
        if family == "qwen2.5":
            from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import (
                Qwen2_5_VLProcessor as base,
            )
        elif family == "qwen3":
            from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor as base
        else:
            raise ValueError(f"family must be 'qwen2.5' or 'qwen3', got {family!r}")

        def get_attributes(cls: type) -> list[str]:
            return ["image_processor", "tokenizer"]

        _PROCESSOR_CLASSES[family] = type(
            f"{base.__name__}ImagesOnly", (base,), {"get_attributes": classmethod(get_attributes)}
        )
    return _PROCESSOR_CLASSES[family]


def _load_processor(path: str, family: Family) -> Any:
    """The model's processor from ``path``; without torchvision, an images-only one built from the
    directory's tokenizer, image-processor config and chat template."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor
    except (ImportError, AttributeError, ValueError, OSError, TypeError):
        pass  # typically the video processor needing torchvision; build without it below
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
    chat_template = getattr(tokenizer, "chat_template", None)
    for name in ("chat_template.json", "chat_template.jinja"):
        file = Path(path) / name
        if file.is_file():
            raw = file.read_text(encoding="utf-8")
            chat_template = json.loads(raw)["chat_template"] if name.endswith(".json") else raw
            break
    cls = processor_without_video(family)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def load_qwen_vl(
    model: str | os.PathLike[str],
    *,
    processor: str | os.PathLike[str] | None = None,
    options: LoadOptions | None = None,
    what: str = "Qwen-VL",
) -> QwenVL:
    """The shared ``QwenVL`` for ``model`` (hub id in the local cache, or directory), loaded once
    per ``(weights, dtype, device)``. ``processor`` names another directory to take the processor
    from (e.g. the base model's, for a fine-tuned checkpoint saved without one). Never downloads:
    raises ``ModelNotFoundError`` naming the model and where it looked."""
    path = resolve_local(model, what=what)
    proc_path = (
        resolve_local(processor, what=f"{what} processor") if processor is not None else None
    )
    opts = (options or LoadOptions()).resolved()
    key = ("qwen-vl", path, proc_path, opts.dtype, opts.device)
    return REGISTRY.get(key, lambda: _load(path, proc_path or path, opts, name=os.fspath(model)))


def _load(path: str, proc_path: str, opts: LoadOptions, *, name: str) -> QwenVL:
    cfg_file = Path(path) / "config.json"
    try:
        model_type = json.loads(cfg_file.read_text(encoding="utf-8"))["model_type"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has no readable config.json with a model_type ({exc})") from exc
    family = family_of(model_type)
    if family == "qwen2.5":
        from transformers import Qwen2_5_VLForConditionalGeneration as cls
    else:
        from transformers import Qwen3VLForConditionalGeneration as cls
    model = cls.from_pretrained(path, dtype=torch_dtype(opts.dtype), local_files_only=True)
    model = model.to(opts.device).eval()
    return QwenVL(model, _load_processor(proc_path, family), family=family, name=name)


def qwen_vl_from_config(
    config: Any,
    processor: Any,
    *,
    seed: int = 0,
    options: LoadOptions | None = None,
    name: str = "qwen-vl-random",
) -> QwenVL:
    """A ``QwenVL`` with random weights from a ``Qwen2_5_VLConfig``/``Qwen3VLConfig`` (tiny for
    tests, real size for GPU timing). Not shared through the registry: the caller owns it."""
    import torch

    family = family_of(config.model_type)
    if family == "qwen2.5":
        from transformers import Qwen2_5_VLForConditionalGeneration as cls
    else:
        from transformers import Qwen3VLForConditionalGeneration as cls
    opts = (options or LoadOptions(device="cpu")).resolved()
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(opts.dtype))
    try:
        with torch.device(opts.device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return QwenVL(model.eval(), processor, family=family, name=name)
