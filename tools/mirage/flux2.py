"""MIRAGE regional sampling on FLUX.2 ([klein] distilled and base, and [dev]) (``docs/mirage.md``).

Several region edits in one denoising trajectory, background kept exactly:

    early phase (first round((1-rho)*N) steps): each region branch denoises its own crop
        (its window of the shared noise, its crop's latent as reference, its own text)
    handover: canvas = noisy source at the post-step sigma; region latents pasted into their
        cells (per-cell winner by edit strength where boxes overlap)
    late phase: the global branch (full instruction, full reference) finishes; after each
        step everything outside the boxes is reset to the source's own noisy trajectory,
        so at sigma = 0 the background is exactly the encoded source.

The stages live in ``tools/mirage/_flux.py`` (shared with Kontext); this module is the FLUX.2
adapter. It works on a diffusers ``Flux2KleinPipeline`` or ``Flux2Pipeline`` and reuses its
components and helpers (encode_prompt, _encode_vae_image, _prepare_*_ids), so results match
the plain pipeline wherever the algorithm says they must. Shapes: B batch, C latent channels
(128 for real FLUX.2), (rows, cols) latent cells of 16x16 px, L text tokens, D text width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from tools.editors._base import is_pipeline
from tools.mirage._flux import FluxFamilySampler, MirageOutput

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["MirageFlux2", "MirageOutput"]


class _Text(NamedTuple):
    """Encoded prompts: ``emb`` (B, L, D) and text position ``ids`` (B, L, 4)."""

    emb: torch.Tensor
    ids: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.emb.dtype

    def take(self, index: list[int]) -> _Text:
        return _Text(self.emb[index], self.ids[index])


class MirageFlux2(FluxFamilySampler):
    """MIRAGE sampler over a built FLUX.2 pipeline.

    ``text_encoder_out_layers``: the text-encoder layers stacked into prompt embeddings (None
    = the pipeline's default). ``max_batch``: most region branches per transformer call.
    ``batch_cfg``: run the conditional and unconditional passes of CFG as one batch (faster;
    the plain pipeline runs them as two calls, which differs by float rounding only).
    """

    default_steps = 50

    def __init__(
        self,
        pipe: Any,
        *,
        text_encoder_out_layers: tuple[int, ...] | None = None,
        max_batch: int = 8,
        min_cells: int = 4,
        batch_cfg: bool = True,
        branch_max_sequence_length: int | None = None,
    ) -> None:
        self.is_klein = is_pipeline(pipe, "Flux2KleinPipeline")
        if not (self.is_klein or is_pipeline(pipe, "Flux2Pipeline")):
            raise TypeError(
                f"MirageFlux2 needs a Flux2KleinPipeline or Flux2Pipeline, got {pipe!r}"
            )
        super().__init__(
            pipe,
            max_batch=max_batch,
            min_cells=min_cells,
            batch_cfg=batch_cfg,
            branch_max_sequence_length=branch_max_sequence_length,
        )
        self.layers = text_encoder_out_layers

    # -- the FLUX.2 adapter (see tools/mirage/_flux.py) ----------------------------------------
    def _guidance(self, *, guidance_scale: float = 4.0) -> dict[str, Any]:
        return {"guidance_scale": guidance_scale}

    def _negative_prompt(self, guidance: dict[str, Any]) -> str | None:
        # [klein] base runs CFG against the empty prompt; [klein] distilled and [dev] (embedded
        # guidance) do not.
        cfg = self.is_klein and guidance["guidance_scale"] > 1 and not self.pipe.config.is_distilled
        return "" if cfg else None

    def _encode_text(self, prompts: list[str], max_sequence_length: int) -> _Text:
        kwargs = {} if self.layers is None else {"text_encoder_out_layers": self.layers}
        return _Text(
            *self.pipe.encode_prompt(
                prompt=prompts,
                device=self.pipe._execution_device,
                max_sequence_length=max_sequence_length,
                **kwargs,
            )
        )

    def _encode_image(self, image: Image.Image) -> torch.Tensor:
        """(1, C, rows, cols) normalised latent of an image whose sides are multiples of a cell."""
        pipe = self.pipe
        pixels = pipe.image_processor.preprocess(
            image, height=image.height, width=image.width, resize_mode="crop"
        )
        pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
        return pipe._encode_vae_image(image=pixels, generator=None)

    def _noise(self, x0: torch.Tensor, generator: Any, device: Any) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=x0.dtype)

    def _schedule(self, grid: tuple[int, int], num_inference_steps: int, device: Any) -> Any:
        import numpy as np
        from diffusers.pipelines.flux2.pipeline_flux2_klein import (
            compute_empirical_mu,
            retrieve_timesteps,
        )

        pipe = self.pipe
        sigmas_in = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(pipe.scheduler.config, "use_flow_sigmas", False):
            sigmas_in = None
        mu = compute_empirical_mu(image_seq_len=grid[0] * grid[1], num_steps=num_inference_steps)
        timesteps, _ = retrieve_timesteps(
            pipe.scheduler, num_inference_steps, device, sigmas=sigmas_in, mu=mu
        )
        return timesteps

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
        """The model's velocity for latents ``lat`` (G, C, h, w) with reference latents ``ref``
        (G, C, h, w), prompts ``text`` (G rows). Returns (G, C, h, w)."""
        import torch

        emb, text_ids = text
        guidance_scale = guidance["guidance_scale"]
        pipe, tr = self.pipe, self.pipe.transformer
        g, c, h, w = lat.shape
        x = pipe._pack_latents(lat)  # (G, h*w, C)
        x_ids = pipe._prepare_latent_ids(lat).to(lat.device)  # (G, h*w, 4), crop-local
        r = pipe._pack_latents(ref)  # (G, h_r*w_r, C)
        r_ids = pipe._prepare_image_ids([ref[:1]]).to(lat.device).expand(g, -1, -1)  # T = 10
        hidden = torch.cat([x, r], dim=1).to(tr.dtype)  # (G, N_img, C)
        ids = torch.cat([x_ids, r_ids], dim=1)
        timestep = (t.expand(g).to(lat.dtype)) / 1000
        embedded = (
            None
            if self.is_klein
            else torch.full([g], guidance_scale, device=lat.device, dtype=torch.float32)
        )

        def run(hs, txt, tids, ii, ts, gd):
            calls.append(
                {"phase": phase, "batch": hs.shape[0], "tokens": hs.shape[1] + txt.shape[1]}
            )
            return tr(
                hidden_states=hs,
                timestep=ts,
                guidance=gd,
                encoder_hidden_states=txt,
                txt_ids=tids,
                img_ids=ii,
                return_dict=False,
            )[0][:, : h * w]

        if neg is None:
            v = run(hidden, emb, text_ids, ids, timestep, embedded)
        else:
            n_emb, n_ids = neg[0].expand(g, -1, -1), neg[1].expand(g, -1, -1)
            if self.batch_cfg and n_emb.shape[1] == emb.shape[1]:
                both = run(
                    torch.cat([hidden, hidden]),
                    torch.cat([emb, n_emb]),
                    torch.cat([text_ids, n_ids]),
                    torch.cat([ids, ids]),
                    torch.cat([timestep, timestep]),
                    None,
                )
                cond, uncond = both[:g], both[g:]
            else:
                cond = run(hidden, emb, text_ids, ids, timestep, embedded)
                uncond = run(hidden, n_emb, n_ids, ids, timestep, embedded)
            v = uncond + guidance_scale * (cond - uncond)
        return v.permute(0, 2, 1).reshape(g, c, h, w)  # tokens are row-major

    def _decode(self, lat: torch.Tensor) -> Image.Image:
        import torch

        pipe, vae = self.pipe, self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(lat.device, lat.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            lat.device, lat.dtype
        )
        raw = pipe._unpatchify_latents(lat * std + mean)  # (1, C/4, 2*rows, 2*cols)
        pixels = vae.decode(raw.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")[0]
