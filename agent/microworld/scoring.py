"""Scoring an edited image from pixels against exact ground truth.

Tolerant of model noise (a pixel "matches" when every channel is within ``tol`` of the
reference), strict about the wrong target (a change outside the target cells costs
consistency, a target cell left as it was fails its edit).

- **prompt following** of one edit, in its target box: of the pixels the edit must change
  (ground truth differs from the source by more than ``change``), the fraction that now
  match the ground truth, penalised by pixels of the box that should have stayed but did not.
  An edit passes at ``pf >= pf_pass``.
- **consistency** outside the union of all target boxes: masked PSNR against the source
  (capped at ``PSNR_CAP`` dB for identical pixels) and the fraction of pixels changed by more
  than ``tol``; consistent when that fraction is at most ``max_changed_fraction``.
- **tolerant consistency** (for learned editors, whose autoencoder round trip alone changes
  ~0.4 % of pixels by more than ``tol``): consistent when at most ``max_changed_fraction_tolerant``
  (1 %) of the out-of-target pixels changed by more than ``tol``.
- **success**: every edit passes and the rest is consistent; ``success_strict`` (the rule
  above, the same as ``success``) and ``success_tolerant`` are reported side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from agent.microworld.truth import Case

__all__ = ["Thresholds", "EditScore", "Score", "score_edits", "score_case", "PSNR_CAP"]

PSNR_CAP = 100.0


@dataclass(frozen=True)
class Thresholds:
    #: per-channel difference (0..255) within which a pixel matches its reference
    tol: int = 48
    #: per-channel difference from the source above which ground truth "changed" a pixel
    change: int = 24
    #: least prompt-following score for an edit to count as done
    pf_pass: float = 0.75
    #: most fraction of out-of-target pixels allowed to change for "consistent" (strict: set
    #: from the smallest wrong edit, so any wrong object change breaks it)
    max_changed_fraction: float = 0.0003
    #: the same for the model-tolerant rule: a learned editor's round trip through its
    #: autoencoder may change this much of the rest (by more than ``tol``) and still count
    max_changed_fraction_tolerant: float = 0.01


@dataclass
class EditScore:
    """One edit's prompt following: ``pf`` in 0..1 and whether it passes."""

    index: int
    kind: str
    pf: float
    passed: bool


@dataclass
class Score:
    edits: list[EditScore] = field(default_factory=list)
    #: mean of the edits' pf (0..1)
    pf: float = 0.0
    #: fraction of edits that pass (0..1)
    edits_passed: float = 0.0
    #: PSNR (dB) of the result against the source outside the target boxes
    psnr: float = PSNR_CAP
    #: fraction of out-of-target pixels changed by more than ``tol``
    changed_fraction: float = 0.0
    consistent: bool = True
    success: bool = False
    #: consistency under the model-tolerant rule (``max_changed_fraction_tolerant``)
    consistent_tolerant: bool = True
    #: the same as ``success`` (strict consistency), named for tables that show both
    success_strict: bool = False
    #: every edit passes and the rest is consistent under the tolerant rule
    success_tolerant: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _arr(image: Image.Image | np.ndarray) -> np.ndarray:
    import numpy as np

    if isinstance(image, np.ndarray):
        return image.astype(np.int16)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _chmax(diff: np.ndarray) -> np.ndarray:
    """Largest absolute channel difference, HxW (faster than a reduce over a 3-long axis)."""
    import numpy as np

    a = np.abs(diff)
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def score_edits(
    source: Image.Image | np.ndarray,
    result: Image.Image | np.ndarray,
    expected: Image.Image | np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    *,
    kinds: Sequence[str] | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Score:
    """Score ``result`` against ``expected`` (the ground truth after all edits), one edit per
    target box (pixel XYXY). Images are RGB PIL or HxWx3 uint8 arrays of one size."""
    import numpy as np

    src, res, exp = _arr(source), _arr(result), _arr(expected)
    if not (src.shape == res.shape == exp.shape):
        raise ValueError(
            f"images differ in shape: source {src.shape}, result {res.shape}, expected {exp.shape}"
        )
    t = thresholds
    matches = _chmax(res - exp) <= t.tol  # (H, W)
    must_change = _chmax(exp - src) > t.change  # (H, W)
    inside = np.zeros(src.shape[:2], bool)
    edits = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        inside[y1:y2, x1:x2] = True
        box = (slice(y1, y2), slice(x1, x2))
        d, m = must_change[box], matches[box]
        hit = int((d & m).sum())
        spoiled = int((~d & ~m).sum())  # pixels that should have stayed as they were
        if d.any():
            pf = hit / (int(d.sum()) + spoiled)
        else:
            pf = 1.0 if spoiled == 0 else 0.0
        kind = kinds[i] if kinds is not None else "edit"
        edits.append(EditScore(index=i, kind=kind, pf=round(pf, 4), passed=pf >= t.pf_pass))
    outside = ~inside
    n_out = int(outside.sum())
    if n_out:
        diff = res - src  # (H, W, 3) int16
        mse = float((diff[outside].astype(np.float64) ** 2).mean())
        psnr = PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))
        changed = float((_chmax(diff) > t.tol)[outside].mean())
    else:
        psnr, changed = PSNR_CAP, 0.0
    consistent = changed <= t.max_changed_fraction
    tolerant = changed <= t.max_changed_fraction_tolerant
    all_passed = all(e.passed for e in edits)
    pf_mean = sum(e.pf for e in edits) / len(edits) if edits else 1.0
    passed = sum(e.passed for e in edits) / len(edits) if edits else 1.0
    return Score(
        edits=edits,
        pf=round(pf_mean, 4),
        edits_passed=passed,
        psnr=round(psnr, 3),
        changed_fraction=round(changed, 6),
        consistent=consistent,
        success=consistent and all_passed,
        consistent_tolerant=tolerant,
        success_strict=consistent and all_passed,
        success_tolerant=tolerant and all_passed,
    )


def score_case(
    case: Case, result: Image.Image | np.ndarray, *, thresholds: Thresholds = Thresholds()
) -> Score:
    """Score ``result`` as the answer to the whole ``case``."""
    from agent.microworld.render import render
    from agent.microworld.truth import goal_scene, target_box

    return score_edits(
        render(case.scene),
        result,
        render(goal_scene(case)),
        [target_box(case.scene, e) for e in case.edits],
        kinds=[e.kind for e in case.edits],
        thresholds=thresholds,
    )
