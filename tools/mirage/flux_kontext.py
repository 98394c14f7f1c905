"""MIRAGE regional sampling on FLUX.1-Kontext [dev] (``docs/mirage.md``).

Kontext conditions on the source the same way FLUX.2 does: the reference image's latent
tokens are appended to the sequence, with position ids whose first coordinate is 1 (0 for
the tokens being denoised). So the stages are the FLUX-family core (``tools/mirage/_flux.py``)
and this module is the Kontext adapter:

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

from typing import TYPE_CHECKING, Any, NamedTuple

from tools.editors._base import is_pipeline
from tools.mirage._flux import FluxFamilySampler, MirageOutput

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["MirageKontext", "MirageOutput"]


class _Text(NamedTuple):
    """Encoded prompts: T5 ``emb`` (B, L, D), CLIP ``pooled`` (B, P), ``ids`` (L, 3) zeros."""

    emb: torch.Tensor
    pooled: torch.Tensor
    ids: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.emb.dtype

    def take(self, index: list[int]) -> _Text:
        return _Text(self.emb[index], self.pooled[index], self.ids)


class MirageKontext(FluxFamilySampler):
    """MIRAGE sampler over a built ``FluxKontextPipeline``; same call and output as
    ``MirageFlux2``.

    ``max_batch``: most region branches per transformer call. ``batch_cfg``: with true CFG,
    run the conditional and negative passes as one batch (faster; the pipeline runs two calls,
    which differs by float rounding only). ``branch_max_sequence_length``: pad region prompts
    to fewer T5 tokens than the global one (None = the same, as the pipeline pads).
    """

    default_steps = 28

    def __init__(
        self,
        pipe: Any,
        *,
        max_batch: int = 8,
        min_cells: int = 4,
        batch_cfg: bool = True,
        branch_max_sequence_length: int | None = None,
    ) -> None:
        if not is_pipeline(pipe, "FluxKontextPipeline"):
            raise TypeError(f"MirageKontext needs a FluxKontextPipeline, got {pipe!r}")
        super().__init__(
            pipe,
            max_batch=max_batch,
            min_cells=min_cells,
            batch_cfg=batch_cfg,
            branch_max_sequence_length=branch_max_sequence_length,
        )

    # -- layout -------------------------------------------------------------------------------
    def _to_cells(self, lat: torch.Tensor) -> torch.Tensor:
        """VAE latent (B, c, 2*rows, 2*cols) -> cell layout (B, 4c, rows, cols)."""
        b, c, h2, w2 = lat.shape
        tokens = self.pipe._pack_latents(lat, b, c, h2, w2)  # (B, rows*cols, 4c)
        return tokens.transpose(1, 2).reshape(b, 4 * c, h2 // 2, w2 // 2)

    def _from_cells(self, lat: torch.Tensor) -> torch.Tensor:
        """Cell layout (B, 4c, rows, cols) -> VAE latent (B, c, 2*rows, 2*cols)."""
        _, _, rows, cols = lat.shape
        return self.pipe._unpack_latents(
            _tokens(lat).contiguous(),
            rows * self.cell,
            cols * self.cell,
            self.pipe.vae_scale_factor,
        )

    # -- the Kontext adapter (see tools/mirage/_flux.py) ---------------------------------------
    def _guidance(
        self,
        *,
        guidance_scale: float = 2.5,
        true_cfg_scale: float = 1.0,
        negative_prompt: str | None = None,
    ) -> dict[str, Any]:
        return {
            "guidance_scale": guidance_scale,
            "true_cfg_scale": true_cfg_scale,
            "negative_prompt": negative_prompt,
        }

    def _check_options(self, *, max_sequence_length: int, guidance: dict[str, Any]) -> None:
        true_cfg_scale = guidance["true_cfg_scale"]
        if (
            true_cfg_scale > 1 and guidance["negative_prompt"] is None
        ):  # the pipeline would skip CFG
            raise ValueError(f"true_cfg_scale={true_cfg_scale!r} needs a negative_prompt")
        if not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be in 1..512, got {max_sequence_length!r}")

    def _negative_prompt(self, guidance: dict[str, Any]) -> str | None:
        return guidance["negative_prompt"] if guidance["true_cfg_scale"] > 1 else None

    def _noise(self, x0: torch.Tensor, generator: Any, device: Any) -> torch.Tensor:
        """Drawn as the pipeline draws it (VAE layout, then packed into cells)."""
        from diffusers.utils.torch_utils import randn_tensor

        rows, cols = x0.shape[2:]
        vae_shape = (
            1,
            self.pipe.transformer.config.in_channels // 4,
            2 * rows,
            2 * cols,
        )  # (1, c, 2r, 2c)
        return self._to_cells(
            randn_tensor(vae_shape, generator=generator, device=device, dtype=x0.dtype)
        )

    def _schedule(self, grid: tuple[int, int], num_inference_steps: int, device: Any) -> Any:
        """Sigmas linspace(1, 1/N, N) shifted by mu of the full canvas's token count."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux_kontext import (
            calculate_shift,
            retrieve_timesteps,
        )

        conf = self.pipe.scheduler.config
        mu = calculate_shift(
            grid[0] * grid[1],
            conf.get("base_image_seq_len", 256),
            conf.get("max_image_seq_len", 4096),
            conf.get("base_shift", 0.5),
            conf.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(
            self.pipe.scheduler,
            num_inference_steps,
            device,
            sigmas=np.linspace(1.0, 1 / num_inference_steps, num_inference_steps),
            mu=mu,
        )
        return timesteps

    def _encode_text(self, prompts: list[str], max_sequence_length: int) -> _Text:
        return _Text(
            *self.pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                device=self.pipe._execution_device,
                max_sequence_length=max_sequence_length,
            )
        )

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

    def _velocity(
        self,
        lat: torch.Tensor,
        ref: torch.Tensor,
        text: _Text,
        neg: _Text | None,
        t: torch.Tensor,
        guidance: dict[str, Any],
        calls: list[dict[str, Any]],
        phase: str,
    ) -> torch.Tensor:
        """The model's velocity for latents ``lat`` (G, 4c, h, w) with reference latents ``ref``
        (G, 4c, h_r, w_r), prompts ``text`` (G rows). Returns (G, 4c, h, w)."""
        import torch

        guidance_scale, true_cfg_scale = guidance["guidance_scale"], guidance["true_cfg_scale"]
        tr = self.pipe.transformer
        g, c4, h, w = lat.shape
        hidden = torch.cat([_tokens(lat), _tokens(ref)], dim=1)  # (G, h*w + h_r*w_r, 4c)
        ids = torch.cat(
            [
                self._ids(h, w, 0, lat.dtype),  # denoised tokens: (0, y, x)
                self._ids(*ref.shape[2:], 1, lat.dtype),
            ]
        )  # reference: (1, y, x), crop-local
        timestep = t.expand(g).to(lat.dtype) / 1000
        embedded = (
            torch.full([g], guidance_scale, device=lat.device, dtype=torch.float32)
            if tr.config.guidance_embeds
            else None
        )

        def run(hs, txt: _Text, ts, gd):
            calls.append(
                {
                    "phase": phase,
                    "batch": hs.shape[0],
                    "tokens": hs.shape[1] + txt.emb.shape[1],
                    "timestep": float(t),
                }
            )
            return tr(
                hidden_states=hs,
                timestep=ts,
                guidance=gd,
                pooled_projections=txt.pooled,
                encoder_hidden_states=txt.emb,
                txt_ids=txt.ids,
                img_ids=ids,
                return_dict=False,
            )[0][:, : h * w]  # (G', h*w, 4c)

        if neg is None:
            v = run(hidden, text, timestep, embedded)
        else:  # true CFG, as the pipeline: negative + scale * (conditional - negative)
            n = _Text(neg.emb.expand(g, -1, -1), neg.pooled.expand(g, -1), neg.ids)
            if self.batch_cfg and n.emb.shape[1] == text.emb.shape[1]:  # txt_ids are shared
                both = _Text(
                    torch.cat([text.emb, n.emb]), torch.cat([text.pooled, n.pooled]), text.ids
                )
                out = run(
                    torch.cat([hidden, hidden]),
                    both,
                    torch.cat([timestep, timestep]),
                    None if embedded is None else torch.cat([embedded, embedded]),
                )
                cond, uncond = out[:g], out[g:]
            else:
                cond = run(hidden, text, timestep, embedded)
                uncond = run(hidden, n, timestep, embedded)
            v = uncond + true_cfg_scale * (cond - uncond)
        return v.transpose(1, 2).reshape(g, c4, h, w)  # tokens are row-major

    def _decode(self, lat: torch.Tensor) -> Image.Image:
        pipe, vae = self.pipe, self.pipe.vae
        raw = self._from_cells(lat)  # (1, c, 2*rows, 2*cols)
        raw = raw / vae.config.scaling_factor + vae.config.shift_factor
        pixels = vae.decode(raw.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")[0]


def _tokens(lat: torch.Tensor) -> torch.Tensor:
    """Cell layout (B, 4c, rows, cols) -> packed tokens (B, rows*cols, 4c), row-major."""
    return lat.flatten(2).transpose(1, 2)
