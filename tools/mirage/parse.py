"""MIRAGE step 1: split an instruction into (referring expression, atomic edit) pairs.

The VLM answers JSON; malformed answers are repaired where the intent is clear, retried
otherwise, then reported as ``RegionParseError`` (recoverable: the planner sees it). Never a
silent fallback to the whole image.

The paper's parser prompt (MIRAGE supplementary, Fig. S9) is published only as a figure, so
``PARSE_PROMPT`` is our own text following the rules the paper states: r_k is the most
localised target span copied verbatim from the instruction (spatial words kept); I_k keeps the
edit and drops the positional words; for "add X to/on Y", r_k is the existing anchor Y.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from tools.errors import RecoverableToolError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PARSE_PROMPT", "EditPair", "RegionParseError", "InstructionParser",
           "parse_edit_pairs", "VLMInstructionParser"]

PARSE_PROMPT = """You split an image editing instruction into independent edits, one per target object.
For each edit give:
- "ref": the shortest span of the instruction that identifies the target object, copied word for word, keeping its spatial words (e.g. "the leftmost dog", "the second cup from the right"). For "add X to/on/next to Y", the target is the existing object Y.
- "edit": the edit itself without the positional words (e.g. "make it wear sunglasses", "turn it red").
Answer only with a JSON list such as [{{"ref": "the leftmost dog", "edit": "make it wear sunglasses"}}].

Instruction: {instruction}"""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_REF_KEYS = ("ref", "referring_expression", "expression", "target", "object")
_EDIT_KEYS = ("edit", "instruction", "atomic_instruction", "action")


class EditPair(BaseModel):
    """One regional edit: which object (``expression``) and what to do to it (``instruction``)."""

    expression: str = Field(description="referring expression, verbatim from the instruction")
    instruction: str = Field(description="the atomic edit, positional words dropped")


class RegionParseError(RecoverableToolError):
    """The instruction could not be split into (expression, edit) pairs."""


@runtime_checkable
class InstructionParser(Protocol):
    def parse(self, image: Image.Image, instruction: str) -> list[EditPair]: ...


def parse_edit_pairs(text: str) -> list[EditPair]:
    """Read the parser's JSON answer (code fences, prose around it, single quotes, trailing
    commas, a lone object instead of a list are tolerated). Raises ``ValueError`` if no pair
    can be read."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = min([i for i in (body.find("["), body.find("{")) if i >= 0], default=-1)
    if start < 0:
        raise ValueError(f"no JSON in the answer: {text[:120]!r}")
    body = body[start:]
    data = None
    for candidate in (body, _repaired(body)):
        try:
            data, _ = json.JSONDecoder().raw_decode(candidate)
            break
        except json.JSONDecodeError:
            continue
    if data is None:
        raise ValueError(f"unreadable JSON: {body[:120]!r}")
    items = data if isinstance(data, list) else [data]
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            continue
        ref = next((item[k] for k in _REF_KEYS if isinstance(item.get(k), str) and item[k].strip()), None)
        edit = next((item[k] for k in _EDIT_KEYS if isinstance(item.get(k), str) and item[k].strip()), None)
        if ref and edit:
            pairs.append(EditPair(expression=ref.strip(), instruction=edit.strip()))
    if not pairs:
        raise ValueError(f"no (ref, edit) pair in the answer: {text[:120]!r}")
    return pairs


def _repaired(body: str) -> str:
    s = body.strip()
    s = re.sub(r",\s*([\]}])", r"\1", s)  # trailing commas
    if "'" in s and '"' not in s:
        s = s.replace("'", '"')
    opens = s.count("[") - s.count("]")
    braces = s.count("{") - s.count("}")
    return s + "}" * max(0, braces) + "]" * max(0, opens)


class VLMInstructionParser:
    """The parser on a generate function or a ``tools.vlm`` ``QwenVL`` (base weights).

    ``generate(messages, attempt) -> str`` may be given directly (any model); with ``vlm``,
    the first attempt decodes greedily and retries sample at ``retry_temperature``.
    """

    def __init__(self, vlm: Any = None, *, generate: Callable[[list[dict[str, Any]], int], str] | None = None,
                 retries: int = 1, retry_temperature: float = 0.7, max_new_tokens: int = 256) -> None:
        if (vlm is None) == (generate is None):
            raise ValueError("pass exactly one of vlm= or generate=")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self._vlm = vlm
        self._generate = generate
        self.retries = retries
        self.retry_temperature = retry_temperature
        self.max_new_tokens = max_new_tokens

    def _ask(self, messages: list[dict[str, Any]], attempt: int) -> str:
        if self._generate is not None:
            return self._generate(messages, attempt)
        vlm = self._vlm() if callable(self._vlm) and not hasattr(self._vlm, "generate") else self._vlm
        sampled = attempt > 0
        return vlm.generate([messages], max_new_tokens=self.max_new_tokens,
                            temperature=self.retry_temperature if sampled else 0.0,
                            seed=attempt if sampled else None, adapter=None)[0][0]

    def parse(self, image: Image.Image, instruction: str) -> list[EditPair]:
        messages = [{"role": "user", "content": [
            {"type": "image", "image": image},
            {"type": "text", "text": PARSE_PROMPT.format(instruction=instruction)}]}]
        answers: list[str] = []
        for attempt in range(self.retries + 1):
            answers.append(self._ask(messages, attempt))
            try:
                return parse_edit_pairs(answers[-1])
            except ValueError:
                continue
        raise RegionParseError(f"could not split {instruction!r} into edits after {len(answers)} "
                               f"attempt(s); last answer: {answers[-1][:200]!r}", tool="parser")


class StaticParser:
    """A parser that returns fixed pairs: for callers that already know their regions, and tests."""

    def __init__(self, pairs: Sequence[EditPair | tuple[str, str]]) -> None:
        self.pairs = [p if isinstance(p, EditPair) else EditPair(expression=p[0], instruction=p[1])
                      for p in pairs]

    def parse(self, image: Image.Image, instruction: str) -> list[EditPair]:
        return list(self.pairs)
