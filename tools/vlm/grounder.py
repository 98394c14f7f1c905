"""Qwen-VL box grounding (MIRAGE's ground step, ``docs/mirage.md``), with optional SAM2 masks.

The VLM answers a JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``. Two coordinate
conventions, both converted to source pixels here:
- ``"qwen3"``: Qwen3-VL answers integers normalised to 0..1000 of the image it saw;
- ``"qwen2.5"``: Qwen2.5-VL answers pixels of the image *as its processor resized it*
  (``image_grid_thw`` x patch size), not of the source image.
Boxes are then sorted (x1 < x2, y1 < y2), rounded outward to whole pixels, clamped to the
image, and dropped when nothing is left. Malformed JSON is repaired where the intent is clear;
an answer that still cannot be read is retried (sampling with another seed), then reported as
``GroundingError`` with the model's text, as is an answer with no usable box.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tools.contracts import Box, Grounding
from tools.errors import GroundingError
from tools.models import LoadOptions, resolve_local
from tools.vlm._common import Lazy, fit_longest_side

if TYPE_CHECKING:
    from PIL import Image

    from tools.vlm._qwen import Family, QwenVL
    from tools.vlm.sam2_refiner import Sam2Refiner

__all__ = [
    "GROUNDING_PROMPTS",
    "BoxParseError",
    "parse_boxes",
    "to_source_box",
    "QwenVLGrounder",
    "qwen3vl_8b",
    "qwen25vl_7b",
]

#: Grounding prompts (ours), phrased as in the Qwen-VL grounding cookbooks for each family.
GROUNDING_PROMPTS: dict[str, str] = {
    "qwen3": 'Locate every instance that matches the following description: "{expression}". '
    "Report bbox coordinates in JSON format.",
    "qwen2.5": 'Locate every "{expression}" in the image, output its bbox coordinates using '
    "JSON format.",
}

_BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FOUR = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)


class BoxParseError(ValueError):
    """The grounder's text holds no readable box list (distinct from an empty list)."""


# -- parsing ------------------------------------------------------------------------------------
def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """The boxes in a grounding answer, as the model wrote them (its own coordinate frame).

    Reads a JSON list/object with ``bbox_2d`` (also ``bbox``, ``box_2d``, ``box``; any key case)
    or bare ``[x1, y1, x2, y2]`` lists, inside code fences and prose. Repairs single quotes,
    Python literals, unquoted keys, trailing commas and unclosed brackets (a cut-off answer).
    Returns ``[]`` when the answer is a readable empty list; raises ``BoxParseError`` when no
    box list can be read at all (empty text, prose only, garbage).
    """
    if not isinstance(text, str) or not text.strip():
        raise BoxParseError("empty answer")
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    if start >= 0:
        for candidate in _repairs(body[start:]):
            try:
                data = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            boxes = _boxes_in(data)
            if boxes or _is_empty_answer(data):
                return boxes
    # Last resort: any four-number lists, e.g. prose with "[10, 20, 30, 40]" or JSON too broken
    # to repair. Only lists of exactly four numbers count, so stray numbers are never boxes.
    boxes = [tuple(float(v) for v in m.groups()) for m in _FOUR.finditer(body)]
    if boxes:
        return boxes  # type: ignore[return-value]
    raise BoxParseError("no box list found in the answer")


