"""MIRAGE regional sampling on FLUX.1-Kontext [dev] - DESIGN 6, the algorithm of ``flux2.py``.

Kontext conditions on the source the same way FLUX.2 does: the reference image's latent
tokens are appended to the sequence, with position ids whose first coordinate is 1 (0 for
the tokens being denoised). So the sampler is ``MirageFlux2`` with Kontext's parts:

    text        CLIP pooled embedding + T5 sequence (``encode_prompt``), text ids all zero
    guidance    [dev] is guidance-distilled: ``guidance_scale`` goes into the transformer's
                guidance embedding (one pass per step); optional true CFG as the pipeline
                does it (``true_cfg_scale`` > 1 with a ``negative_prompt``: a second pass)
    latents     AutoencoderKL, 16 channels, ``(z - shift_factor) * scaling_factor``; packed in
                2x2 patches (``_pack_latents``), so one token is a 16x16 px cell
    schedule    sigmas linspace(1, 1/N, N), shifted by mu = calculate_shift(tokens of the
                full canvas); FlowMatchEuler steps

Latents are kept in *cell layout* (B, 4c, rows, cols): the packed token of cell (y, x) is
``lat[:, :, y, x]`` (channels in ``_pack_latents`` order), so a region is a plain slice, and
pasting and resetting never resample. Shapes: B batch, c = 16 VAE channels (4c = 64, the
transformer's ``in_channels``), (rows, cols) cells of 16 px, L text tokens, D T5 width,
P pooled CLIP width.

Where the pipeline resizes (generation size scaled to ``max_area``, reference snapped to a
preferred Kontext resolution by ``_auto_resize``) MIRAGE instead works on the source at sides
that are multiples of 16 px, at most ~1 MP, and resizes the result back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

from tools.editors._base import is_pipeline
from tools.mirage.flux2 import MirageOutput
from tools.mirage._base import RegionalSampler
from tools.mirage.regions import Region, batch_by_shape, scale_box, snap_box, work_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = ["MirageKontext", "MirageOutput"]


class _Text(NamedTuple):
    """Encoded prompts: T5 ``emb`` (B, L, D), CLIP ``pooled`` (B, P), ``ids`` (L, 3) zeros."""

    emb: torch.Tensor
    pooled: torch.Tensor
    ids: torch.Tensor

    def take(self, index: list[int]) -> _Text:
        return _Text(self.emb[index], self.pooled[index], self.ids)


class MirageKontext(RegionalSampler):
    """MIRAGE sampler over a built ``FluxKontextPipeline``; same call and output as
    ``MirageFlux2``.

    ``max_batch``: most region branches per transformer call. ``batch_cfg``: with true CFG,
    run the conditional and negative passes as one batch (faster; the pipeline runs two calls,
    which differs by float rounding only). ``branch_max_sequence_length``: pad region prompts
    to fewer T5 tokens than the global one (None = the same, as the pipeline pads).
    """

    def __init__(self, pipe: Any, *, max_batch: int = 8, min_cells: int = 4, batch_cfg: bool = True,
                 branch_max_sequence_length: int | None = None) -> None:
        if not is_pipeline(pipe, "FluxKontextPipeline"):
            raise TypeError(f"MirageKontext needs a FluxKontextPipeline, got {pipe!r}")
        self.pipe = pipe
        self.max_batch = max_batch
        self.min_cells = min_cells
        self.batch_cfg = batch_cfg
        self.cell = pipe.vae_scale_factor * 2  # 8x VAE times 2x2 packing = 16 px per token
        self.branch_max_sequence_length = branch_max_sequence_length

    # -- layout -------------------------------------------------------------------------------
    def _to_cells(self, lat: torch.Tensor) -> torch.Tensor:
        """VAE latent (B, c, 2*rows, 2*cols) -> cell layout (B, 4c, rows, cols)."""
        b, c, h2, w2 = lat.shape
        tokens = self.pipe._pack_latents(lat, b, c, h2, w2)           # (B, rows*cols, 4c)
        return tokens.transpose(1, 2).reshape(b, 4 * c, h2 // 2, w2 // 2)

    def _from_cells(self, lat: torch.Tensor) -> torch.Tensor:
        """Cell layout (B, 4c, rows, cols) -> VAE latent (B, c, 2*rows, 2*cols)."""
        _, _, rows, cols = lat.shape
        return self.pipe._unpack_latents(_tokens(lat).contiguous(), rows * self.cell, cols * self.cell,
                                         self.pipe.vae_scale_factor)

    # -- helpers ------------------------------------------------------------------------------
    def _encode_text(self, prompts: list[str], max_sequence_length: int) -> _Text:
        return _Text(*self.pipe.encode_prompt(prompt=prompts, prompt_2=None,
                                              device=self.pipe._execution_device,
                                              max_sequence_length=max_sequence_length))

    def _encode_image(self, image: Image.Image) -> torch.Tensor:
        """(1, 4c, rows, cols) latent, shifted and scaled, of an image whose sides are
        multiples of a cell (the pipeline's preprocess and ``_encode_vae_image``: argmax)."""
        pipe = self.pipe
        pixels = pipe.image_processor.preprocess(image, height=image.height, width=image.width)
        pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
        return self._to_cells(pipe._encode_vae_image(image=pixels, generator=None))

    def _ids(self, rows: int, cols: int, first: int, dtype: torch.dtype) -> torch.Tensor:
        """(rows*cols, 3) position ids (first, row, col), row-major like the tokens."""
        ids = self.pipe._prepare_latent_image_ids(1, rows, cols, self.pipe._execution_device, dtype)
        ids[:, 0] = first
        return ids

    def _velocity(self, lat: torch.Tensor, ref: torch.Tensor, text: _Text, neg: _Text | None,
                  t: torch.Tensor, guidance_scale: float, true_cfg_scale: float,
                  calls: list[dict[str, Any]], phase: str) -> torch.Tensor:
        """The model's velocity for latents ``lat`` (G, 4c, h, w) with reference latents ``ref``
        (G, 4c, h_r, w_r), prompts ``text`` (G rows). Returns (G, 4c, h, w)."""
        import torch

        tr = self.pipe.transformer
        g, c4, h, w = lat.shape
        hidden = torch.cat([_tokens(lat), _tokens(ref)], dim=1)       # (G, h*w + h_r*w_r, 4c)
        ids = torch.cat([self._ids(h, w, 0, lat.dtype),                # denoised tokens: (0, y, x)
                         self._ids(*ref.shape[2:], 1, lat.dtype)])     # reference: (1, y, x), crop-local
        timestep = t.expand(g).to(lat.dtype) / 1000
        guidance = (torch.full([g], guidance_scale, device=lat.device, dtype=torch.float32)
                    if tr.config.guidance_embeds else None)

        def run(hs, txt: _Text, ts, gd):
            calls.append({"phase": phase, "batch": hs.shape[0], "tokens": hs.shape[1] + txt.emb.shape[1],
                          "timestep": float(t)})
            return tr(hidden_states=hs, timestep=ts, guidance=gd, pooled_projections=txt.pooled,
                      encoder_hidden_states=txt.emb, txt_ids=txt.ids, img_ids=ids,
                      return_dict=False)[0][:, : h * w]                 # (G', h*w, 4c)

        if neg is None:
            v = run(hidden, text, timestep, guidance)
        else:  # true CFG, as the pipeline: negative + scale * (conditional - negative)
            n = _Text(neg.emb.expand(g, -1, -1), neg.pooled.expand(g, -1), neg.ids)
            if self.batch_cfg and n.emb.shape[1] == text.emb.shape[1]:  # txt_ids are shared
                both = _Text(torch.cat([text.emb, n.emb]), torch.cat([text.pooled, n.pooled]), text.ids)
                out = run(torch.cat([hidden, hidden]), both, torch.cat([timestep, timestep]),
                          None if guidance is None else torch.cat([guidance, guidance]))
                cond, uncond = out[:g], out[g:]
            else:
                cond = run(hidden, text, timestep, guidance)
                uncond = run(hidden, n, timestep, guidance)
            v = uncond + true_cfg_scale * (cond - uncond)
        return v.transpose(1, 2).reshape(g, c4, h, w)                  # tokens are row-major



    def _decode(self, lat: torch.Tensor) -> Image.Image:
        pipe, vae = self.pipe, self.pipe.vae
        raw = self._from_cells(lat)                                    # (1, c, 2*rows, 2*cols)
        raw = raw / vae.config.scaling_factor + vae.config.shift_factor
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
        num_inference_steps: int = 28,
        guidance_scale: float = 2.5,
        true_cfg_scale: float = 1.0,
        negative_prompt: str | None = None,
        seed: int | None = None,
        target_replacement: bool = True,
        background_replacement: bool = True,
        max_sequence_length: int = 512,
        progress: ProgressFn | None = None,
        keep_intermediates: bool = False,
    ) -> MirageOutput:
        import numpy as np
        import torch
        from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift, retrieve_timesteps
        from diffusers.utils.torch_utils import randn_tensor

        # 1. Check inputs
        regions = self.check_inputs(instruction, regions, rho=rho, num_inference_steps=num_inference_steps)
        if true_cfg_scale > 1 and negative_prompt is None:  # the pipeline would silently skip CFG
            raise ValueError(f"true_cfg_scale={true_cfg_scale!r} needs a negative_prompt")
        if not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be in 1..512, got {max_sequence_length!r}")
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
        cfg = true_cfg_scale > 1
        g_text = self._encode_text([instruction], max_sequence_length)          # (1, L, D), (1, P)
        g_neg = self._encode_text([negative_prompt], max_sequence_length) if cfg else None
        b_len = self.branch_max_sequence_length or max_sequence_length
        if regions:
            b_text = self._encode_text([r.instruction for r in regions], b_len)  # (K, Lb, D), (K, P)
        b_neg = (g_neg if b_len == max_sequence_length else self._encode_text([negative_prompt], b_len)) \
            if cfg and regions else None

        # 4. Encode the source once (trajectory target and reference) and each crop natively
        dtype = g_text.emb.dtype
        x0 = self._encode_image(work).to(dtype)                        # (1, 4c, rows, cols)
        crops = [self._encode_image(work.crop(c.to_pixels(cell).as_tuple())).to(dtype)
                 for c in cells]                                       # each (1, 4c, h_k, w_k)

        # 5. One noise tensor for the whole latent, drawn as the pipeline draws it (VAE layout,
        #    then packed); branches take their windows of it
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        vae_shape = (1, pipe.transformer.config.in_channels // 4, 2 * grid[0], 2 * grid[1])  # (1, c, 2r, 2c)
        eps = self._to_cells(randn_tensor(vae_shape, generator=generator, device=device,
                                          dtype=dtype))                # (1, 4c, rows, cols)

        # 6. Timesteps: the plain pipeline's schedule for the full canvas (mu from its token
        #    count), shared by the branches whatever their size
        conf = pipe.scheduler.config
        mu = calculate_shift(grid[0] * grid[1], conf.get("base_image_seq_len", 256),
                             conf.get("max_image_seq_len", 4096), conf.get("base_shift", 0.5),
                             conf.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(pipe.scheduler, num_inference_steps, device,
                                          sigmas=np.linspace(1.0, 1 / num_inference_steps,
                                                             num_inference_steps), mu=mu)
        sig = pipe.scheduler.sigmas.to(device)                         # (N+1,), ends at 0
        n_steps = len(timesteps)
        k_hand = round((1 - rho) * n_steps) if regions and target_replacement else 0
        timings["prepare_s"] = time.perf_counter() - t0

        # 7. Early phase: region branches only, same-shaped branches batched
        t1 = time.perf_counter()
        z = [eps[:, :, c.y1:c.y2, c.x1:c.x2].clone() for c in cells]  # each (1, 4c, h_k, w_k)
        groups = batch_by_shape(cells, self.max_batch)
        for i in range(k_hand):
            for group in groups:
                lat = torch.cat([z[j] for j in group])                 # (G, 4c, h, w)
                v = self._velocity(lat, torch.cat([crops[j] for j in group]), b_text.take(group),
                                   b_neg, timesteps[i], guidance_scale, true_cfg_scale, calls, "early")
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
            return self._velocity(x, x0, g_text, g_neg, t, guidance_scale, true_cfg_scale, calls, "late")

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


def _tokens(lat: torch.Tensor) -> torch.Tensor:
    """Cell layout (B, 4c, rows, cols) -> packed tokens (B, rows*cols, 4c), row-major."""
    return lat.flatten(2).transpose(1, 2)
