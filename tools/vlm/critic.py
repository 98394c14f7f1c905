"""EditScore critics: a local Qwen-VL + EditScore LoRA, or any chat model.

One pass = two VLM answers: semantic consistency on (source, edited, instruction) giving
``[prompt following, overediting consistency]``, and perceptual quality on the edited image
giving ``[naturalness, artifacts]``, each on 0..25 in the prompt (EditScore's texts, verbatim in
``editscore_prompts``) and divided by 2.5. SC = min(PF, Cons), PQ = min(naturalness,
artifacts), Overall = sqrt(SC * PQ). Avg@N runs N passes (sampling, temperature 0.7) and
averages each score over the passes; the reported Overall is the mean of per-pass Overall, as
EditScore's default ``average_last`` reduction, not sqrt of the averaged SC and PQ.

A pass whose answers cannot be read is retried, then dropped; if no pass is readable the
critique is ``valid=False`` with every score None. The reference package substitutes a
random or midpoint score there; this module never does.

Masked mode (MIRAGE evaluation): with ``mask`` (HxW bool), the SC pass sees both images with
everything outside the mask blacked out; the PQ pass sees the whole edited image.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from tools.contracts import Critique
from tools.models import LoadOptions, resolve_local
from tools.vlm._common import Lazy, image_url_block, message_text
from tools.vlm.editscore_prompts import DEFAULT_SCORE_RANGE, pq_prompt, qwen25_chat, sc_prompt

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from tools.vlm._qwen import QwenVL

__all__ = [
    "EDITSCORE_ADAPTER",
    "ScoreParseError",
    "ParsedScores",
    "parse_editscore_output",
    "editscore_pass",
    "average_passes",
    "AveragedCritique",
    "apply_mask",
    "EditScoreCritic",
    "ChatModelCritic",
    "editscore_qwen3vl_8b",
    "editscore_qwen3vl_4b",
    "editscore_7b",
]

#: Adapter name of the EditScore LoRA on a shared Qwen-VL.
EDITSCORE_ADAPTER = "editscore"


# -- parsing ------------------------------------------------------------------------------------
class ScoreParseError(ValueError):
    """An EditScore answer holds no readable ``score`` list of the expected length and range."""


@dataclass(frozen=True)
class ParsedScores:
    """Scores as the model wrote them (0..score_range) and its reasoning."""

    scores: tuple[float, ...]
    reasoning: str


_REASON_KEYS = ("reasoning", "reason", "rationale")
_SCORE_KEYS = ("score", "scores")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"


def parse_editscore_output(
    text: str, *, score_range: int = DEFAULT_SCORE_RANGE, expected: int = 2
) -> ParsedScores:
    """Read ``{"reasoning": "...", "score": [a, b]}`` from an EditScore answer.

    Tolerates prose and code fences around the object, key case, single quotes, unescaped
    quotes inside the reasoning, Python literals, trailing commas, a bare ``[a, b]`` answer.
    Raises ``ScoreParseError`` unless exactly ``expected`` finite numbers in
    ``[0, score_range]`` are found: an out-of-range score is an unreadable answer, never clamped.
    """
    if not isinstance(text, str) or not text.strip():
        raise ScoreParseError("empty answer")
    data = _load_object(text)
    if data is not None:
        lowered = {str(k).lower(): v for k, v in data.items()}
        raw_scores = next((lowered[k] for k in _SCORE_KEYS if k in lowered), None)
        reasoning = next((lowered[k] for k in _REASON_KEYS if isinstance(lowered.get(k), str)), "")
    else:
        raw_scores, reasoning = None, ""
    if raw_scores is None:
        # JSON beyond repair: the list after a "score" key, else a bare answer "[a, b]"
        match = re.search(
            r"""["']?scores?["']?\s*[:=]\s*\[([^\]]*)\]""", text, re.IGNORECASE
        ) or re.fullmatch(rf"\s*\[\s*({_NUM}(?:\s*,\s*{_NUM})*)\s*\]\s*", text)
        if match is None:
            raise ScoreParseError("no score list in the answer")
        raw_scores = [p for p in (s.strip() for s in match.group(1).split(",")) if p]
        if data is None:
            found = re.search(
                r"""["']?reasoning["']?\s*[:=]\s*["'](.*?)["']\s*,""",
                text,
                re.IGNORECASE | re.DOTALL,
            )
            reasoning = found.group(1) if found else ""
    if isinstance(raw_scores, (int, float)) and not isinstance(raw_scores, bool):
        raw_scores = [raw_scores]
    if not isinstance(raw_scores, list):
        raise ScoreParseError(f"score is not a list: {raw_scores!r}")
    try:
        scores = tuple(float(s) for s in raw_scores if not isinstance(s, bool))
    except (TypeError, ValueError):
        raise ScoreParseError(f"score list holds a non-number: {raw_scores!r}") from None
    if len(scores) != expected or len(raw_scores) != expected:
        raise ScoreParseError(f"expected {expected} scores, got {raw_scores!r}")
    if not all(math.isfinite(s) and 0 <= s <= score_range for s in scores):
        raise ScoreParseError(f"scores outside 0..{score_range}: {list(scores)!r}")
    return ParsedScores(scores=scores, reasoning=reasoning.strip())