def _repairs(s: str):
    """The candidate texts to try, from the answer as given to increasingly repaired forms."""
    yield s
    end = max(s.rfind("]"), s.rfind("}"))
    if end >= 0:
        yield s[: end + 1]
    fixed = re.sub(r"\bTrue\b", "true", s)
    fixed = re.sub(r"\bFalse\b", "false", fixed)
    fixed = re.sub(r"\bNone\b", "null", fixed)
    fixed = fixed.replace("“", '"').replace("”", '"').replace("'", '"')
    fixed = re.sub(r"([{\s,])([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', fixed)  # bare keys
    fixed = re.sub(r",\s*([\]}])", r"\1", fixed)  # trailing commas
    yield fixed
    yield _close_brackets(fixed)
    # a cut-off list: keep the complete objects, close the list
    last = fixed.rfind("}")
    if last >= 0:
        yield _close_brackets(re.sub(r",\s*$", "", fixed[: last + 1]))


def _close_brackets(s: str) -> str:
    """``s`` with its unclosed brackets closed (strings are skipped when scanning)."""
    stack, in_str, escape = [], False, False
    for ch in s:
        if in_str:
            escape = (ch == "\\") and not escape
            if ch == '"' and not escape:
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    closing = "".join(reversed(stack))
    return s + ('"' if in_str else "") + closing


def _is_empty_answer(data: Any) -> bool:
    return data == [] or (isinstance(data, dict) and any(v == [] for v in data.values()))


def _boxes_in(data: Any) -> list[tuple[float, float, float, float]]:
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        for key in _BOX_KEYS:
            if key in lowered:
                box = _as_box(lowered[key])
                return [box] if box is not None else _boxes_in(lowered[key])
        return [b for v in data.values() if isinstance(v, (list, dict)) for b in _boxes_in(v)]
    if isinstance(data, list):
        box = _as_box(data)
        if box is not None:
            return [box]
        return [b for item in data for b in _boxes_in(item)]
    return []


def _as_box(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if isinstance(value[0], bool) or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers  # type: ignore[return-value]


# -- coordinates --------------------------------------------------------------------------------
def to_source_box(
    raw: tuple[float, float, float, float],
    *,
    convention: str,
    source_size: tuple[int, int],
    model_size: tuple[int, int] | None = None,
) -> Box | None:
    """A model box in source pixels (XYXY, x2/y2 exclusive), or None when nothing of it lies in
    the image.

    ``convention="qwen3"``: ``raw`` is normalised to 0..1000, so x = raw_x / 1000 * W.
    ``convention="qwen2.5"``: ``raw`` is in pixels of the processor-resized image of size
    ``model_size`` = (w', h'), so x = raw_x * W / w'. ``source_size`` is (W, H). Coordinates
    are sorted, rounded outward (floor x1/y1, ceil x2/y2) and clamped to [0, W] x [0, H].
    """
    width, height = source_size
    if convention == "qwen3":
        sx, sy = width / 1000.0, height / 1000.0
    elif convention == "qwen2.5":
        if model_size is None:
            raise ValueError("convention 'qwen2.5' needs model_size, the processor-resized (w, h)")
        sx, sy = width / model_size[0], height / model_size[1]
    else:
        raise ValueError(f"convention must be 'qwen3' or 'qwen2.5', got {convention!r}")
    x1, y1, x2, y2 = raw
    xa, xb = sorted((x1 * sx, x2 * sx))
    ya, yb = sorted((y1 * sy, y2 * sy))
    # tolerate float noise: 12.0000001 must not become 13
    left = min(max(math.floor(xa + 1e-6), 0), width)
    top = min(max(math.floor(ya + 1e-6), 0), height)
    right = min(max(math.ceil(xb - 1e-6), 0), width)
    bottom = min(max(math.ceil(yb - 1e-6), 0), height)
    if right <= left or bottom <= top:
        return None
    return Box(x1=left, y1=top, x2=right, y2=bottom)


# -- grounder -----------------------------------------------------------------------------------
class QwenVLGrounder:
    """Grounds a referring expression with a Qwen-VL, optionally refining each box into a SAM2
    mask. ``adapter`` names the peft adapter on the shared model switched on for these calls
    (loaded beforehand with ``load_adapter``); None (the default): the base weights, with any
    adapter switched off.

    ``convention`` defaults to the model's family. ``retries`` extra attempts (sampling at
    ``retry_temperature`` with seeds 1, 2, ...) follow an unreadable answer. ``image_size``
    resizes the image the model sees (longer side; None: as given); boxes always come back in
    the frame of the image passed to ``ground``.
    """

    name = "qwen-vl"

    def __init__(
        self,
        vlm: QwenVL | Callable[[], QwenVL],
        *,
        convention: Family | None = None,
        refiner: Sam2Refiner | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 256,
        retries: int = 1,
        retry_temperature: float = 0.7,
        image_size: int | None = None,
        adapter: str | None = None,
    ) -> None:
        if convention not in (None, "qwen3", "qwen2.5"):
            raise ValueError(f"convention must be 'qwen3', 'qwen2.5' or None, got {convention!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if prompt is not None and "{expression}" not in prompt:
            raise ValueError(f"prompt must contain '{{expression}}', got {prompt!r}")
        self._vlm = Lazy(vlm)
        self._convention = convention
        self.refiner = refiner
        self._prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.retries = retries
        self.retry_temperature = retry_temperature
        self.image_size = image_size
        self.adapter = adapter

    @property
    def vlm(self) -> QwenVL:
        return self._vlm.get()

    @property
    def convention(self) -> str:
        return self._convention or self.vlm.family

    def messages(self, image: Image.Image, expression: str) -> list[dict[str, Any]]:
        template = self._prompt or GROUNDING_PROMPTS[self.convention]
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": template.format(expression=expression)},
                ],
            }
        ]

    def _generate(self, messages: list[dict[str, Any]], attempt: int) -> str:
        sampled = attempt > 0
        answers = self.vlm.generate(
            [messages],
            max_new_tokens=self.max_new_tokens,
            temperature=self.retry_temperature if sampled else 0.0,
            seed=attempt if sampled else None,
            adapter=self.adapter,
        )
        return answers[0][0]

    def ground(self, image: Image.Image, expression: str) -> Grounding:
        """Boxes (pixel XYXY in ``image``'s frame) and, with a refiner, HxW bool masks."""
        # 1. check inputs
        if not isinstance(expression, str) or not expression.strip():
            raise ValueError(f"expression must be a non-empty string, got {expression!r}")
        source = image.convert("RGB")
        seen = fit_longest_side(source, self.image_size)
        convention = self.convention
        model_size = self.vlm.image_frame(seen) if convention == "qwen2.5" else None

        # 2. ask, parse, retry while unreadable
        messages = self.messages(seen, expression)
        raws: list[str] = []
        raw_boxes = None
        for attempt in range(self.retries + 1):
            raws.append(self._generate(messages, attempt))
            try:
                raw_boxes = parse_boxes(raws[-1])
                break
            except BoxParseError:
                continue
        if raw_boxes is None:
            raise GroundingError(
                f"could not read boxes for {expression!r} after "
                f"{len(raws)} attempt(s); last answer: {raws[-1]!r}",
                tool="grounder",
            )

        # 3. convert to source pixels; ``seen`` is ``source`` resized, so the model's frame
        #    (0..1000, or the processor-resized ``seen``) maps straight onto ``source``
        boxes: list[Box] = []
        for raw in raw_boxes:
            box = to_source_box(
                raw, convention=convention, source_size=source.size, model_size=model_size
            )
            if box is not None and box not in boxes:
                boxes.append(box)
        if not boxes:
            raise GroundingError(
                f"no region found for {expression!r}; answer: {raws[-1]!r}", tool="grounder"
            )

        # 4. optional masks
        masks = self.refiner.refine(source, boxes) if self.refiner is not None else None
        return Grounding(expression=expression, boxes=boxes, masks=masks, raw=raws[-1])


