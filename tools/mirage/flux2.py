"""MIRAGE regional sampling on FLUX.2 ([klein] distilled and base, and [dev]) - DESIGN 6.

Several region edits in one denoising trajectory, background kept exactly:

    early phase (first round((1-rho)*N) steps): each region branch denoises its own crop
        (its window of the shared noise, its crop's latent as reference, its own text)
    handover: canvas = noisy source at the post-step sigma; region latents pasted into their
        cells (per-cell winner by edit strength where boxes overlap)
    late phase: the global branch (full instruction, full reference) finishes; after each
        step everything outside the boxes is reset to the source's own noisy trajectory,
        so at sigma = 0 the background is exactly the encoded source.

Works on a diffusers ``Flux2KleinPipeline`` or ``Flux2Pipeline`` and reuses its components and
helpers (encode_prompt, _encode_vae_image, _prepare_*_ids), so results match the plain
pipeline wherever the algorithm says they must. Shapes: B batch, C latent channels (128 for
real FLUX.2), (rows, cols) latent cells of 16x16 px, L text tokens, D text width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.editors._base import is_pipeline
from tools.mirage._base import RegionalSampler
from tools.mirage.regions import (
    CellBox,
    Region,
    batch_by_shape,
    scale_box,
    snap_box,
    work_image,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = ["MirageFlux2", "MirageOutput"]



@dataclass
class MirageOutput:
    """The edited image (source size) and what the run did, for traces and tests."""

    image: Image.Image
    cells: list[CellBox]                    # each region's box in latent cells
    boxes: list[tuple[int, int, int, int]]  # the same, pixel XYXY in the source frame
    latents: torch.Tensor                   # final latent, (1, C, rows, cols), normalised
    source_latent: torch.Tensor             # x0, the encoded source, (1, C, rows, cols)
    region_mask: torch.Tensor               # (rows, cols) bool, union of the boxes
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per transformer call
    timings: dict[str, float] = field(default_factory=dict)
    handover: dict[str, Any] = field(default_factory=dict)     # filled with keep_intermediates


class MirageFlux2(RegionalSampler):
    """MIRAGE sampler over a built FLUX.2 pipeline.

    ``text_encoder_out_layers``: the text-encoder layers stacked into prompt embeddings (None
    = the pipeline's default). ``max_batch``: most region branches per transformer call.
    ``batch_cfg``: run the conditional and unconditional passes of CFG as one batch (faster;
    the plain pipeline runs them as two calls, which differs by float rounding only).
    """

    def __init__(self, pipe: Any, *, text_encoder_out_layers: tuple[int, ...] | None = None,
                 max_batch: int = 8, min_cells: int = 4, batch_cfg: bool = True,
                 branch_max_sequence_length: int | None = None) -> None:
        self.is_klein = is_pipeline(pipe, "Flux2KleinPipeline")
        if not (self.is_klein or is_pipeline(pipe, "Flux2Pipeline")):
            raise TypeError(f"MirageFlux2 needs a Flux2KleinPipeline or Flux2Pipeline, got {pipe!r}")
        self.pipe = pipe
        self.layers = text_encoder_out_layers
        self.max_batch = max_batch
        self.min_cells = min_cells
        self.batch_cfg = batch_cfg
        self.cell = pipe.vae_scale_factor * 2
        # Region prompts are short, but the pipelines pad every prompt to max_sequence_length
        # (512) and the transformer attends to the padding: 512 of a branch's ~1,200 tokens.
        # A shorter length for the branches only cuts early-phase work ~40%, at the price of
        # conditioning the branches on less padding than the model saw in training. None keeps
        # the pipeline's length (exactly the plain pipeline's conditioning).
        self.branch_max_sequence_length = branch_max_sequence_length

    # -- helpers ------------------------------------------------------------------------------
    def _encode_text(self, prompts: list[str], max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {} if self.layers is None else {"text_encoder_out_layers": self.layers}
        return self.pipe.encode_prompt(prompt=prompts, device=self.pipe._execution_device,
                                       max_sequence_length=max_sequence_length, **kwargs)

    def _encode_image(self, image: Image.Image) -> torch.Tensor:
        """(1, C, rows, cols) normalised latent of an image whose sides are multiples of a cell."""
        pipe = self.pipe
        pixels = pipe.image_processor.preprocess(image, height=image.height, width=image.width,
                                                 resize_mode="crop")
        pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
        return pipe._encode_vae_image(image=pixels, generator=None)

    def _cfg(self, guidance_scale: float) -> bool:
        return self.is_klein and guidance_scale > 1 and not self.pipe.config.is_distilled

    def _velocity(self, lat: torch.Tensor, ref: torch.Tensor, emb: torch.Tensor, text_ids: torch.Tensor,
                  neg: tuple[torch.Tensor, torch.Tensor] | None, t: torch.Tensor,
                  guidance_scale: float, calls: list[dict[str, Any]], phase: str) -> torch.Tensor:
        """The model's velocity for latents ``lat`` (G, C, h, w) with reference latents ``ref``
        (G, C, h, w), text ``emb`` (G, L, D). Returns (G, C, h, w)."""
        import torch

        pipe, tr = self.pipe, self.pipe.transformer
        g, c, h, w = lat.shape
        x = pipe._pack_latents(lat)                                   # (G, h*w, C)
        x_ids = pipe._prepare_latent_ids(lat).to(lat.device)          # (G, h*w, 4), crop-local
        r = pipe._pack_latents(ref)                                   # (G, h_r*w_r, C)
        r_ids = pipe._prepare_image_ids([ref[:1]]).to(lat.device).expand(g, -1, -1)  # T = 10
        hidden = torch.cat([x, r], dim=1).to(tr.dtype)                # (G, N_img, C)
        ids = torch.cat([x_ids, r_ids], dim=1)
        timestep = (t.expand(g).to(lat.dtype)) / 1000
        guidance = None if self.is_klein else torch.full([g], guidance_scale, device=lat.device,
                                                         dtype=torch.float32)

        def run(hs, txt, tids, ii, ts, gd):
            calls.append({"phase": phase, "batch": hs.shape[0], "tokens": hs.shape[1] + txt.shape[1]})
            return tr(hidden_states=hs, timestep=ts, guidance=gd, encoder_hidden_states=txt,
                      txt_ids=tids, img_ids=ii, return_dict=False)[0][:, : h * w]

        if neg is None:
            v = run(hidden, emb, text_ids, ids, timestep, guidance)
        else:
            n_emb, n_ids = neg[0].expand(g, -1, -1), neg[1].expand(g, -1, -1)
            if self.batch_cfg and n_emb.shape[1] == emb.shape[1]:
                both = run(torch.cat([hidden, hidden]), torch.cat([emb, n_emb]),
                           torch.cat([text_ids, n_ids]), torch.cat([ids, ids]),
                           torch.cat([timestep, timestep]), None)
                cond, uncond = both[:g], both[g:]
            else:
                cond = run(hidden, emb, text_ids, ids, timestep, guidance)
                uncond = run(hidden, n_emb, n_ids, ids, timestep, guidance)
            v = uncond + guidance_scale * (cond - uncond)
        return v.permute(0, 2, 1).reshape(g, c, h, w)                 # tokens are row-major



    def _decode(self, lat: torch.Tensor) -> Image.Image:
        import torch

        pipe, vae = self.pipe, self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(lat.device, lat.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(lat.device, lat.dtype)
        raw = pipe._unpatchify_latents(lat * std + mean)               # (1, C/4, 2*rows, 2*cols)
        pixels = vae.decode(raw.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")[0]

    # -- the sampler --------------------------------------------------------------------------

    def _sample(
        self,
        image: Image.Image,
        instruction: str,
        regions: list[Region],
        *,
        rho: float = 0.6,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        seed: int | None = None,
        target_replacement: bool = True,
        background_replacement: bool = True,
        max_sequence_length: int = 512,
        progress: ProgressFn | None = None,
        keep_intermediates: bool = False,
    ) -> MirageOutput:
        import numpy as np
        import torch
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps
        from diffusers.utils.torch_utils import randn_tensor

        # 1. Check inputs
        regions = self.check_inputs(instruction, regions, rho=rho, num_inference_steps=num_inference_steps)
        pipe, cell = self.pipe, self.cell
        device = pipe._execution_device
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        calls: list[dict[str, Any]] = []

        # 2. Working canvas: sides multiples of a cell, at most ~1 MP, boxes scaled with it
        src_w, src_h = image.size
        work = work_image(image.convert("RGB"), cell)
        sx, sy = work.width / src_w, work.height / src_h
        grid = (work.height // cell, work.width // cell)               # (rows, cols)
        cells = [snap_box(scale_box(r.box, sx, sy), cell=cell, grid=grid, min_cells=self.min_cells)
                 for r in regions]

        # 3. Text: the full instruction (global branch), one atomic instruction per region
        cfg = self._cfg(guidance_scale)
        g_emb, g_ids = self._encode_text([instruction], max_sequence_length)   # (1, L, D), (1, L, 4)
        g_neg = self._encode_text([""], max_sequence_length) if cfg else None
        b_len = self.branch_max_sequence_length or max_sequence_length
        if regions:
            b_emb, b_ids = self._encode_text([r.instruction for r in regions], b_len)  # (K, Lb, D)
        b_neg = (g_neg if b_len == max_sequence_length else self._encode_text([""], b_len)) \
            if cfg and regions else None

        # 4. Encode the source once (trajectory target and reference) and each crop natively
        x0 = self._encode_image(work)                                  # (1, C, rows, cols)
        crops = [self._encode_image(work.crop(c.to_pixels(cell).as_tuple())) for c in cells]
        dtype = g_emb.dtype
        x0 = x0.to(dtype)
        crops = [c.to(dtype) for c in crops]                           # each (1, C, h_k, w_k)

        # 5. One noise tensor for the whole latent; branches take their windows of it
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        eps = randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=dtype)

        # 6. Timesteps: the plain pipeline's schedule for the full canvas, shared by branches
        sigmas_in = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(pipe.scheduler.config, "use_flow_sigmas", False):
            sigmas_in = None
        mu = compute_empirical_mu(image_seq_len=grid[0] * grid[1], num_steps=num_inference_steps)
        timesteps, _ = retrieve_timesteps(pipe.scheduler, num_inference_steps, device,
                                          sigmas=sigmas_in, mu=mu)
        sig = pipe.scheduler.sigmas.to(device)                         # (N+1,), ends at 0
        n_steps = len(timesteps)
        k_hand = round((1 - rho) * n_steps) if regions and target_replacement else 0
        timings["prepare_s"] = time.perf_counter() - t0

        # 7. Early phase: region branches only, same-shaped branches batched
        t1 = time.perf_counter()
        z = [eps[:, :, c.y1:c.y2, c.x1:c.x2].clone() for c in cells]  # each (1, C, h_k, w_k)
        groups = batch_by_shape(cells, self.max_batch)
        for i in range(k_hand):
            for group in groups:
                lat = torch.cat([z[j] for j in group])                 # (G, C, h, w)
                v = self._velocity(lat, torch.cat([crops[j] for j in group]),
                                   b_emb[group], b_ids[group],
                                   b_neg, timesteps[i], guidance_scale, calls, "early")
                for j, zj in zip(group, self._euler(lat, v, sig[i], sig[i + 1]).split(1)):
                    z[j] = zj
            if progress is not None:
                progress(i + 1, n_steps)
        timings["early_s"] = time.perf_counter() - t1

        # 8. Handover: noisy source at the post-step sigma, region latents pasted into their cells
        canvas, inside, handover = self._paste_branches(
            sig[k_hand], eps, x0, z, crops, cells, grid, paste=target_replacement,
            keep=keep_intermediates, step=k_hand)                      # (1, C, rows, cols), (rows, cols)

        # 9. Late phase: the global branch; the background follows the source's trajectory
        t2 = time.perf_counter()

        def global_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (1, C, rows, cols)
            return self._velocity(x, x0, g_emb, g_ids, g_neg, t, guidance_scale, calls, "late")

        lat = self._late_phase(canvas, global_velocity, timesteps, sig, k_hand, eps, x0, inside,
                               reset=background_replacement, empty=not regions, progress=progress)
        timings["late_s"] = time.perf_counter() - t2

        # 10. Decode, back to the source size
        t3 = time.perf_counter()
        out = self._decode_to(lat, (src_w, src_h))
        timings["decode_s"] = time.perf_counter() - t3
        boxes = [scale_box(c.to_pixels(cell), 1 / sx, 1 / sy).as_tuple() for c in cells]
        return MirageOutput(image=out, cells=cells, boxes=boxes, latents=lat, source_latent=x0,
                            region_mask=inside.cpu(), calls=calls, timings=timings, handover=handover)
