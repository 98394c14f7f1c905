"""MIRA planners (DESIGN 7): a local Qwen2.5-VL policy, or any langchain-core chat model.

Both render the published MIRA template (``tools.prompts.MIRA_PLANNER_TEMPLATE``) with the
original image and the latest edited image in place of its two ``<image>`` markers, and parse
the answer with ``tools.prompts.parse_planner_output``: ``NEXT_EDITING_INSTRUCTION: ...`` or
``<stop>``; anything else raises ``PlannerOutputError`` (recoverable: the graph re-plans).

The template has no slot for the history: the MIRA policy is state-conditioned (it compares
the two images), so ``history`` is accepted for the ``Planner`` protocol and not shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tools.errors import PlannerOutputError
from tools.prompts import parse_planner_output, render_planner_prompt
from tools.contracts import HistoryItem, PlannerDecision
from tools.models import LoadOptions, ModelNotFoundError, resolve_local
from tools.vlm._common import Lazy, fit_longest_side, image_url_block, message_text

if TYPE_CHECKING:
    from PIL import Image

    from tools.vlm._qwen import QwenVL

__all__ = ["MiraPlanner", "ChatModelPlanner", "planner_content", "parse_mira_output", "mira_7b", "mira_3b",
           "MIRA_LORA_ADAPTER"]

#: Adapter name of a MIRA LoRA on its base model.
MIRA_LORA_ADAPTER = "mira-planner"

#: MIRA trains and runs at a fixed input resolution of 512 (MIRA supplementary, section A).
DEFAULT_IMAGE_SIZE = 512


_UNREADABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control chars, U+FFFD
_WORD = re.compile(r"[^\W\d_]{2}")  # two letters in a row, any script


def parse_mira_output(raw: str) -> PlannerDecision:
    """``parse_planner_output``, plus: an instruction must be readable text (no control
    characters or undecodable bytes, at least one word). ``parse_planner_output`` accepts a bare
    line without the prefix, and a broken model's byte soup is one such line: it must become a
    ``PlannerOutputError``, never an edit."""
    decision = parse_planner_output(raw)
    if decision.instruction is not None and (
            _UNREADABLE.search(decision.instruction) or not _WORD.search(decision.instruction)):
        raise PlannerOutputError("the planner's instruction is not readable text", raw=raw)
    return decision


def planner_content(original: Image.Image, current: Image.Image, instruction: str,
                    image: Callable[[Image.Image], dict[str, Any]]) -> list[dict[str, Any]]:
    """The user turn's content: the template's text with ``image(original)`` and
    ``image(current)`` in place of its two ``<image>`` markers, in that order."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    parts = render_planner_prompt(instruction).split("<image>")
    if len(parts) != 3:  # the template is a constant: two markers
        raise RuntimeError("MIRA_PLANNER_TEMPLATE must contain exactly two <image> markers")
    return [{"type": "text", "text": parts[0]}, image(original),
            {"type": "text", "text": parts[1]}, image(current),
            {"type": "text", "text": parts[2]}]


class MiraPlanner:
    """The MIRA policy on a local Qwen2.5-VL (or any Qwen-VL) through transformers.

    ``vlm`` is a ``QwenVL`` or a zero-argument callable returning one (loaded on first use).
    ``adapter`` names a peft adapter on it to switch on (a MIRA LoRA); None runs the weights as
    loaded (a fully fine-tuned checkpoint). Greedy decoding by default, so a step is
    reproducible; ``image_size`` resizes both images so their longer side is that many pixels
    (None: as given).
    """

    name = "mira"

    def __init__(self, vlm: QwenVL | Callable[[], QwenVL], *, adapter: str | None = None,
                 max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = 0,
                 image_size: int | None = DEFAULT_IMAGE_SIZE) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
        if image_size is not None and image_size < 28:
            raise ValueError(f"image_size must be >= 28 or None, got {image_size!r}")
        self._vlm = Lazy(vlm)
        self.adapter = adapter
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.image_size = image_size

    @classmethod
    def from_pretrained(cls, base: str | os.PathLike[str], *, checkpoint: str | None = None,
                        lora: str | None = None, options: LoadOptions | None = None,
                        **kwargs: Any) -> MiraPlanner:
        """A planner on local weights: ``checkpoint`` (a fully fine-tuned model directory; the
        processor comes from ``base`` unless the checkpoint has one) or ``lora`` (a peft adapter
        on ``base``), or ``base`` alone. Paths are checked now (``ModelNotFoundError`` if
        absent); weights load on first use, once per process."""
        from tools.vlm._qwen import load_qwen_vl

        weights = checkpoint if checkpoint is not None else base
        resolve_local(weights, what="MIRA planner")
        resolve_local(base, what="MIRA planner base")
        if lora is not None:
            resolve_local(lora, what="MIRA planner LoRA")
        has_processor = checkpoint is not None and _has_processor(checkpoint)
        processor = None if checkpoint is None or has_processor else base

        def load() -> QwenVL:
            vlm = load_qwen_vl(weights, processor=processor, options=options, what="MIRA planner")
            if lora is not None:
                vlm.load_adapter(MIRA_LORA_ADAPTER, lora)
            return vlm

        return cls(load, adapter=MIRA_LORA_ADAPTER if lora is not None else None, **kwargs)

    @property
    def vlm(self) -> QwenVL:
        """The model, loaded on first use."""
        return self._vlm.get()

    def messages(self, original: Image.Image, current: Image.Image, instruction: str) -> list[dict]:
        """The chat sent to the model (images resized to ``image_size``)."""
        def image(img: Image.Image) -> dict[str, Any]:
            return {"type": "image", "image": fit_longest_side(img, self.image_size)}

        return [{"role": "user", "content": planner_content(original, current, instruction, image)}]

    def _generate(self, messages: list[dict]) -> str:
        answers = self.vlm.generate([messages], max_new_tokens=self.max_new_tokens,
                                    temperature=self.temperature, seed=self.seed,
                                    adapter=self.adapter)
        return answers[0][0]

    def next_action(self, original: Image.Image, current: Image.Image, instruction: str,
                    history: Sequence[HistoryItem] = ()) -> PlannerDecision:
        raw = self._generate(self.messages(original, current, instruction))
        return parse_mira_output(raw)


