"""MIRAGE regional sampling on Qwen-Image-Edit-2509/2511 (``docs/mirage.md``).

``QwenImageEditPlusPipeline`` resizes every input image twice, to module constants of
``diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus``: ``VAE_IMAGE_SIZE`` (~1 MP, the
latent the transformer attends to, sequence-concatenated after the tokens being denoised) and
``CONDITION_IMAGE_SIZE`` (384x384 area, the image the Qwen2.5-VL text encoder *sees* with the
prompt). A crop handed to it is therefore upscaled to ~1 MP whatever its size; the paper
(MIRAGE section 5 and Fig. S8) blames exactly that for blurred textures in small regions. So:

    global branch   the pipeline's own canvas of the source: VAE reference and generation size
                    ``calculate_dimensions(VAE_IMAGE_SIZE, aspect)`` (multiples of 32 px), VL
                    condition image at ``CONDITION_IMAGE_SIZE``, made by the pipeline's calls
                    (the pipeline's default generation size is the same ~1 MP canvas when
                    ``VAE_IMAGE_SIZE`` has its shipped 1024*1024)
    region branch   its snapped box plus a context margin (``context`` x the box side, clipped
                    to the canvas) = its *window*; the window is upscaled by an integer factor
                    f = floor(sqrt(canvas area / window area)), at most ``max_upscale`` (4) per
                    side, so no branch has more tokens than the global one. The branch's VAE
                    reference and VL condition image are cut from the *source* (not the canvas),
                    so a source larger than the canvas gives the branch real detail.
    noise           one eps for the canvas, drawn as the pipeline draws it. A branch with f = 1
                    takes its window of eps (as in flux2.py). With f > 1 it takes the window
                    refined by ``upsample_noise``: i.i.d. N(0, 1) at the branch size whose f x f
                    block sums / f are exactly that window (conditional Gaussian refinement).
    handover        the branch latent is brought back to its window's cells by splitting it
                    into eps and a clean estimate: z = s*eps_b + (1-s)*x_b, so the canvas gets
                    s*eps_window + (1-s)*avgpool_f(x_b). Then its box cells are pasted with a
                    feathered mask (``feather_mask``): 1 inside, ramping down over
                    ``feather_cells`` towards box sides that face background.
    late phase      as flux2.py: the global branch; cells outside every box are reset to
                    s*eps + (1-s)*x0 after each step, so at s = 0 the background is x0 exactly.

Why not "paste without resampling": an upscaled branch has f^2 latent cells per canvas cell,
so some resampling is unavoidable. Pooling the noisy latent as a whole would shrink its noise
to variance 1/f^2 (the global branch would read it as a cleaner, wrong-sigma latent); the
invariant kept instead is that **the noise inside every canvas cell is the canvas's own eps at
the current sigma**, before and after the paste: pasted cells are s*eps + (1-s)*x_hat with the
same eps as the background around them, so the soft blend only mixes clean estimates and never
lowers the noise level. With f = 1 the paste is a plain copy, as in flux2.py.

Latents are kept in *cell layout* (B, 4c, rows, cols): the packed token of cell (y, x) is
``lat[:, :, y, x]`` (channels in ``_pack_latents`` order); ``_to_vae`` gives the VAE layout
(B, c, 2*rows, 2*cols) for spatial resampling. Shapes: c = VAE channels (16 real, 4 tiny),
(rows, cols) cells of 16 px (8x VAE, 2x2 packing), L text tokens, D text width.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tools.editors._base import is_pipeline
from tools.mirage._base import MirageOutput, RegionalSampler
from tools.mirage.regions import (
    CellBox,
    Region,
    batch_by_shape,
    owner_map,
    scale_box,
    smooth3x3,
    snap_box,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tools.contracts import ProgressFn

__all__ = [
    "MirageQwenEdit",
    "MirageQwenOutput",
    "context_window",
    "upscale_factor",
    "feather_mask",
    "upsample_noise",
    "pool_noise",
    "branch_to_canvas",
]


@dataclass
class MirageQwenOutput(MirageOutput):
    """``MirageOutput`` plus the branch geometry the Qwen sampler adds."""

    windows: list[CellBox] = field(
        default_factory=list
    )  # each box plus context margin, canvas cells
    upscales: list[int] = field(default_factory=list)  # each branch's upscale factor per side


# -- geometry and noise (pure functions, tested on their own) ------------------------------------
def context_window(box: CellBox, grid: tuple[int, int], context: float) -> CellBox:
    """``box`` grown by ceil(``context`` x its side) cells on every side, clipped to the canvas
    of ``grid`` = (rows, cols) cells."""
    rows, cols = grid
    my, mx = math.ceil(context * box.shape[0]), math.ceil(context * box.shape[1])
    return CellBox(
        x1=max(0, box.x1 - mx),
        y1=max(0, box.y1 - my),
        x2=min(cols, box.x2 + mx),
        y2=min(rows, box.y2 + my),
    )


def upscale_factor(window: CellBox, grid: tuple[int, int], max_upscale: int) -> int:
    """The integer factor per side that brings ``window`` closest to the canvas area without
    exceeding it, in 1..``max_upscale``. Integer, so each canvas cell is exactly f x f branch
    cells (no interpolation kernel in the noise refinement or the way back)."""
    fit = math.isqrt((grid[0] * grid[1]) // (window.shape[0] * window.shape[1]))
    return max(1, min(max_upscale, fit))


def feather_mask(box: CellBox, grid: tuple[int, int], feather: int) -> torch.Tensor:
    """Paste weights of ``box``'s cells, (h, w) float32 in (0, 1]: 1 in the interior, ramping
    (d + 1) / (F + 1) with d the distance in cells to a side that faces background. Sides on
    the canvas border are not feathered. F = ``feather``, but small enough that the box's
    centre keeps weight 1 (a 4-cell box gets F = 1)."""
    import torch

    def ramp(lo: int, hi: int, size: int) -> torch.Tensor:
        n = hi - lo
        i = torch.arange(n, dtype=torch.float32)
        d = torch.full((n,), float("inf"))
        if lo > 0:
            d = torch.minimum(d, i)
        if hi < size:
            d = torch.minimum(d, n - 1 - i)
        sides = (lo > 0) + (hi < size)
        f = 0 if not sides else min(feather, (n - 1) // 2 if sides == 2 else n - 1)
        return ((d + 1) / (f + 1)).clamp(max=1.0)

    rows, cols = grid
    return torch.minimum(ramp(box.y1, box.y2, rows)[:, None], ramp(box.x1, box.x2, cols)[None, :])


def upsample_noise(
    eps: torch.Tensor, f: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Refine noise ``eps`` (B, c, H, W) to (B, c, f*H, f*W): i.i.d. N(0, 1) again, and its f x f
    block sums divided by f are ``eps`` (``pool_noise`` inverts it, to float rounding).

    z = eps/f + w - mean_block(w), w i.i.d. N(0, 1): each z has variance 1/f^2 + (1 - 1/f^2) = 1,
    two of one block have covariance 1/f^2 - 1/f^2 = 0, so z is white; the block sum is f*eps."""
    import torch
    import torch.nn.functional as F
    from diffusers.utils.torch_utils import randn_tensor

    if f == 1:
        return eps.clone()
    b, c, h, w = eps.shape
    white = randn_tensor(
        (b, c, f * h, f * w), generator=generator, device=eps.device, dtype=torch.float32
    )
    coarse = eps.float() / f - F.avg_pool2d(white, f)  # (B, c, H, W)
    return (white + coarse.repeat_interleave(f, 2).repeat_interleave(f, 3)).to(eps.dtype)


