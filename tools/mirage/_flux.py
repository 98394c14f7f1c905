"""The MIRAGE core of the FLUX family (FLUX.2 [klein]/[dev] and FLUX.1-Kontext).

Both families condition on the source the same way: the reference image's latent tokens are
appended to the sequence being denoised, with position ids that tell them apart. So one
``_sample`` runs MIRAGE for both, top to bottom like a diffusers ``__call__``, and a family
adapter (a subclass) supplies only what differs:

    _guidance(**options)          the family's guidance options, checked, with its defaults
    _negative_prompt(guidance)    the negative prompt of CFG, or None (no CFG)
    _encode_text(prompts, L)      -> a ``text`` with ``.take(index)`` and ``.dtype``
    _encode_image(image)          -> (1, C, rows, cols) normalised latent, cell layout
    _noise(x0, generator, device) -> (1, C, rows, cols), drawn as the plain pipeline draws it
    _schedule(grid, n, device)    -> the plain pipeline's timesteps (scheduler sigmas set)
    _velocity(lat, ref, text, neg, t, guidance, calls, phase) -> (G, C, h, w)
    _decode(lat)                  -> PIL image of the canvas

Latents stay in *cell layout* (B, C, rows, cols): one latent cell is one transformer token of
16x16 px, so a region is a plain slice and pasting or resetting never resamples.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tools.mirage._base import MirageOutput, RegionalSampler
from tools.mirage.regions import Region, batch_by_shape, scale_box, snap_box, work_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = ["FluxFamilySampler", "MirageOutput"]


class FluxFamilySampler(RegionalSampler):
    """MIRAGE over a FLUX-family pipeline ``pipe``; subclasses are the family adapters.

    ``max_batch``: most region branches per transformer call. ``min_cells``: least box side in
    cells. ``batch_cfg``: run the conditional and negative passes of CFG as one batch (faster;
    the pipelines run two calls, which differs by float rounding only).
    ``branch_max_sequence_length``: pad region prompts to fewer tokens than the global one
    (None = the same, as the pipeline pads).
    """

    #: ``num_inference_steps`` when the caller gives none (the family's model card).
    default_steps: int = 28

    def __init__(
        self,
        pipe: Any,
        *,
        max_batch: int = 8,
        min_cells: int = 4,
        batch_cfg: bool = True,
        branch_max_sequence_length: int | None = None,
    ) -> None:
        self.pipe = pipe
        self.max_batch = max_batch
        self.min_cells = min_cells
        self.batch_cfg = batch_cfg
        self.cell = pipe.vae_scale_factor * 2  # 8x VAE times 2x2 packing = 16 px per token
        # Region prompts are short, but the pipelines pad every prompt to max_sequence_length
        # (512) and the transformer attends to the padding: 512 of a branch's ~1,200 tokens.
        # A shorter length for the branches only cuts early-phase work ~40%, at the price of
        # conditioning the branches on less padding than the model saw in training. None keeps
        # the pipeline's length (exactly the plain pipeline's conditioning).
        self.branch_max_sequence_length = branch_max_sequence_length

    # -- the family adapter -------------------------------------------------------------------
    def _guidance(self, **options: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _negative_prompt(self, guidance: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def roundtrip(self, image: Image.Image) -> Image.Image:
        """The autoencoder's round trip of ``image`` as a sampler call takes it: resized to the
        work size, encoded, decoded, resized back to ``image``'s size. A reference ceiling for
        a benchmark's pixel scores: what the pipeline's autoencoder alone loses of a perfect
        answer (not a proven bound: the decoder might render some other latent closer)."""
        import torch

        with torch.no_grad():
            work = work_image(image.convert("RGB"), self.cell)
            return self._decode_to(self._encode_image(work), image.size)

    def _encode_text(self, prompts: list[str], max_sequence_length: int) -> Any:
        raise NotImplementedError

    def _encode_image(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def _noise(self, x0: torch.Tensor, generator: Any, device: Any) -> torch.Tensor:
        raise NotImplementedError

    def _schedule(self, grid: tuple[int, int], num_inference_steps: int, device: Any) -> Any:
        raise NotImplementedError

    def _velocity(
        self,
        lat: torch.Tensor,
        ref: torch.Tensor,
        text: Any,
        neg: Any,
        t: torch.Tensor,
        guidance: dict[str, Any],
        calls: list[dict[str, Any]],
        phase: str,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _check_options(self, *, max_sequence_length: int, guidance: dict[str, Any]) -> None:
        """Family checks of the call options (``ValueError`` naming the argument)."""

    # -- the sampler --------------------------------------------------------------------------
    def _sample(
        self,
        image: Image.Image,
        instruction: str,
        regions: list[Region],
        *,
        rho: float = 0.6,
        num_inference_steps: int | None = None,
        seed: int | None = None,
        target_replacement: bool = True,
        background_replacement: bool = True,
        max_sequence_length: int = 512,
        progress: ProgressFn | None = None,
        keep_intermediates: bool = False,
        **guidance_options: Any,
    ) -> MirageOutput:
        import torch

        # 1. Check inputs
        steps = self.default_steps if num_inference_steps is None else num_inference_steps
        regions = self.check_inputs(instruction, regions, rho=rho, num_inference_steps=steps)
        guidance = self._guidance(**guidance_options)
        self._check_options(max_sequence_length=max_sequence_length, guidance=guidance)
        pipe, cell = self.pipe, self.cell
        device = pipe._execution_device
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        calls: list[dict[str, Any]] = []

        # 2. Working canvas: sides multiples of a cell, at most ~1 MP, boxes scaled with it
        src_w, src_h = image.size
        work = work_image(image.convert("RGB"), cell)
        sx, sy = work.width / src_w, work.height / src_h
        grid = (work.height // cell, work.width // cell)  # (rows, cols)
        cells = [
            snap_box(scale_box(r.box, sx, sy), cell=cell, grid=grid, min_cells=self.min_cells)
            for r in regions
        ]

        # 3. Text: the full instruction (global branch), one atomic instruction per region
        negative = self._negative_prompt(guidance)  # None = no CFG
        g_text = self._encode_text([instruction], max_sequence_length)  # 1 row
        g_neg = self._encode_text([negative], max_sequence_length) if negative is not None else None
        b_len = self.branch_max_sequence_length or max_sequence_length
        if regions:
            b_text = self._encode_text([r.instruction for r in regions], b_len)  # K rows
        b_neg = (
            (g_neg if b_len == max_sequence_length else self._encode_text([negative], b_len))
            if negative is not None and regions
            else None
        )

        # 4. Encode the source once (trajectory target and reference) and each crop natively
        dtype = g_text.dtype
        x0 = self._encode_image(work).to(dtype)  # (1, C, rows, cols)
        crops = [
            self._encode_image(work.crop(c.to_pixels(cell).as_tuple())).to(dtype) for c in cells
        ]  # each (1, C, h_k, w_k)

        # 5. One noise tensor for the whole latent; branches take their windows of it
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        eps = self._noise(x0, generator, device)  # (1, C, rows, cols)

        # 6. Timesteps: the plain pipeline's schedule for the full canvas, shared by branches
        timesteps = self._schedule(grid, steps, device)
        sig = pipe.scheduler.sigmas.to(device)  # (N+1,), ends at 0
        n_steps = len(timesteps)
        k_hand = round((1 - rho) * n_steps) if regions and target_replacement else 0
        timings["prepare_s"] = time.perf_counter() - t0

        # 7. Early phase: region branches only, same-shaped branches batched
        t1 = time.perf_counter()
        z = [eps[:, :, c.y1 : c.y2, c.x1 : c.x2].clone() for c in cells]  # each (1, C, h_k, w_k)
        groups = batch_by_shape(cells, self.max_batch)
        for i in range(k_hand):
            for group in groups:
                lat = torch.cat([z[j] for j in group])  # (G, C, h, w)
                v = self._velocity(
                    lat,
                    torch.cat([crops[j] for j in group]),
                    b_text.take(group),
                    b_neg,
                    timesteps[i],
                    guidance,
                    calls,
                    "early",
                )
                for j, zj in zip(group, self._euler(lat, v, sig[i], sig[i + 1]).split(1)):
                    z[j] = zj
            if progress is not None:
                progress(i + 1, n_steps)
        timings["early_s"] = time.perf_counter() - t1

        # 8. Handover: noisy source at the post-step sigma, region latents pasted into their cells
        canvas, inside, handover = self._paste_branches(
            sig[k_hand],
            eps,
            x0,
            z,
            crops,
            cells,
            grid,
            paste=target_replacement,
            keep=keep_intermediates,
            step=k_hand,
        )  # (1, C, rows, cols), (rows, cols)

        # 9. Late phase: the global branch; the background follows the source's trajectory
        t2 = time.perf_counter()

        def global_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (1, C, rows, cols)
            return self._velocity(x, x0, g_text, g_neg, t, guidance, calls, "late")

        lat = self._late_phase(
            canvas,
            global_velocity,
            timesteps,
            sig,
            k_hand,
            eps,
            x0,
            inside,
            reset=background_replacement,
            empty=not regions,
            progress=progress,
        )
        timings["late_s"] = time.perf_counter() - t2

        # 10. Decode, back to the source size
        t3 = time.perf_counter()
        out = self._decode_to(lat, (src_w, src_h))
        timings["decode_s"] = time.perf_counter() - t3
        boxes = [scale_box(c.to_pixels(cell), 1 / sx, 1 / sy).as_tuple() for c in cells]
        return MirageOutput(
            image=out,
            cells=cells,
            boxes=boxes,
            latents=lat,
            source_latent=x0,
            region_mask=inside.cpu(),
            calls=calls,
            timings=timings,
            handover=handover,
        )