# -- registry factories -------------------------------------------------------------------------
def qwen3vl_8b(
    *,
    model: str = "Qwen/Qwen3-VL-8B-Instruct",
    sam2_checkpoint: str | None = None,
    sam2_config: str = "large",
    options: LoadOptions | None = None,
) -> QwenVLGrounder:
    """Grounder on Qwen3-VL-8B-Instruct (0..1000 boxes), SAM2 masks when ``sam2_checkpoint`` is
    given. Raises ``ModelNotFoundError`` now when weights are absent; loads on first use. Shares
    the loaded model with any critic on the same base weights."""
    return _grounder(model, sam2_checkpoint, sam2_config, options)


def qwen25vl_7b(
    *,
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
    sam2_checkpoint: str | None = None,
    sam2_config: str = "large",
    options: LoadOptions | None = None,
) -> QwenVLGrounder:
    """Grounder on Qwen2.5-VL-7B-Instruct (boxes in resized-input pixels); see ``qwen3vl_8b``."""
    return _grounder(model, sam2_checkpoint, sam2_config, options)


def _grounder(
    model: str, sam2_checkpoint: str | None, sam2_config: str, options: LoadOptions | None
) -> QwenVLGrounder:
    from tools.vlm._qwen import load_qwen_vl
    from tools.vlm.sam2_refiner import Sam2Refiner, load_sam2_predictor

    resolve_local(model, what="grounder")
    refiner = None
    if sam2_checkpoint is not None:
        path = os.path.expanduser(sam2_checkpoint)
        if not os.path.isfile(path):
            load_sam2_predictor(path)  # raises ModelNotFoundError with the full message
        refiner = Sam2Refiner(
            lambda: load_sam2_predictor(path, config=sam2_config, options=options)
        )
    return QwenVLGrounder(
        lambda: load_qwen_vl(model, options=options, what="grounder"), refiner=refiner
    )


#: Registry names declared by this module (``tools.registry``): kind -> name -> factory here.
BACKENDS = {"grounder": {"qwen3-vl-8b": "qwen3vl_8b", "qwen2.5-vl-7b": "qwen25vl_7b"}}
