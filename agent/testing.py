"""Test doubles for every tool contract, like LangChain's fake chat models.

They drive every edge of the graph deterministically in tests, and let a user dry-run the
agent without models (the ``dry-run`` preset). Their "edits" are painted tints and their
scores are scripted or measured from pixel changes: they prove wiring, never editing quality.

- ``ScriptedPlanner`` / ``ScriptedCritic`` replay queues (raw planner texts, scores, errors).
- ``SplitPlanner`` splits a compositional instruction at its connectives, one part per step.
- ``PaintEditor`` tints the region an instruction names with the colour it names.
- ``PixelChangeCritic`` scores by whether pixels changed; ``SideGrounder`` boxes named sides.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tools.errors import GroundingError
from tools.prompts import parse_planner_output
from tools.contracts import Box, Critique, Grounding, HistoryItem, PlannerDecision, ProgressFn

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "ScriptedPlanner",
    "SplitPlanner",
    "PaintEditor",
    "ScriptedCritic",
    "PixelChangeCritic",
    "SideGrounder",
    "make_test_image",
    "COLOURS",
]

#: Colour names the PaintEditor understands, RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
    "yellow": (240, 210, 40), "orange": (245, 140, 20), "purple": (140, 50, 170),
    "pink": (240, 120, 180), "cyan": (40, 200, 220), "white": (250, 250, 250),
    "black": (15, 15, 15), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "brown": (130, 80, 40),
}


class _Queue:
    """A thread-safe queue of scripted items that says clearly when it runs out."""

    def __init__(self, owner: str, items: Iterable[Any]) -> None:
        self._owner = owner
        self._items = list(items)
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []

    def pop(self, call: dict[str, Any]) -> Any:
        with self._lock:
            self.calls.append(call)
            if not self._items:
                raise RuntimeError(f"{self._owner} ran out of scripted outputs after "
                                   f"{len(self.calls) - 1} calls")
            return self._items.pop(0)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._items)


# -- planners ---------------------------------------------------------------------------------
class ScriptedPlanner:
    """Replays planner outputs in order.

    Each item is the model's raw text (parsed like real planner output, so ``"<stop>"`` stops
    and garbage raises ``PlannerOutputError``), a ``PlannerDecision``, or an exception to raise.
    ``calls`` records what the planner was shown (instruction and history) on each call.
    """

    def __init__(self, outputs: Sequence[str | PlannerDecision | BaseException]) -> None:
        self._queue = _Queue("ScriptedPlanner", outputs)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._queue.calls

    @property
    def remaining(self) -> int:
        return self._queue.remaining

    def next_action(self, original: Image.Image, current: Image.Image, instruction: str,
                    history: Sequence[HistoryItem]) -> PlannerDecision:
        item = self._queue.pop({"instruction": instruction, "history": list(history),
                                "current_size": current.size})
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, PlannerDecision):
            return item
        return parse_planner_output(item)


_CONNECTIVES = re.compile(
    r"\s*(?:;|,?\s*\band then\b|,?\s*\bthen\b|,?\s*\bafter that\b|,?\s*\balso\b|,?\s*\band\b|,)\s*",
    re.IGNORECASE,
)


class SplitPlanner:
    """Splits the instruction at connectives ("and", "then", ",", ";") and issues the parts in
    order, skipping parts already accepted; stops when every part is accepted. Stateless: it
    reads progress from the history, so one instance serves parallel runs."""

    def next_action(self, original: Image.Image, current: Image.Image, instruction: str,
                    history: Sequence[HistoryItem]) -> PlannerDecision:
        parts = [p.strip(" .") for p in _CONNECTIVES.split(instruction) if p and p.strip(" .")]
        done = {h.instruction for h in history if h.outcome == "accepted"}
        for part in parts:
            if part not in done:
                return PlannerDecision(raw=f"NEXT_EDITING_INSTRUCTION: {part}", stop=False,
                                       instruction=part)
        return PlannerDecision(raw="<stop>", stop=True)


# -- editor -----------------------------------------------------------------------------------
def _region(instruction: str, width: int, height: int) -> Box:
    words = set(re.findall(r"[a-z]+", instruction.lower()))
    x1, y1, x2, y2 = 0, 0, width, height
    if "left" in words:
        x2 = max(1, width // 2)
    elif "right" in words:
        x1 = width // 2
    if "top" in words or "upper" in words:
        y2 = max(1, height // 2)
    elif "bottom" in words or "lower" in words:
        y1 = height // 2
    if "center" in words or "centre" in words or "middle" in words:
        x1, y1, x2, y2 = width // 4, height // 4, max(width // 4 + 1, 3 * width // 4), max(height // 4 + 1, 3 * height // 4)
    return Box(x1=x1, y1=y1, x2=x2, y2=y2)


class PaintEditor:
    """Deterministic stand-in for a diffusion editor.

    Tints the region the instruction names (left/right/top/bottom/center halves, else the
    whole image) with the first colour it names (``COLOURS``), blended at ``strength``; with no
    colour word it inverts that region. Reports ``progress`` once per "step". Ignores ``seed``
    unless ``seed_jitter`` is set, which shifts the tint a little per seed (so retries differ).
    """

    def __init__(self, *, strength: float = 0.6, seed_jitter: bool = False) -> None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        self.strength = strength
        self.seed_jitter = seed_jitter

    def edit(self, image: Image.Image, instruction: str, *, seed: int | None = None,
             num_inference_steps: int | None = None, guidance_scale: float | None = None,
             progress: ProgressFn | None = None) -> Image.Image:
        import numpy as np

        steps = num_inference_steps or 4
        box = _region(instruction, image.width, image.height)
        arr = np.asarray(image.convert("RGB")).astype(np.float32)
        patch = arr[box.y1:box.y2, box.x1:box.x2]
        words = re.findall(r"[a-z]+", instruction.lower())
        colour = next((COLOURS[w] for w in words if w in COLOURS), None)
        if colour is None:
            patch[:] = 255.0 - patch
        else:
            tint = np.array(colour, dtype=np.float32)
            if self.seed_jitter and seed is not None:
                tint = np.clip(tint + (seed % 7) * 3.0, 0, 255)
            patch[:] = (1 - self.strength) * patch + self.strength * tint
        for i in range(steps):
            if progress is not None:
                progress(i + 1, steps)
        from PIL import Image

        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


# -- critics ----------------------------------------------------------------------------------
def _as_critique(item: float | Critique | None) -> Critique:
    if item is None:
        return Critique.invalid("scripted: unparseable critic output")
    if isinstance(item, Critique):
        return item
    score = float(item)
    return Critique(prompt_following=score, consistency=score, naturalness=score,
                    artifacts=score, reasoning=f"scripted score {score}")


class ScriptedCritic:
    """Replays critiques in order. A number ``x`` is a critique whose four sub-scores are all
    ``x`` (so Overall is ``x``); ``None`` is an invalid (unparseable) critique; an exception
    is raised. With ``check_regression`` on, verify calls the critic twice per accepted
    candidate: first for the atomic step, then for the full instruction."""

    def __init__(self, scores: Sequence[float | Critique | None | BaseException]) -> None:
        self._queue = _Queue("ScriptedCritic", scores)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._queue.calls

    @property
    def remaining(self) -> int:
        return self._queue.remaining

    def critique(self, source: Image.Image, edited: Image.Image, instruction: str, *,
                 mask: np.ndarray | None = None) -> Critique:
        item = self._queue.pop({"instruction": instruction, "masked": mask is not None})
        if isinstance(item, BaseException):
            raise item
        return _as_critique(item)


class PixelChangeCritic:
    """Scores only whether the edit changed pixels: prompt following 8 if more than
    ``min_changed`` of the pixels changed, else 0; consistency, naturalness and artifacts
    constants (10, 8, 8). A wiring aid for dry runs, not a judge of edits."""

    def __init__(self, *, min_changed: float = 0.005) -> None:
        self.min_changed = min_changed

    def critique(self, source: Image.Image, edited: Image.Image, instruction: str, *,
                 mask: np.ndarray | None = None) -> Critique:
        import numpy as np

        if source.size != edited.size:
            return Critique(prompt_following=8, consistency=0, naturalness=8, artifacts=8,
                            reasoning=f"size changed {source.size} -> {edited.size}")
        a = np.asarray(source.convert("RGB"), dtype=np.int16)
        b = np.asarray(edited.convert("RGB"), dtype=np.int16)
        changed = np.abs(a - b).max(axis=-1) > 8
        if mask is not None:
            changed = changed & mask
        frac = float(changed.mean())
        pf = 8.0 if frac > self.min_changed else 0.0
        return Critique(prompt_following=pf, consistency=10.0, naturalness=8.0, artifacts=8.0,
                        reasoning=f"{frac:.1%} of pixels changed")


# -- grounder ---------------------------------------------------------------------------------
class SideGrounder:
    """Boxes named sides ("left", "top", ... as ``PaintEditor`` reads them), or the boxes given
    for exact expressions in ``boxes``; raises ``GroundingError`` for anything else."""

    def __init__(self, boxes: dict[str, Box] | None = None) -> None:
        self.boxes = dict(boxes or {})

    def ground(self, image: Image.Image, expression: str) -> Grounding:
        if expression in self.boxes:
            return Grounding(expression=expression, boxes=[self.boxes[expression]])
        words = set(re.findall(r"[a-z]+", expression.lower()))
        if not words & {"left", "right", "top", "bottom", "upper", "lower", "center", "centre", "middle"}:
            raise GroundingError(f"no region found for {expression!r}", tool="SideGrounder")
        return Grounding(expression=expression, boxes=[_region(expression, image.width, image.height)])


def make_test_image(width: int = 64, height: int = 48, *, seed: int = 0) -> Image.Image:
    """A deterministic RGB test picture: a gradient with a few coloured rectangles."""
    import numpy as np
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                    np.full_like(x, 96 + 8 * (seed % 16))], axis=-1).astype(np.uint8)
    image = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(image)
    for i, colour in enumerate(((255, 255, 255), (20, 20, 20), (200, 60, 60))):
        x0 = (i * width) // 3 + width // 12
        draw.rectangle([x0, height // 3, x0 + width // 6, 2 * height // 3], fill=colour)
    return image


# -- micro-world oracle and noisy tools (agent.microworld.tools), loaded on first use ---------
_MICROWORLD_TOOLS = ("World", "OracleEditor", "NoisyEditor", "OracleCritic", "OraclePlanner",
                     "OracleGrounder")
__all__ += list(_MICROWORLD_TOOLS)


def __getattr__(name: str) -> Any:
    if name in _MICROWORLD_TOOLS:
        from agent.microworld import tools

        return getattr(tools, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