def pool_noise(z: torch.Tensor, f: int) -> torch.Tensor:
    """f x f block sums / f of (B, c, f*H, f*W): white noise stays white with variance 1."""
    import torch.nn.functional as F

    return z if f == 1 else (F.avg_pool2d(z.float(), f) * f).to(z.dtype)


class _Text(NamedTuple):
    """Encoded prompts: ``emb`` (B, L, D), ``mask`` (B, L) int64 (1 = token, 0 = padding)."""

    emb: torch.Tensor
    mask: torch.Tensor

    @staticmethod
    def cat(items: list[_Text]) -> _Text:
        """Rows of ``items`` in one batch, zero-padded to the longest (masked out)."""
        import torch
        import torch.nn.functional as F

        n = max(t.emb.shape[1] for t in items)
        return _Text(
            torch.cat([F.pad(t.emb, (0, 0, 0, n - t.emb.shape[1])) for t in items]),
            torch.cat([F.pad(t.mask, (0, n - t.mask.shape[1])) for t in items]),
        )


class MirageQwenEdit(RegionalSampler):
    """MIRAGE sampler over a built ``QwenImageEditPlusPipeline`` (2509 or 2511); same call as
    ``MirageKontext``, output ``MirageQwenOutput``.

    ``vae_image_size`` / ``condition_image_size``: reference areas in pixels (None = the
    pipeline module's ``VAE_IMAGE_SIZE`` / ``CONDITION_IMAGE_SIZE``, read at call time under the
    Qwen editor's lock; give the editor's values so the canvas is the one its pipeline uses).
    ``context``: margin around each box, as a fraction of its side. ``max_upscale``: most
    upscaling per side of a branch. ``feather_cells``: width of the soft paste edge.
    ``batch_cfg``: true CFG's two passes as one padded batch (faster; the pipeline runs two
    calls, which differs by float rounding only). ``max_batch``: most branches per call.

    Call options as ``RegionalSampler``, with ``true_cfg_scale`` (true CFG against
    ``negative_prompt`` when > 1; ``guidance_scale`` is accepted as its other name, as the Qwen
    editor reads its guidance) and no ``max_sequence_length`` (Qwen does not pad prompts).
    """

    def __init__(
        self,
        pipe: Any,
        *,
        vae_image_size: int | None = None,
        condition_image_size: int | None = None,
        context: float = 0.25,
        max_upscale: int = 4,
        feather_cells: int = 2,
        max_batch: int = 8,
        min_cells: int = 4,
        batch_cfg: bool = True,
    ) -> None:
        if not is_pipeline(pipe, "QwenImageEditPlusPipeline"):
            raise TypeError(f"MirageQwenEdit needs a QwenImageEditPlusPipeline, got {pipe!r}")
        if pipe.transformer.config.guidance_embeds:
            raise ValueError(
                "guidance-distilled Qwen-Image transformers (guidance_embeds=True) are not "
                "supported"
            )
        for arg, value in (
            ("vae_image_size", vae_image_size),
            ("condition_image_size", condition_image_size),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1024
            ):
                raise ValueError(f"{arg} must be None or an area in pixels >= 1024, got {value!r}")
        if not 0 <= context <= 2:
            raise ValueError(f"context must be in [0, 2], got {context!r}")
        if (
            isinstance(max_upscale, bool)
            or not isinstance(max_upscale, int)
            or not 1 <= max_upscale <= 4
        ):
            raise ValueError(f"max_upscale must be an int in 1..4, got {max_upscale!r}")
        if (
            isinstance(feather_cells, bool)
            or not isinstance(feather_cells, int)
            or feather_cells < 0
        ):
            raise ValueError(f"feather_cells must be an int >= 0, got {feather_cells!r}")
        self.pipe = pipe
        self.vae_image_size = vae_image_size
        self.condition_image_size = condition_image_size
        self.context = context
        self.max_upscale = max_upscale
        self.feather_cells = feather_cells
        self.max_batch = max_batch
        self.min_cells = min_cells
        self.batch_cfg = batch_cfg
        self.cell = pipe.vae_scale_factor * 2  # 8x VAE times 2x2 packing = 16 px per token

    # -- sizes and layout -----------------------------------------------------------------------
    def sizes(self) -> tuple[int, int]:
        """(VAE reference area, VL condition area) in pixels for the next call."""
        if self.vae_image_size and self.condition_image_size:
            return self.vae_image_size, self.condition_image_size
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

        from tools.editors.qwen_edit import _SIZES_LOCK

        with _SIZES_LOCK:  # never read the constants while a Qwen editor call has them changed
            return (
                self.vae_image_size or module.VAE_IMAGE_SIZE,
                self.condition_image_size or module.CONDITION_IMAGE_SIZE,
            )

    @staticmethod
    def _to_vae(lat: torch.Tensor) -> torch.Tensor:
        """Cell layout (B, 4c, rows, cols) -> VAE layout (B, c, 2*rows, 2*cols)."""
        b, c4, r, w = lat.shape
        return (
            lat.reshape(b, c4 // 4, 2, 2, r, w)
            .permute(0, 1, 4, 2, 5, 3)
            .reshape(b, c4 // 4, 2 * r, 2 * w)
        )

    @staticmethod
    def _to_cells(lat: torch.Tensor) -> torch.Tensor:
        """VAE layout (B, c, 2*rows, 2*cols) (or (B, c, 1, ...)) -> cell layout (B, 4c, rows, cols),
        the order of ``_pack_latents``: channel = ch*4 + dy*2 + dx."""
        b, c, h2, w2 = lat.shape[0], lat.shape[1], lat.shape[-2], lat.shape[-1]
        return (
            lat.reshape(b, c, h2 // 2, 2, w2 // 2, 2)
            .permute(0, 1, 3, 5, 2, 4)
            .reshape(b, 4 * c, h2 // 2, w2 // 2)
        )

    # -- helpers ----------------------------------------------------------------------------------
    def _encode_text(self, prompt: str, condition: Image.Image) -> _Text:
        """The pipeline's ``encode_prompt`` for one prompt that sees one condition image."""
        import torch

        emb, mask = self.pipe.encode_prompt(
            prompt=[prompt], image=[condition], device=self.pipe._execution_device
        )
        if mask is None:  # the pipeline drops an all-ones mask
            mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
        return _Text(emb, mask)

    def _encode_image(
        self, image: Image.Image, height: int, width: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """(1, 4c, height/16, width/16) normalised latent of ``image`` resized to width x height,
        as the pipeline makes its reference (preprocess, argmax, (z - mean) / std)."""
        pipe = self.pipe
        pixels = pipe.image_processor.preprocess(image, height, width).unsqueeze(
            2
        )  # (1, 3, 1, H, W)
        pixels = pixels.to(device=pipe._execution_device, dtype=dtype)
        return self._to_cells(pipe._encode_vae_image(image=pixels, generator=None))

    def _velocity(
        self,
        lat: torch.Tensor,
        ref: torch.Tensor,
        text: _Text,
        neg: _Text | None,
        t: torch.Tensor,
        true_cfg_scale: float,
        calls: list[dict[str, Any]],
        phase: str,
    ) -> torch.Tensor:
        """The model's velocity for latents ``lat`` (G, 4c, h, w) with same-shaped reference
        latents ``ref``, prompts ``text`` (G rows). Returns (G, 4c, h, w)."""
        import torch

        tr = self.pipe.transformer
        g, c4, h, w = lat.shape
        hidden = torch.cat([_tokens(lat), _tokens(ref)], dim=1)  # (G, h*w + h_r*w_r, 4c)
        shapes = [(1, h, w), (1, *ref.shape[2:])]  # RoPE: centred, crop-local
        timestep = t.expand(g).to(lat.dtype)

        def run(hs, txt: _Text, ts):
            calls.append(
                {
                    "phase": phase,
                    "batch": hs.shape[0],
                    "cells": (h, w),
                    "tokens": hs.shape[1] + txt.emb.shape[1],
                    "timestep": float(t),
                }
            )
            mask = None if bool(txt.mask.all()) else txt.mask
            return tr(
                hidden_states=hs,
                timestep=ts / 1000,
                guidance=None,
                encoder_hidden_states_mask=mask,
                encoder_hidden_states=txt.emb,
                img_shapes=[shapes] * hs.shape[0],
                attention_kwargs={},
                return_dict=False,
            )[0][:, : h * w]  # (G', h*w, 4c)

        if neg is None:
            v = run(hidden, text, timestep)
        else:  # true CFG as the pipeline: combine, then rescale to the conditional's norm per token
            if self.batch_cfg:
                out = run(
                    torch.cat([hidden, hidden]),
                    _Text.cat([text, neg]),
                    torch.cat([timestep, timestep]),
                )
                cond, uncond = out[:g], out[g:]
            else:
                cond, uncond = run(hidden, text, timestep), run(hidden, neg, timestep)
            comb = uncond + true_cfg_scale * (cond - uncond)
            v = comb * (
                torch.norm(cond, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True)
            )
        return v.transpose(1, 2).reshape(g, c4, h, w)  # tokens are row-major

    def _decode(self, lat: torch.Tensor) -> Image.Image:
        import torch

        pipe, vae = self.pipe, self.pipe.vae
        raw = self._to_vae(lat).unsqueeze(2).to(vae.dtype)  # (1, c, 1, 2*rows, 2*cols)
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(raw.device, raw.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(
            raw.device, raw.dtype
        )
        pixels = vae.decode(raw / inv_std + mean, return_dict=False)[0][
            :, :, 0
        ]  # the pipeline's arithmetic
        return pipe.image_processor.postprocess(pixels, output_type="pil")[0]

    # -- the sampler ------------------------------------------------------------------------------

    def _sample(
        self,
        image: Image.Image,
        instruction: str,
        regions: list[Region],
        *,
        rho: float = 0.6,
        num_inference_steps: int = 40,
        true_cfg_scale: float | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = " ",
        seed: int | None = None,
        target_replacement: bool = True,
        background_replacement: bool = True,
        progress: ProgressFn | None = None,
        keep_intermediates: bool = False,
    ) -> MirageQwenOutput:
        import numpy as np
        import torch
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (
            calculate_dimensions,
            calculate_shift,
            retrieve_timesteps,
        )
        from diffusers.utils.torch_utils import randn_tensor
        from PIL import Image

        # 1. Check inputs
        regions = self.check_inputs(
            instruction, regions, rho=rho, num_inference_steps=num_inference_steps
        )
        if (
            true_cfg_scale is not None
            and guidance_scale is not None
            and true_cfg_scale != guidance_scale
        ):
            raise ValueError(
                f"guidance_scale={guidance_scale!r} and true_cfg_scale={true_cfg_scale!r} name "
                "the same scale here; give one"
            )
        scale = next((v for v in (true_cfg_scale, guidance_scale) if v is not None), 4.0)
        cfg = scale > 1
        if cfg and not negative_prompt:  # the pipeline would silently skip CFG
            raise ValueError(
                f"true_cfg_scale={scale!r} needs a negative_prompt, got {negative_prompt!r}"
            )
        pipe, cell = self.pipe, self.cell
        device = pipe._execution_device
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        calls: list[dict[str, Any]] = []

        # 2. Canvas: the pipeline's VAE reference size of the source (~1 MP, multiples of 32 px),
        #    also its generation size; boxes scaled to it and snapped to cells
        source = image.convert("RGB")
        src_w, src_h = source.size
        vae_area, cond_area = self.sizes()

        def dims(area: int, w: float, h: float) -> tuple[int, int]:
            cw, ch = calculate_dimensions(area, w / h)
            return max(32, cw), max(32, ch)  # extreme aspect ratios would round a side to 0

        width, height = dims(vae_area, src_w, src_h)
        sx, sy = width / src_w, height / src_h
        grid = (height // cell, width // cell)  # (rows, cols)
        cells = [
            snap_box(scale_box(r.box, sx, sy), cell=cell, grid=grid, min_cells=self.min_cells)
            for r in regions
        ]
        windows = [context_window(c, grid, self.context) for c in cells]
        ups = [upscale_factor(w, grid, self.max_upscale) for w in windows]

        # 3. Per branch: the source cut at its window (sub-pixel exact), as VL condition image
        #    and as VAE reference at the branch size; the global branch's as the pipeline makes them
        g_cond = pipe.image_processor.resize(source, *dims(cond_area, src_w, src_h)[::-1])
        rects = [
            (w.x1 * cell / sx, w.y1 * cell / sy, w.x2 * cell / sx, w.y2 * cell / sy)
            for w in windows
        ]
        b_conds = [
            source.resize(dims(cond_area, r[2] - r[0], r[3] - r[1]), Image.LANCZOS, box=r)
            for r in rects
        ]
        b_sizes = [
            (w.shape[1] * f * cell, w.shape[0] * f * cell) for w, f in zip(windows, ups)
        ]  # (W, H) px
        b_refs = [source.resize(size, Image.LANCZOS, box=r) for size, r in zip(b_sizes, rects)]

        # 4. Text: each prompt sees its own condition image (and so does its negative)
        g_text = self._encode_text(instruction, g_cond)  # (1, L, D)
        g_neg = self._encode_text(negative_prompt, g_cond) if cfg else None
        b_text = [self._encode_text(r.instruction, c) for r, c in zip(regions, b_conds)]
        b_neg = [self._encode_text(negative_prompt, c) for c in b_conds] if cfg else []
        dtype = g_text.emb.dtype

        # 5. Encode the source once (trajectory target and global reference), each branch's crop
        x0 = self._encode_image(source, height, width, dtype)  # (1, 4c, rows, cols)
        refs = [
            self._encode_image(im, im.height, im.width, dtype) for im in b_refs
        ]  # (1, 4c, f*h_w, f*w_w)

        # 6. One noise tensor for the canvas, drawn as the pipeline draws it; branches take their
        #    windows of it, refined to their size (exactly the window where f = 1)
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        c = pipe.transformer.config.in_channels // 4
        eps = randn_tensor(
            (1, 1, c, 2 * grid[0], 2 * grid[1]), generator=generator, device=device, dtype=dtype
        )
        eps = self._to_cells(eps.view(1, c, 2 * grid[0], 2 * grid[1]))  # (1, 4c, rows, cols)
        b_eps = [
            self._to_cells(
                upsample_noise(self._to_vae(eps[:, :, w.y1 : w.y2, w.x1 : w.x2]), f, generator)
            )
            for w, f in zip(windows, ups)
        ]  # each (1, 4c, f*h_w, f*w_w)

        # 7. Timesteps: the pipeline's schedule for the full canvas (mu from its token count),
        #    shared by the branches whatever their size
        conf = pipe.scheduler.config
        mu = calculate_shift(
            grid[0] * grid[1],
            conf.get("base_image_seq_len", 256),
            conf.get("max_image_seq_len", 4096),
            conf.get("base_shift", 0.5),
            conf.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(
            pipe.scheduler,
            num_inference_steps,
            device,
            sigmas=np.linspace(1.0, 1 / num_inference_steps, num_inference_steps),
            mu=mu,
        )
        sig = pipe.scheduler.sigmas.to(device)  # (N+1,), ends at 0
        n_steps = len(timesteps)
        k_hand = round((1 - rho) * n_steps) if regions and target_replacement else 0
        timings["prepare_s"] = time.perf_counter() - t0

        # 8. Early phase: region branches only, same-shaped branches batched
        t1 = time.perf_counter()
        z = [e.clone() for e in b_eps]
        shapes = [CellBox(0, 0, e.shape[3], e.shape[2]) for e in b_eps]
        groups = batch_by_shape(shapes, self.max_batch)
        for i in range(k_hand):
            for group in groups:
                lat = torch.cat([z[j] for j in group])  # (G, 4c, h, w)
                v = self._velocity(
                    lat,
                    torch.cat([refs[j] for j in group]),
                    _Text.cat([b_text[j] for j in group]),
                    _Text.cat([b_neg[j] for j in group]) if cfg else None,
                    timesteps[i],
                    scale,
                    calls,
                    "early",
                )
                for j, zj in zip(group, self._euler(lat, v, sig[i], sig[i + 1]).split(1)):
                    z[j] = zj
            if progress is not None:
                progress(i + 1, n_steps)
        timings["early_s"] = time.perf_counter() - t1

        # 9. Handover: noisy source at the post-step sigma; each branch brought back to its box's
        #    cells with the canvas's own eps, pasted with a feathered edge
        s = sig[k_hand]
        canvas = (s * eps + (1 - s) * x0).to(dtype)  # (1, 4c, rows, cols)
        z_ref = canvas.clone()
        on_canvas, alphas, strengths = [], [], []
        for j, (cb, w, f) in enumerate(zip(cells, windows, ups)):
            box = (
                slice(None),
                slice(None),
                slice(cb.y1 - w.y1, cb.y2 - w.y1),
                slice(cb.x1 - w.x1, cb.x2 - w.x1),
            )
            on_canvas.append(
                branch_to_canvas(z[j], b_eps[j], eps[:, :, w.y1 : w.y2, w.x1 : w.x2], s, f)[box]
            )
            alphas.append(feather_mask(cb, grid, self.feather_cells).to(device))
            dist = torch.linalg.vector_norm(z[j] - (s * b_eps[j] + (1 - s) * refs[j]), dim=1)[
                0
            ].float()
            pooled = (
                torch.nn.functional.avg_pool2d(dist[None, None], f)[0, 0] if f > 1 else dist
            )  # (h_w, w_w)
            strengths.append(smooth3x3(pooled[box[2:]]))  # distance from its own trajectory
        owner = owner_map(cells, strengths, grid).to(device)  # (rows, cols), -1 = background
        if target_replacement:
            for j, cb in enumerate(cells):
                mine = owner[cb.y1 : cb.y2, cb.x1 : cb.x2] == j  # (h_k, w_k) bool
                window = canvas[:, :, cb.y1 : cb.y2, cb.x1 : cb.x2]
                a = alphas[j].to(dtype)
                blended = a * on_canvas[j] + (1 - a) * window  # weight 1: the branch, exactly
                window[:, :, mine] = blended[:, :, mine]
        inside = owner >= 0  # (rows, cols)
        handover = (
            {
                "step": k_hand,
                "canvas": canvas.clone(),
                "z_ref": z_ref,
                "branches": [zj.clone() for zj in z],
                "on_canvas": on_canvas,
                "alpha": [a.cpu() for a in alphas],
                "noise": b_eps,
                "owner": owner.cpu(),
            }
            if keep_intermediates
            else {}
        )

        # 10. Late phase: the global branch; the background follows the source's trajectory
        t2 = time.perf_counter()

        def global_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (1, C, rows, cols)
            return self._velocity(x, x0, g_text, g_neg, t, scale, calls, "late")

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

        # 11. Decode, back to the source size
        t3 = time.perf_counter()
        out = self._decode_to(lat, (src_w, src_h))
        timings["decode_s"] = time.perf_counter() - t3
        boxes = [scale_box(cb.to_pixels(cell), 1 / sx, 1 / sy).as_tuple() for cb in cells]
        return MirageQwenOutput(
            image=out,
            cells=cells,
            boxes=boxes,
            latents=lat,
            source_latent=x0,
            region_mask=inside.cpu(),
            calls=calls,
            timings=timings,
            handover=handover,
            windows=windows,
            upscales=ups,
        )


def branch_to_canvas(
    zb: torch.Tensor, eps_b: torch.Tensor, eps_w: torch.Tensor, s: torch.Tensor, f: int
) -> torch.Tensor:
    """Branch latent ``zb`` (1, 4c, f*h, f*w) at sigma ``s``, drawn from noise ``eps_b``, ->
    its window's cells (1, 4c, h, w), whose canvas noise is ``eps_w`` (all cell layout).

    f = 1: a copy. Otherwise zb = s*eps_b + (1-s)*x_b defines the clean estimate x_b, and the
    window gets s*eps_w + (1-s)*avgpool_f(x_b): the canvas's own noise, the branch's content."""
    import torch.nn.functional as F

    if f == 1:
        return zb.clone()
    if float(s) >= 1:  # no step taken (rho = 1): the branch is pure noise, and its noise is eps_w
        return eps_w.clone()
    to_vae, to_cells = MirageQwenEdit._to_vae, MirageQwenEdit._to_cells
    x_b = (to_vae(zb).float() - s * to_vae(eps_b).float()) / (1 - s)  # s < 1 after an early step
    return (s * eps_w.float() + (1 - s) * to_cells(F.avg_pool2d(x_b, f))).to(zb.dtype)


def _tokens(lat: torch.Tensor) -> torch.Tensor:
    """Cell layout (B, 4c, rows, cols) -> packed tokens (B, rows*cols, 4c), row-major."""
    return lat.flatten(2).transpose(1, 2)
