"""What every MIRAGE sampler shares: the output type, gradient-free entry points, input
checks, the Euler step, the handover paste and the late phase.

The FLUX family (FLUX.2, Kontext) shares one ``_sample`` (``tools/mirage/_flux.py``);
Qwen-Image-Edit keeps its own, as it resizes crops where FLUX maps them 1:1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.mirage.regions import CellBox, Region, owner_map, smooth3x3

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = ["RegionalSampler", "MirageOutput"]


@dataclass
class MirageOutput:
    """The edited image (source size) and what the run did, for traces and tests."""

    image: Image.Image
    cells: list[CellBox]  # each region's box in latent cells
    boxes: list[tuple[int, int, int, int]]  # the same, pixel XYXY in the source frame
    latents: torch.Tensor  # final latent, (1, C, rows, cols), normalised
    source_latent: torch.Tensor  # x0, the encoded source, (1, C, rows, cols)
    region_mask: torch.Tensor  # (rows, cols) bool, union of the boxes
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per transformer call
    timings: dict[str, float] = field(default_factory=dict)
    handover: dict[str, Any] = field(default_factory=dict)  # filled with keep_intermediates


class RegionalSampler:
    """Base of the MIRAGE samplers: ``sampler(image, instruction, regions, **options)``."""

    def __call__(
        self, image: Image.Image, instruction: str, regions: list[Region], **kwargs: Any
    ) -> Any:
        """Edit ``image``: ``regions`` (pixel boxes in the source frame, each with its atomic
        instruction) and the full ``instruction`` for the global branch. Options: ``rho``
        (0 < rho <= 1; the last rho of the steps belong to the global branch),
        ``num_inference_steps``, the family's guidance options, ``seed``, the ablation switches
        ``target_replacement`` / ``background_replacement``, ``progress(done, total)`` and
        ``keep_intermediates`` (the handover canvas, for tests)."""
        import torch

        with torch.no_grad():
            return self._sample(image, instruction, regions, **kwargs)

    def decode(self, lat: torch.Tensor) -> Image.Image:
        """Decode a (1, C, rows, cols) canvas latent to a PIL image (the canvas size)."""
        import torch

        with torch.no_grad():
            return self._decode(lat)

    def _sample(
        self, image: Image.Image, instruction: str, regions: list[Region], **kwargs: Any
    ) -> Any:
        raise NotImplementedError

    def _decode(self, lat: torch.Tensor) -> Image.Image:
        raise NotImplementedError

    @staticmethod
    def check_inputs(
        instruction: str, regions: list[Any], *, rho: float, num_inference_steps: int
    ) -> list[Region]:
        """Raise ``ValueError`` naming a bad argument; return the regions as ``Region``s."""
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps!r}")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        return [r if isinstance(r, Region) else Region.model_validate(r) for r in regions]

    @staticmethod
    def _euler(
        x: torch.Tensor, v: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor
    ) -> torch.Tensor:
        """One flow-matching Euler step, with the arithmetic of FlowMatchEulerDiscreteScheduler."""
        import torch

        return (x.to(torch.float32) + (s_next - s) * v).to(v.dtype)

    @staticmethod
    def _paste_branches(
        s: torch.Tensor,
        eps: torch.Tensor,
        x0: torch.Tensor,
        z: list[torch.Tensor],
        crops: list[torch.Tensor],
        cells: list[CellBox],
        grid: tuple[int, int],
        *,
        paste: bool,
        keep: bool,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """MIRAGE's handover (``docs/mirage.md``) for branches whose latents map 1:1 onto their
        cells.

        The canvas is the noisy source s*eps + (1-s)*x0, (1, C, rows, cols); each branch latent
        ``z[j]`` (1, C, h_j, w_j) is copied into the cells it owns, where ownership of an
        overlapped cell goes to the branch that moved furthest from its own reference
        trajectory (3x3-smoothed). Returns (canvas, inside mask (rows, cols), intermediates).
        """
        import torch

        canvas = (s * eps + (1 - s) * x0).to(x0.dtype)
        strengths = [
            smooth3x3(
                torch.linalg.vector_norm(
                    zj - (s * eps[:, :, c.y1 : c.y2, c.x1 : c.x2] + (1 - s) * crops[j]), dim=1
                )[0].float()
            )
            for j, (zj, c) in enumerate(zip(z, cells))
        ]
        owner = owner_map(cells, strengths, grid).to(x0.device)  # (rows, cols), -1 = background
        if paste:
            for j, c in enumerate(cells):
                mine = owner[c.y1 : c.y2, c.x1 : c.x2] == j  # (h_j, w_j) bool
                window = canvas[:, :, c.y1 : c.y2, c.x1 : c.x2]
                window[:, :, mine] = z[j][:, :, mine]  # copied, never resampled
        kept = (
            {
                "step": step,
                "canvas": canvas.clone(),
                "branches": [zj.clone() for zj in z],
                "owner": owner.cpu(),
            }
            if keep
            else {}
        )
        return canvas, owner >= 0, kept

    def _late_phase(
        self,
        lat: torch.Tensor,
        velocity: Callable[[torch.Tensor, Any], torch.Tensor],
        timesteps: Any,
        sig: torch.Tensor,
        start: int,
        eps: torch.Tensor,
        x0: torch.Tensor,
        inside: torch.Tensor,
        *,
        reset: bool,
        empty: bool,
        progress: ProgressFn | None,
    ) -> torch.Tensor:
        """The late phase (``docs/mirage.md``): the global branch from step ``start``; after each
        step every cell outside ``inside`` (rows, cols) is reset to the source's noisy
        trajectory s*eps + (1-s)*x0, so at s = 0 the background is x0 exactly.
        ``velocity(lat, t)`` is the family's model call."""
        import torch

        if empty and reset:  # nothing to edit: every cell would be reset anyway
            return x0.clone()
        n_steps = len(timesteps)
        for i in range(start, n_steps):
            lat = self._euler(lat, velocity(lat, timesteps[i]), sig[i], sig[i + 1])
            if reset:
                s_next = sig[i + 1]
                lat = torch.where(inside, lat, (s_next * eps + (1 - s_next) * x0).to(lat.dtype))
            if progress is not None:
                progress(i + 1, n_steps)
        return lat

    def _decode_to(self, lat: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        """Decode the canvas latent and resize it back to the source ``size`` if they differ."""
        from PIL import Image

        out = self._decode(lat)
        return out if out.size == size else out.resize(size, Image.LANCZOS)