def _load_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (first ``{`` to last ``}``), repaired if needed; None if none."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    s = text[start : end + 1]
    s = s.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    s = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", s)))
    s = re.sub(r",\s*([\]}])", r"\1", s)
    single = s.replace("'", '"')
    quoted_keys = re.sub(r"([{\s,])([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', s)
    for candidate in (s, single, _escape_reasoning(s), quoted_keys, _escape_reasoning(quoted_keys)):
        try:
            data = json.loads(candidate, strict=False)  # strict=False: raw newlines in strings
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _escape_reasoning(s: str) -> str:
    """Escape double quotes inside the reasoning string (the usual VLM JSON mistake): its value
    runs to the last quote followed by ``,`` or ``}``."""
    pattern = re.compile(
        r'("reasoning"\s*:\s*")(.*?)("\s*,\s*"score|"\s*})', re.DOTALL | re.IGNORECASE
    )
    return pattern.sub(
        lambda m: m.group(1) + re.sub(r'(?<!\\)"', r'\\"', m.group(2)) + m.group(3), s
    )


# -- arithmetic ---------------------------------------------------------------------------------
def editscore_pass(
    sc: Sequence[float],
    pq: Sequence[float],
    *,
    score_range: int = DEFAULT_SCORE_RANGE,
    reasoning: str = "",
) -> Critique:
    """One pass's critique from the raw answers: ``sc = [editing success, overediting]``,
    ``pq = [naturalness, artifacts]``, each on 0..score_range, divided by score_range / 10.

    Example (score_range 25): sc = [20, 15], pq = [25, 10] gives PF 8, Cons 6, naturalness 10,
    artifacts 4, so SC 6, PQ 4, Overall sqrt(24) = 4.899.
    """
    if len(sc) != 2 or len(pq) != 2:
        raise ValueError(f"sc and pq must hold two scores each, got {list(sc)!r} and {list(pq)!r}")
    d = score_range / 10.0
    return Critique(
        prompt_following=sc[0] / d,
        consistency=sc[1] / d,
        naturalness=pq[0] / d,
        artifacts=pq[1] / d,
        reasoning=reasoning,
    )


class AveragedCritique(Critique):
    """Avg@N: each sub-score averaged over the valid passes; SC, PQ and Overall are the means of
    the per-pass values (EditScore's ``average_last``), not recomputed from averaged scores."""

    passes: list[Critique] = Field(default_factory=list, description="the valid passes averaged")
    requested_passes: int = Field(default=0, description="N asked for (>= len(passes))")

    def _mean(self, attr: str) -> float | None:
        if not self.valid or not self.passes:
            return None
        return sum(getattr(p, attr) for p in self.passes) / len(self.passes)

    @property
    def semantic_consistency(self) -> float | None:  # type: ignore[override]
        return self._mean("semantic_consistency")

    @property
    def perceptual_quality(self) -> float | None:  # type: ignore[override]
        return self._mean("perceptual_quality")

    @property
    def overall(self) -> float | None:  # type: ignore[override]
        return self._mean("overall")


def average_passes(
    passes: Sequence[Critique], *, requested: int | None = None, reasoning: str | None = None
) -> Critique:
    """Avg@N over the valid ``passes``; ``Critique.invalid`` when none is valid."""
    valid = [p for p in passes if p.valid]
    if not valid:
        return Critique.invalid(reasoning or "no readable critic pass")

    def mean(attr: str) -> float:
        return sum(getattr(p, attr) for p in valid) / len(valid)

    return AveragedCritique(
        prompt_following=mean("prompt_following"),
        consistency=mean("consistency"),
        naturalness=mean("naturalness"),
        artifacts=mean("artifacts"),
        reasoning=reasoning if reasoning is not None else valid[0].reasoning,
        passes=list(valid),
        requested_passes=requested if requested is not None else len(passes),
    )


# -- images -------------------------------------------------------------------------------------
def apply_mask(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``image`` (RGB) with every pixel outside ``mask`` set to black. ``mask`` is HxW bool; a
    mask of another size is resized (nearest) to the image's size."""
    import numpy as np
    from PIL import Image as PILImage

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D HxW array, got shape {m.shape!r}")
    m = m.astype(bool)
    if not m.any():
        raise ValueError("mask is empty: no pixel to judge")
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    if m.shape != rgb.shape[:2]:
        resized = PILImage.fromarray(m.astype(np.uint8) * 255).resize(image.size, PILImage.NEAREST)
        m = np.asarray(resized) > 127
    return PILImage.fromarray(np.where(m[..., None], rgb, 0).astype(np.uint8))


def _check(source: Any, edited: Any, instruction: Any) -> None:
    from PIL import Image as PILImage

    for name, value in (("source", source), ("edited", edited)):
        if not isinstance(value, PILImage.Image):
            raise TypeError(f"{name} must be a PIL image, got {type(value).__name__}")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")


def _sc_images(
    source: Image.Image, edited: Image.Image, mask: Any
) -> tuple[Image.Image, Image.Image]:
    if mask is None:
        return source.convert("RGB"), edited.convert("RGB")
    return apply_mask(source, mask), apply_mask(edited, mask)


# -- the Avg@N loop shared by both critics ----------------------------------------------------
class _PassRunner:
    """Runs N passes through ``answer(n, attempt) -> (sc_texts, pq_texts)``, retrying passes
    whose answers cannot be read, and averages them."""

    def __init__(self, num_passes: int, retries: int, score_range: int) -> None:
        if num_passes < 1:
            raise ValueError(f"num_passes must be >= 1, got {num_passes!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.num_passes, self.retries, self.score_range = num_passes, retries, score_range

    def run(self, answer: Callable[[int, int], tuple[list[str], list[str]]]) -> Critique:
        passes: list[Critique] = []
        failures: list[str] = []
        missing = self.num_passes
        for attempt in range(self.retries + 1):
            if missing == 0:
                break
            sc_texts, pq_texts = answer(missing, attempt)
            for sc_text, pq_text in zip(sc_texts, pq_texts, strict=True):
                try:
                    sc = parse_editscore_output(sc_text, score_range=self.score_range)
                    pq = parse_editscore_output(pq_text, score_range=self.score_range)
                except ScoreParseError as exc:
                    failures.append(
                        f"{exc} (SC answer {sc_text[:200]!r}; PQ answer {pq_text[:200]!r})"
                    )
                    continue
                passes.append(
                    editscore_pass(
                        sc.scores,
                        pq.scores,
                        score_range=self.score_range,
                        reasoning=f"SC: {sc.reasoning}\nPQ: {pq.reasoning}",
                    )
                )
            missing = self.num_passes - len(passes)
        if not passes:
            return Critique.invalid("critic output could not be parsed: " + "; ".join(failures))
        return average_passes(passes, requested=self.num_passes)


# -- critics ------------------------------------------------------------------------------------
class EditScoreCritic:
    """EditScore on a local Qwen2.5-VL / Qwen3-VL with the EditScore LoRA switched on.

    ``vlm`` is a ``QwenVL`` (or a zero-argument loader) carrying the adapter named ``adapter``
    (None: use the weights as loaded, e.g. a merged checkpoint). The prompt format follows the
    model family as EditScore's own backends do: Qwen2.5-VL gets EditScore's hand-written chat
    string (``<img1>: ...``), Qwen3-VL the processor's chat template, images before text.
    Sampling as EditScore: temperature 0.7, top_p 0.9, top_k 20, 512 new tokens, seed 42. Avg@N
    samples the N answers to both prompts in one ``generate`` call.
    """

    name = "editscore"

    def __init__(
        self,
        vlm: QwenVL | Callable[[], QwenVL],
        *,
        adapter: str | None = EDITSCORE_ADAPTER,
        num_passes: int = 1,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 20,
        max_new_tokens: int = 512,
        seed: int = 42,
        score_range: int = DEFAULT_SCORE_RANGE,
        retries: int = 1,
        cache_implementation: str | None = None,
    ) -> None:
        if temperature == 0 and num_passes > 1:
            raise ValueError(
                "num_passes > 1 needs sampling (temperature > 0): greedy passes are identical"
            )
        self._vlm = Lazy(vlm)
        self.adapter = adapter
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.max_new_tokens, self.seed, self.score_range = max_new_tokens, seed, score_range
        self.cache_implementation = cache_implementation
        self._runner = _PassRunner(num_passes, retries, score_range)

    @property
    def vlm(self) -> QwenVL:
        return self._vlm.get()

    @property
    def num_passes(self) -> int:
        return self._runner.num_passes

    def prompts(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> tuple[Any, Any]:
        """The SC and PQ prompts in the model family's EditScore format."""
        from tools.vlm._qwen import RawPrompt

        sc_images = _sc_images(source, edited, mask)
        full_edited = edited.convert("RGB")
        sc_text = sc_prompt(instruction, score_range=self.score_range)
        pq_text = pq_prompt(score_range=self.score_range)
        if self.vlm.family == "qwen2.5":
            return (
                RawPrompt(qwen25_chat(sc_text, 2), sc_images),
                RawPrompt(qwen25_chat(pq_text, 1), (full_edited,)),
            )

        def chat(images: Sequence[Image.Image], text: str) -> list[dict[str, Any]]:
            return [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": im} for im in images]
                    + [{"type": "text", "text": text}],
                }
            ]

        return chat(sc_images, sc_text), chat([full_edited], pq_text)

    def _generate(self, prompts: list[Any], n: int, seed: int) -> list[list[str]]:
        return self.vlm.generate(
            prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=seed,
            num_return_sequences=n,
            adapter=self.adapter,
            cache_implementation=self.cache_implementation,
        )

    def critique(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> Critique:
        _check(source, edited, instruction)
        sc, pq = self.prompts(source, edited, instruction, mask=mask)

        def answer(n: int, attempt: int) -> tuple[list[str], list[str]]:
            sc_texts, pq_texts = self._generate([sc, pq], n, self.seed + 1000 * attempt)
            return sc_texts, pq_texts

        return self._runner.run(answer)


class ChatModelCritic:
    """EditScore's prompts on any langchain-core chat model with image input (e.g. ``ChatOpenAI``
    on a vLLM server serving a Qwen-VL with the EditScore LoRA). Images go first, as base64 PNG
    data URLs, then the prompt text. Sampling settings belong to the chat model; Avg@N sends the
    2N requests as one ``batch``."""

    name = "editscore-chat"

    def __init__(
        self,
        chat_model: Any,
        *,
        num_passes: int = 1,
        retries: int = 1,
        score_range: int = DEFAULT_SCORE_RANGE,
    ) -> None:
        if not hasattr(chat_model, "batch"):
            raise TypeError(f"chat_model must be a langchain-core chat model, got {chat_model!r}")
        self.chat_model = chat_model
        self.score_range = score_range
        self._runner = _PassRunner(num_passes, retries, score_range)

    def messages(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """The SC and PQ conversations (one human message each)."""
        from langchain_core.messages import HumanMessage

        sc_images = _sc_images(source, edited, mask)
        sc = HumanMessage(
            content=[image_url_block(im) for im in sc_images]
            + [{"type": "text", "text": sc_prompt(instruction, score_range=self.score_range)}]
        )
        pq = HumanMessage(
            content=[
                image_url_block(edited.convert("RGB")),
                {"type": "text", "text": pq_prompt(score_range=self.score_range)},
            ]
        )
        return [sc], [pq]

    def critique(
        self,
        source: Image.Image,
        edited: Image.Image,
        instruction: str,
        *,
        mask: np.ndarray | None = None,
    ) -> Critique:
        _check(source, edited, instruction)
        sc, pq = self.messages(source, edited, instruction, mask=mask)

        def answer(n: int, attempt: int) -> tuple[list[str], list[str]]:
            replies = [message_text(r) for r in self.chat_model.batch([sc] * n + [pq] * n)]
            return replies[:n], replies[n:]

        return self._runner.run(answer)


# -- registry factories -------------------------------------------------------------------------
def editscore_qwen3vl_8b(
    *,
    base: str = "Qwen/Qwen3-VL-8B-Instruct",
    lora: str = "EditScore/EditScore-Qwen3-VL-8B-Instruct",
    num_passes: int = 1,
    options: LoadOptions | None = None,
) -> EditScoreCritic:
    """EditScore on Qwen3-VL-8B-Instruct + its LoRA. Raises ``ModelNotFoundError`` now when base
    or adapter are absent; loads on first use, sharing the base with a grounder on the same
    weights (adapter on for scoring, off for grounding)."""
    return _editscore(base, lora, num_passes, options)


def editscore_qwen3vl_4b(
    *,
    base: str = "Qwen/Qwen3-VL-4B-Instruct",
    lora: str = "EditScore/EditScore-Qwen3-VL-4B-Instruct",
    num_passes: int = 1,
    options: LoadOptions | None = None,
) -> EditScoreCritic:
    """EditScore on Qwen3-VL-4B-Instruct + its LoRA (see ``editscore_qwen3vl_8b``)."""
    return _editscore(base, lora, num_passes, options)


def editscore_7b(
    *,
    base: str = "Qwen/Qwen2.5-VL-7B-Instruct",
    lora: str = "EditScore/EditScore-7B",
    num_passes: int = 1,
    options: LoadOptions | None = None,
) -> EditScoreCritic:
    """EditScore-7B: Qwen2.5-VL-7B-Instruct + its LoRA (see ``editscore_qwen3vl_8b``)."""
    return _editscore(base, lora, num_passes, options)


def _editscore(
    base: str, lora: str, num_passes: int, options: LoadOptions | None
) -> EditScoreCritic:
    from tools.vlm._qwen import load_qwen_vl

    resolve_local(base, what="EditScore critic base")
    resolve_local(lora, what="EditScore LoRA")

    def load() -> QwenVL:
        vlm = load_qwen_vl(base, options=options, what="EditScore critic base")
        vlm.load_adapter(EDITSCORE_ADAPTER, lora)
        return vlm

    return EditScoreCritic(load, num_passes=num_passes)


#: Registry names declared by this module (``tools.registry``): kind -> name -> factory here.
BACKENDS = {
    "critic": {
        "editscore-qwen3-vl-8b": "editscore_qwen3vl_8b",
        "editscore-qwen3-vl-4b": "editscore_qwen3vl_4b",
        "editscore-7b": "editscore_7b",
    }
}