class ChatModelPlanner:
    """The MIRA prompt on any langchain-core chat model with image input (e.g. ``ChatOpenAI``
    pointed at a vLLM server serving a MIRA checkpoint). Images go as base64 PNG data URLs."""

    name = "mira-chat"

    def __init__(self, chat_model: Any, *, image_size: int | None = DEFAULT_IMAGE_SIZE) -> None:
        if not hasattr(chat_model, "invoke"):
            raise TypeError(f"chat_model must be a langchain-core chat model, got {chat_model!r}")
        self.chat_model = chat_model
        self.image_size = image_size

    def messages(self, original: Image.Image, current: Image.Image, instruction: str) -> list[Any]:
        from langchain_core.messages import HumanMessage

        def image(img: Image.Image) -> dict[str, Any]:
            return image_url_block(fit_longest_side(img, self.image_size))

        return [HumanMessage(content=planner_content(original, current, instruction, image))]

    def next_action(self, original: Image.Image, current: Image.Image, instruction: str,
                    history: Sequence[HistoryItem] = ()) -> PlannerDecision:
        reply = self.chat_model.invoke(self.messages(original, current, instruction))
        return parse_mira_output(message_text(reply))


def _has_processor(path: str) -> bool:
    local = resolve_local(path, what="MIRA planner")
    return any(os.path.isfile(os.path.join(local, f)) for f in
               ("preprocessor_config.json", "processor_config.json"))


# -- registry factories ---------------------------------------------------------------------------
def mira_7b(*, checkpoint: str | None = None, lora: str | None = None,
            base: str = "Qwen/Qwen2.5-VL-7B-Instruct", options: LoadOptions | None = None) -> MiraPlanner:
    """MIRA 7B: Qwen2.5-VL-7B-Instruct plus the MIRA fine-tune (``checkpoint``) or LoRA. Raises
    ``ModelNotFoundError`` when the weights are not on this machine, or none were named."""
    return _mira(base, checkpoint, lora, options, "MIRA 7B")


def mira_3b(*, checkpoint: str | None = None, lora: str | None = None,
            base: str = "Qwen/Qwen2.5-VL-3B-Instruct", options: LoadOptions | None = None) -> MiraPlanner:
    """MIRA 3B: Qwen2.5-VL-3B-Instruct plus the MIRA fine-tune or LoRA (see ``mira_7b``)."""
    return _mira(base, checkpoint, lora, options, "MIRA 3B")


def _mira(base: str, checkpoint: str | None, lora: str | None, options: LoadOptions | None,
          what: str) -> MiraPlanner:
    if checkpoint is None and lora is None:
        # A base Qwen-VL does not know the MIRA output format: refuse rather than run it silently.
        raise ModelNotFoundError(
            f"{what} planner: no fine-tuned weights given. The MIRA policy is {base!r} plus a "
            f"MIRA checkpoint or LoRA; pass checkpoint=<local dir> or lora=<local dir> (this "
            f"package never downloads weights).", tool="planner")
    return MiraPlanner.from_pretrained(base, checkpoint=checkpoint, lora=lora, options=options)
