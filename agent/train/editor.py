"""Training the micro editor on the micro-world (``mira-train editor``).

One call does what fits in its wall-clock budget and leaves a loadable model behind:

1. **data**: editor records (source, atomic or whole instruction, target) from train seeds and
   train-split language only, rendered by a process pool;
2. **autoencoder** (first run only): ``AutoencoderKLFlux2`` trained on the rendered images
   (L1 + MSE + a small KL term), then its latent batch-norm statistics measured, as the
   pipeline normalises latents with them;
3. **editor**: the text encoder and transformer trained together with flow matching on the
   frozen autoencoder's latents, exactly as ``Flux2KleinPipeline`` will call them (its own
   prompt-embedding, patchify/pack and position-id functions are reused, so training and
   inference cannot drift apart); EMA of the weights;
4. **validation** on validation seeds: batched Euler sampling with the EMA weights and the
   pipeline's schedule, scored by the micro-world's pixel scorer;
5. **save**: the EMA pipeline as a diffusers folder (``save_pipeline``) plus ``metrics.json``,
   and the full training state (fp32 weights, optimiser, step) for a warm resume.

A later call resumes from the state folder when it is there (same machine), else from the
saved pipeline folder (weights only; the optimiser restarts with a short warm-up).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.train.editor_model import GPU, SMOKE, MicroEditorConfig

__all__ = [
    "TrainSettings",
    "SMOKE_SETTINGS",
    "GPU_SETTINGS",
    "train_editor",
    "load_pipeline",
    "evaluate_records",
]

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """One training run (``mira-train editor``)."""

    config: MicroEditorConfig = GPU
    #: editor records in the training pool (train seeds, train language), and the seed offset
    n_records: int = 120_000
    seed_offset: int = 0
    #: autoencoder: images, batch, learning rate, share of the wall budget on a first run
    vae_images: int = 24_000
    vae_batch: int = 32
    vae_lr: float = 4e-4
    vae_share: float = 0.5
    #: editor: batch, learning rate, warm-up steps, EMA decay
    batch: int = 256
    lr: float = 5e-4
    warmup: int = 300
    ema: float = 0.999
    #: validation: atomic edits drawn from validation seeds
    val_seeds: int = 200
    #: wall-clock budget of this call (seconds), validation and saving included
    seconds: float = 540.0
    #: reserve for validation and saving at the end of the budget
    reserve_s: float = 75.0
    workers: int = 0  # 0 = os.cpu_count()
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_json()
        return out


SMOKE_SETTINGS = TrainSettings(
    config=SMOKE,
    n_records=48,
    vae_images=32,
    vae_batch=8,
    batch=8,
    warmup=2,
    val_seeds=3,
    seconds=60.0,
    reserve_s=0.0,
    workers=1,
)
GPU_SETTINGS = TrainSettings()


# -- data ------------------------------------------------------------------------------------
def _gen_chunk(args: tuple[Sequence[int], str, int]) -> dict[str, Any]:
    """Records of ``seeds`` as arrays: uint8 images (n, H, W, 3), texts and labels."""
    import numpy as np

    from agent.microworld import editor_records

    seeds, language, size = args
    src, tgt, text, kind, ref, box = [], [], [], [], [], []
    for r in editor_records(seeds, language=language, size=size):  # type: ignore[arg-type]
        src.append(np.asarray(r["source"], np.uint8))
        tgt.append(np.asarray(r["target"], np.uint8))
        text.append(r["instruction"])
        kind.append(r["kind"])
        ref.append(r["ref_kind"])
        box.append(tuple(r["box"]))
    return {
        "source": np.stack(src),
        "target": np.stack(tgt),
        "instruction": text,
        "kind": kind,
        "ref_kind": ref,
        "box": box,
    }


def generate(
    seeds: Sequence[int], *, language: str, size: int, workers: int, chunk: int = 64
) -> Iterator[dict[str, Any]]:
    """Chunks of records (``_gen_chunk``), rendered by ``workers`` processes in order."""
    parts = [(list(seeds[i : i + chunk]), language, size) for i in range(0, len(seeds), chunk)]
    if workers <= 1:
        yield from map(_gen_chunk, parts)
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_gen_chunk, parts)


def _corpus(seeds: Sequence[int]) -> Iterator[str]:
    """Train-split instructions (whole and atomic) of ``seeds``: the tokenizer's corpus."""
    from agent.microworld.truth import make_case

    for seed in seeds:
        case = make_case(seed, n_edits=(1, 3), language="train")
        yield case.instruction
        yield from case.atomic


def _images(u8: Any, device: Any) -> Any:
    """uint8 (B, H, W, 3) numpy or tensor -> float (B, 3, H, W) in [-1, 1] on ``device``."""
    import torch

    x = torch.as_tensor(u8).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_u8(x: Any) -> Any:
    """float (B, 3, H, W) in [-1, 1] -> uint8 numpy (B, H, W, 3), as the pipeline's
    postprocessing rounds (``(x / 2 + 0.5).clamp(0, 1) * 255``, rounded)."""
    import torch

    out = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).cpu().numpy()


# -- the pipeline's own functions ------------------------------------------------------------
def _klein() -> Any:
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline


def encode_images(pipe: Any, images: Any) -> Any:
    """Images (B, 3, H, W) in [-1, 1] -> normalised packed latents (B, N, 128), as
    ``Flux2KleinPipeline.prepare_image_latents`` computes them (mode of the posterior)."""
    lat = pipe._encode_vae_image(image=images, generator=None)  # (B, 128, h, w), normalised
    return _klein()._pack_latents(lat), lat.shape[-2:]


def decode_latents(pipe: Any, packed: Any, hw: tuple[int, int]) -> Any:
    """Packed normalised latents (B, N, 128) -> images (B, 3, H, W) in [-1, 1], as the end of
    ``Flux2KleinPipeline.__call__``."""
    import torch

    h, w = hw
    lat = packed.transpose(1, 2).reshape(packed.shape[0], -1, h, w)  # inverse of _pack_latents
    vae = pipe.vae
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(lat)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(lat)
    lat = _klein()._unpatchify_latents(lat * std + mean)
    return vae.decode(lat.to(next(vae.parameters()).dtype), return_dict=False)[0]


def prompt_embeds(pipe: Any, prompts: Sequence[str], config: MicroEditorConfig, device: Any) -> Any:
    """The pipeline's prompt embedding (chat template, padding, stacked hidden states)."""
    return _klein()._get_qwen3_prompt_embeds(
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        prompt=list(prompts),
        dtype=None,
        device=device,
        max_sequence_length=config.max_sequence_length,
        hidden_states_layers=config.text_out_layers,
    )


def tokenize(pipe: Any, prompts: Sequence[str], config: MicroEditorConfig) -> tuple[Any, Any]:
    """Token ids and attention mask (B, L) of ``prompts`` exactly as the pipeline's prompt
    embedding makes them (chat template, padding to ``max_sequence_length``, truncation)."""
    import torch

    ids, masks = [], []
    for prompt in prompts:
        text = pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
        enc = pipe.tokenizer(
            text,
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            max_length=config.max_sequence_length,
        )
        ids.append(enc["input_ids"])
        masks.append(enc["attention_mask"])
    return torch.cat(ids), torch.cat(masks)


def embed_tokens(pipe: Any, ids: Any, mask: Any, config: MicroEditorConfig) -> Any:
    """Prompt embeddings (B, L, layers x width) from ``tokenize``'s output: the rest of the
    pipeline's prompt embedding (the stacked hidden states), so training can tokenize once."""
    import torch

    out = pipe.text_encoder(
        input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
    )
    h = torch.stack([out.hidden_states[k] for k in config.text_out_layers], dim=1)  # (B, n, L, D)
    b, n, length, d = h.shape
    return h.permute(0, 2, 1, 3).reshape(b, length, n * d)


def velocity(pipe: Any, noisy: Any, ref: Any, hw: tuple[int, int], embeds: Any, sigma: Any) -> Any:
    """The transformer's velocity for packed ``noisy`` latents (B, N, C) conditioned on the
    packed reference ``ref`` (B, N, C), with the pipeline's position ids (target t=0, the
    reference at t=10, text along the last axis)."""
    import torch

    klein = _klein()
    b = noisy.shape[0]
    h, w = hw
    grid = torch.zeros(b, 1, h, w, device=noisy.device)
    latent_ids = klein._prepare_latent_ids(grid).to(noisy.device)
    ref_ids = klein._prepare_image_ids([grid[:1]]).to(noisy.device).expand(b, -1, -1)
    text_ids = klein._prepare_text_ids(embeds).to(noisy.device)
    out = pipe.transformer(
        hidden_states=torch.cat([noisy, ref], 1),
        timestep=sigma,
        guidance=None,
        encoder_hidden_states=embeds,
        txt_ids=text_ids,
        img_ids=torch.cat([latent_ids, ref_ids], 1),
        return_dict=False,
    )[0]
    return out[:, : noisy.shape[1]]


def schedule(pipe: Any, n_tokens: int, steps: int) -> list[float]:
    """The pipeline's sigmas for ``steps`` Euler steps (dynamic shift by sequence length),
    ending at 0."""
    import numpy as np
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(
        sigmas=np.linspace(1.0, 1 / steps, steps).tolist(),
        mu=compute_empirical_mu(image_seq_len=n_tokens, num_steps=steps),
    )
    return [float(s) for s in sched.sigmas]


def sample(
    pipe: Any,
    ref: Any,
    hw: tuple[int, int],
    prompts: Sequence[str],
    config: MicroEditorConfig,
    *,
    seed: int,
    steps: int | None = None,
) -> Any:
    """Batched edit: packed reference latents -> packed result latents (Euler, no CFG)."""
    import torch

    steps = steps or config.num_inference_steps
    # noise drawn as the pipeline draws it for one prompt: (1, C, h, w) from a CPU generator
    # seeded with ``seed + i`` for batch row i, then packed
    h, w = hw
    x = torch.cat(
        [
            _klein()._pack_latents(
                torch.randn(
                    (1, ref.shape[2], h, w),
                    generator=torch.Generator(device="cpu").manual_seed(seed + i),
                )
            )
            for i in range(ref.shape[0])
        ]
    ).to(ref)
    embeds = prompt_embeds(pipe, prompts, config, ref.device)
    sigmas = schedule(pipe, ref.shape[1], steps)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        t = torch.full((ref.shape[0],), s, device=ref.device, dtype=x.dtype)
        v = velocity(pipe, x, ref, hw, embeds, t)
        x = x + (s_next - s) * v.float()
    return x


# -- training --------------------------------------------------------------------------------
def _autocast(device: Any) -> Any:
    import contextlib

    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_vae(
    pipe: Any, images: Any, *, settings: TrainSettings, deadline: float, device: Any, log: Log
) -> dict[str, float]:
    """Train the autoencoder on uint8 ``images`` (n, H, W, 3) until ``deadline``; then set the
    latent batch-norm statistics. Returns the held-out reconstruction PSNR."""
    import torch

    vae = pipe.vae.to(device).float().train()
    n_val = max(1, min(256, len(images) // 10))
    train_u8, val_u8 = images[n_val:], images[:n_val]
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    step, t0 = 0, time.time()
    g = torch.Generator().manual_seed(settings.seed)
    while time.time() < deadline or step == 0:
        idx = torch.randint(len(train_u8), (settings.vae_batch,), generator=g).numpy()
        x = _images(train_u8[idx], device)
        with _autocast(device):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample
        rec = rec.float()
        kl = post.kl().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        # cosine decay over the expected number of steps of this budget
        frac = min(1.0, (time.time() - t0) / max(1e-6, deadline - t0))
        for group in opt.param_groups:
            group["lr"] = settings.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        opt.step()
        step += 1
        if step % 500 == 0:
            log(f"vae step {step} loss {loss.item():.5f}")
    vae.eval()
    with torch.no_grad():
        set_bn_stats(pipe, train_u8[: min(len(train_u8), 2048)], device)
        psnr = vae_psnr(pipe, val_u8, device)
    log(f"vae: {step} steps in {time.time() - t0:.0f} s, held-out PSNR {psnr:.2f} dB")
    return {"vae_steps": step, "vae_psnr": psnr}


def set_bn_stats(pipe: Any, images: Any, device: Any, batch: int = 64) -> None:
    """Measure the per-channel mean and variance of the patchified posterior modes on
    ``images`` and store them as the VAE's latent batch-norm running statistics."""

    vae = pipe.vae
    total, sq, n = None, None, 0
    for i in range(0, len(images), batch):
        x = _images(images[i : i + batch], device)
        lat = _klein()._patchify_latents(vae.encode(x).latent_dist.mode().float())
        s = lat.sum(dim=(0, 2, 3))
        q = (lat**2).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        sq = q if sq is None else sq + q
        n += lat.shape[0] * lat.shape[2] * lat.shape[3]
    mean = total / n
    var = (sq / n - mean**2).clamp_min(1e-6)
    vae.bn.running_mean.copy_(mean)
    vae.bn.running_var.copy_(var)


def vae_psnr(pipe: Any, images: Any, device: Any, batch: int = 64) -> float:
    """Mean PSNR (dB, 8-bit pixels) of the autoencoder's round trip through the pipeline's
    encode / decode path."""
    import numpy as np
    import torch

    vals = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            u8 = images[i : i + batch]
            packed, hw = encode_images(pipe, _images(u8, device))
            rec = _to_u8(decode_latents(pipe, packed, hw))
            mse = ((rec.astype(np.float64) - np.asarray(u8, np.float64)) ** 2).mean(axis=(1, 2, 3))
            vals += [100.0 if m == 0 else 10 * math.log10(255.0**2 / m) for m in mse]
    return float(np.mean(vals))


class _Pool:
    """The editor's training pool on the device: packed source and target latents and texts."""

    def __init__(self) -> None:
        self.src: list[Any] = []
        self.tgt: list[Any] = []
        self.text: list[str] = []
        self.ids: list[Any] = []
        self.mask: list[Any] = []
        self.hw: tuple[int, int] | None = None

    def add(self, pipe: Any, chunk: dict[str, Any], device: Any, config: MicroEditorConfig) -> None:
        import torch

        ids, mask = tokenize(pipe, chunk["instruction"], config)
        self.ids.append(ids.to(device))
        self.mask.append(mask.to(device))

        with torch.no_grad():
            s, hw = encode_images(pipe, _images(chunk["source"], device))
            t, _ = encode_images(pipe, _images(chunk["target"], device))
        self.src.append(s.to(torch.bfloat16))
        self.tgt.append(t.to(torch.bfloat16))
        self.text += chunk["instruction"]
        self.hw = (int(hw[0]), int(hw[1]))

    def freeze(self) -> None:
        import torch

        self.src = [torch.cat(self.src)]
        self.tgt = [torch.cat(self.tgt)]
        self.ids = [torch.cat(self.ids)]
        self.mask = [torch.cat(self.mask)]

    def truncated(self) -> float:
        """Share of instructions that filled the whole prompt length (maybe cut)."""
        return float(self.mask[0].all(dim=1).float().mean())

    def __len__(self) -> int:
        return len(self.text)


def _params(pipe: Any) -> list[Any]:
    return [p for m in (pipe.transformer, pipe.text_encoder) for p in m.parameters()]


def train_editor(
    out: str | Path,
    *,
    settings: TrainSettings = GPU_SETTINGS,
    init: str | Path | None = None,
    state: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Train (or go on training) the micro editor within ``settings.seconds``.

    Args:
        out: folder for the trained pipeline (diffusers layout) and ``metrics.json``.
        init: a pipeline folder saved by an earlier call to go on from (weights, tokenizer,
            autoencoder); None starts from scratch (tokenizer and autoencoder trained first).
        state: folder for the full training state; when it holds a state of the same run it is
            used instead of ``init`` (optimiser and step kept), and it is rewritten at the end.
    Returns the metrics written to ``out/metrics.json``.
    """
    import numpy as np
    import torch

    from agent.microworld.splits import seeds as split_seeds

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    deadline = t_start + settings.seconds - settings.reserve_s
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = settings.config
    workers = settings.workers or (os.cpu_count() or 1)
    out = Path(out)
    torch.manual_seed(settings.seed)
    history: list[dict[str, Any]] = []

    # 1. the pipeline: resumed, or built fresh with a tokenizer trained on train-split text
    fresh = init is None
    if init is not None:
        pipe = load_pipeline(init, dtype="float32")
        meta = json.loads((Path(init) / "micro_editor.json").read_text())
        if MicroEditorConfig.from_json(meta["config"]) != config:
            raise ValueError(
                f"init={str(init)!r} holds another model configuration than settings.config"
            )
        history = meta.get("history", [])
        log(f"resumed from {init} (step {meta.get('step', 0)})")
    else:
        from agent.train.editor_model import build_pipeline, build_tokenizer

        corpus = _corpus(
            split_seeds(
                "train", 4000 if settings.n_records > 1000 else 50, offset=settings.seed_offset
            )
        )
        pipe = build_pipeline(config, build_tokenizer(corpus, config), seed=settings.seed)
    pipe.to(device)
    pipe.vae.float()
    pipe.transformer.float()
    pipe.text_encoder.float()

    # 2. data: a pool of train-seed records, rendered by a process pool
    # about 3 records a case; each call of a resumed run draws cases it has not seen yet
    n_seeds = max(1, settings.n_records // 3)
    offset = settings.seed_offset + 10_000 + len(history) * n_seeds
    train_seeds = split_seeds("train", n_seeds, offset=offset)
    log(f"device {_device_name()}; train seeds {train_seeds.start}..{train_seeds.stop - 1}")
    chunks = generate(train_seeds, language="train", size=config.image_size, workers=workers)

    # 3. the autoencoder, on a first run
    metrics: dict[str, Any] = {}
    if fresh:
        imgs, n_img = [], 0
        for chunk in chunks:
            imgs.append(chunk["source"])
            imgs.append(chunk["target"])
            n_img += 2 * len(chunk["source"])
            if n_img >= settings.vae_images:
                break
        images = np.concatenate(imgs)
        log(f"vae: {len(images)} images of {config.image_size} px")
        vae_deadline = time.time() + settings.vae_share * max(1.0, deadline - time.time())
        metrics.update(
            train_vae(
                pipe, images, settings=settings, deadline=vae_deadline, device=device, log=log
            )
        )
        del imgs, images
        chunks = generate(train_seeds, language="train", size=config.image_size, workers=workers)
    pipe.vae.eval().requires_grad_(False)

    pool = _Pool()
    t_data = time.time()
    for chunk in chunks:
        pool.add(pipe, chunk, device, config)
        if len(pool) >= settings.n_records:
            break
    pool.freeze()
    assert pool.hw is not None
    log(
        f"data: {len(pool)} records encoded in {time.time() - t_data:.0f} s; "
        f"{100 * pool.truncated():.2f}% of prompts fill all {config.max_sequence_length} tokens"
    )

    # 4. the editor: text encoder + transformer, flow matching, EMA
    pipe.transformer.train()
    pipe.text_encoder.train()
    params = _params(pipe)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in params]
    step = 0
    state_file = Path(state) / "state.pt" if state is not None else None
    if state_file is not None and state_file.exists():
        saved = torch.load(state_file, map_location=device, weights_only=False)
        if saved.get("config") == config.to_json():
            for p, v in zip(params, saved["params"]):
                p.data.copy_(v)
            for e, v in zip(ema, saved["ema"]):
                e.copy_(v)
            opt.load_state_dict(saved["opt"])
            step = int(saved["step"])
            history = saved.get("history", history)
            log(f"warm state: step {step}")
    elif init is not None:
        step = int(json.loads((Path(init) / "micro_editor.json").read_text()).get("step", 0))
    first = step
    forward = _compiled_velocity(pipe, device, log)
    fell_back = False
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    shift = math.exp(
        compute_empirical_mu(
            image_seq_len=pool.src[0].shape[1], num_steps=config.num_inference_steps
        )
    )
    g = torch.Generator(device=device).manual_seed(settings.seed + step)
    t0, losses = time.time(), []
    while time.time() < deadline or step == first:
        idx = torch.randint(len(pool), (settings.batch,), generator=g, device=device)
        x0 = pool.tgt[0][idx].float()
        ref = pool.src[0][idx].float()
        # sigmas: half from the inference schedule's shifted distribution, half uniform
        u = torch.rand(settings.batch, generator=g, device=device)
        shifted = shift * u / (1 + (shift - 1) * u)
        sigma = torch.where(
            torch.rand(settings.batch, generator=g, device=device) < 0.5, shifted, u
        )
        noise = torch.randn(x0.shape, generator=g, device=device)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        try:
            with _autocast(device):
                embeds = embed_tokens(pipe, pool.ids[0][idx], pool.mask[0][idx], config)
                v = forward(xt, ref, pool.hw, embeds, sigma)
            loss = ((v.float() - (noise - x0)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - only a failing compiled first step is caught
            if step != first or fell_back or not str(device).startswith("cuda"):
                raise
            fell_back = True
            log(f"compiled training step failed ({type(exc).__name__}: {exc}); eager")
            pipe.transformer.__dict__.pop("forward", None)
            forward = lambda *a: velocity(pipe, *a)  # noqa: E731
            opt.zero_grad(set_to_none=True)
            continue
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        warm = min(1.0, (step - first + 1) / settings.warmup)
        for group in opt.param_groups:
            group["lr"] = settings.lr * warm
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - settings.ema)
        losses.append(loss.item() if step % 50 == 0 else None)
        step += 1
        if step % 500 == 0 and (recent := [x for x in losses[-500:] if x is not None]):
            log(
                f"step {step} loss {sum(recent) / len(recent):.4f} "
                f"({(step - first) / (time.time() - t0):.1f} steps/s)"
            )
    train_s = time.time() - t0
    log(f"editor: steps {first}..{step} in {train_s:.0f} s")

    # 5. validation with the EMA weights (eager: the compiled graph is for training shapes)
    pipe.transformer.__dict__.pop("forward", None)
    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    val = evaluate_records(
        pipe,
        config,
        split="validation",
        n_seeds=settings.val_seeds,
        language="train",
        device=device,
        workers=workers,
    )
    recent = [x for x in losses[-2000:] if x is not None]
    metrics.update(
        {
            "step": step,
            "steps_this_call": step - first,
            "train_seconds": round(train_s, 1),
            "loss": round(sum(recent) / max(1, len(recent)), 5),
            "validation": val,
            "device": _device_name(),
        }
    )
    history.append(
        {k: metrics[k] for k in ("step", "loss")} | {"val_success": val["success_tolerant"]}
    )
    metrics["history"] = history
    log(json.dumps({k: v for k, v in metrics.items() if k != "history"}))

    # 6. save the EMA pipeline, the metrics and the warm state
    from agent.train.editor_model import save_pipeline

    card = {
        "step": step,
        "history": history,
        "settings": settings.to_json(),
        "vae_psnr": metrics.get("vae_psnr"),
    }
    if not fresh and init is not None:
        old = json.loads((Path(init) / "micro_editor.json").read_text())
        card["vae_psnr"] = card["vae_psnr"] or old.get("vae_psnr")
    save_pipeline(pipe, out, config, card=card)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "config": config.to_json(),
                "params": live,
                "ema": ema,
                "opt": opt.state_dict(),
                "step": step,
                "history": history,
            },
            state_file,
        )
    log(f"saved to {out} in {time.time() - t_start:.0f} s total")
    return metrics


def _compiled_velocity(pipe: Any, device: Any, log: Log) -> Callable[..., Any]:
    """``velocity`` with the transformer compiled by ``torch.compile`` on CUDA (the tiny
    model's many small element-wise kernels fuse); eager on the CPU or if compiling fails."""
    import torch

    if not str(device).startswith("cuda"):
        return lambda *a: velocity(pipe, *a)
    eager = pipe.transformer.forward
    try:
        pipe.transformer.forward = torch.compile(eager, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
        log(f"torch.compile unavailable ({exc!r}); eager")
        return lambda *a: velocity(pipe, *a)
    state = {"ok": None}

    def run(*a: Any) -> Any:
        if state["ok"] is None:
            try:
                out = velocity(pipe, *a)
                state["ok"] = True
                log("transformer compiled")
                return out
            except Exception as exc:  # noqa: BLE001
                log(f"compiled transformer failed ({type(exc).__name__}: {exc}); eager")
                pipe.transformer.forward = eager
                state["ok"] = False
        return velocity(pipe, *a)

    return run


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def load_pipeline(folder: str | Path, *, dtype: str = "float32", device: str = "cpu") -> Any:
    """A saved micro editor folder as a ``Flux2KleinPipeline`` (the real loading path)."""
    import torch

    pipe = _klein().from_pretrained(str(folder), dtype=getattr(torch, dtype), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# -- evaluation ------------------------------------------------------------------------------
def evaluate_records(
    pipe: Any,
    config: MicroEditorConfig,
    *,
    split: str,
    n_seeds: int,
    language: str,
    device: Any,
    workers: int = 1,
    batch: int = 64,
    seed: int = 0,
    steps: int | None = None,
) -> dict[str, Any]:
    """Score the editor on every record of ``n_seeds`` seeds of ``split`` (batched sampling
    on ``device``), beside the autoencoder's round trip of the ground truth (the ceiling).

    Returns success rates (strict and tolerant consistency), prompt following by edit kind
    and by referring-expression kind, for the model and for the ceiling."""
    import torch

    from agent.microworld.scoring import score_edits
    from agent.microworld.splits import seeds as split_seeds

    rows: list[dict[str, Any]] = []
    chunks = generate(
        split_seeds(split, n_seeds), language=language, size=config.image_size, workers=workers
    )
    for chunk in chunks:
        for i in range(0, len(chunk["instruction"]), batch):
            src_u8 = chunk["source"][i : i + batch]
            tgt_u8 = chunk["target"][i : i + batch]
            texts = chunk["instruction"][i : i + batch]
            with torch.no_grad(), _autocast(device):
                ref, hw = encode_images(pipe, _images(src_u8, device))
                out = _to_u8(
                    decode_latents(
                        pipe,
                        sample(pipe, ref, hw, texts, config, seed=seed + len(rows), steps=steps),
                        hw,
                    )
                )
                tref, _ = encode_images(pipe, _images(tgt_u8, device))
                ceil = _to_u8(decode_latents(pipe, tref, hw))
            for j in range(len(texts)):
                k = i + j
                src, tgt, box = chunk["source"][k], chunk["target"][k], [chunk["box"][k]]
                m = score_edits(src, out[j], tgt, box, kinds=[chunk["kind"][k]])
                c = score_edits(src, ceil[j], tgt, box, kinds=[chunk["kind"][k]])
                rows.append(
                    {
                        "kind": chunk["kind"][k],
                        "ref_kind": chunk["ref_kind"][k],
                        "model": m,
                        "ceiling": c,
                    }
                )
    return summarise(rows)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates over scored rows, model and ceiling: overall over the atomic edits, and per
    edit kind / reference kind. Whole instructions (kind ``"multi"``) appear only under their
    kind, scored with one box around all their targets."""

    def rates(sel: Sequence[dict[str, Any]], who: str) -> dict[str, float]:
        n = max(1, len(sel))
        return {
            "n": len(sel),
            "edit_right": round(sum(r[who].edits_passed for r in sel) / n, 4),
            "success_strict": round(sum(r[who].success for r in sel) / n, 4),
            "success_tolerant": round(sum(_tolerant(r[who]) for r in sel) / n, 4),
        }

    atomic = [r for r in rows if r["kind"] != "multi"]
    out: dict[str, Any] = {"n": len(atomic)}
    for who in ("model", "ceiling"):
        out[who] = rates(atomic, who)
        for key in ("kind", "ref_kind"):
            groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in rows:
                groups[r[key]].append(r)
            out[who][f"by_{key}"] = {g: rates(v, who) for g, v in sorted(groups.items())}
    out["success_tolerant"] = out["model"]["success_tolerant"]
    return out


def _tolerant(score: Any) -> bool:
    """Success under the model-tolerant consistency rule of the scorer."""
    return bool(score.success_tolerant)


def evaluate_whole(
    pipe: Any,
    config: MicroEditorConfig,
    *,
    split: str,
    n_seeds: int,
    language: str,
    n_edits: int,
    device: Any,
    batch: int = 64,
    seed: int = 0,
    steps: int | None = None,
) -> dict[str, Any]:
    """Whole ``n_edits``-edit instructions in one editor call (the single-shot baseline),
    scored per edit by ``score_case``, beside the autoencoder's round trip of the goal."""
    import numpy as np
    import torch

    from agent.microworld.render import render
    from agent.microworld.scoring import score_case
    from agent.microworld.splits import seeds as split_seeds
    from agent.microworld.truth import goal_scene, make_case

    cases = [
        make_case(s, n_edits=n_edits, size=config.image_size, language=language)  # type: ignore[arg-type]
        for s in split_seeds(split, n_seeds)
    ]
    rows: list[dict[str, Any]] = []
    for i in range(0, len(cases), batch):
        part = cases[i : i + batch]
        src = np.stack([np.asarray(render(c.scene)) for c in part])
        goal = np.stack([np.asarray(render(goal_scene(c))) for c in part])
        with torch.no_grad(), _autocast(device):
            ref, hw = encode_images(pipe, _images(src, device))
            out = _to_u8(
                decode_latents(
                    pipe,
                    sample(
                        pipe,
                        ref,
                        hw,
                        [c.instruction for c in part],
                        config,
                        seed=seed + i,
                        steps=steps,
                    ),
                    hw,
                )
            )
            ceil = _to_u8(decode_latents(pipe, encode_images(pipe, _images(goal, device))[0], hw))
        for j, case in enumerate(part):
            rows.append(
                {
                    "kind": "whole",
                    "ref_kind": "whole",
                    "model": score_case(case, out[j]),
                    "ceiling": score_case(case, ceil[j]),
                }
            )
    out_rates = summarise([dict(r, kind="atomic") for r in rows])  # one group: all whole cases
    for who in ("model", "ceiling"):
        out_rates[who].pop("by_kind", None)
        out_rates[who].pop("by_ref_kind", None)
    return out_rates


def evaluate_editor(
    folder: str | Path,
    *,
    split: str = "test",
    n_seeds: int = 300,
    n_edits: int = 3,
    device: str | None = None,
    workers: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """The editor table of a saved micro editor (the weights as shipped): atomic edits by
    kind and reference kind, and whole ``n_edits``-edit instructions in one call, for train and
    held-out language, with the autoencoder's round-trip ceiling. ``split`` must not be train."""
    import torch

    if split == "train":
        raise ValueError(
            "split must be an evaluation split (validation, test, benchmark), got 'train'"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = json.loads((Path(folder) / "micro_editor.json").read_text())
    config = MicroEditorConfig.from_json(meta["config"])
    pipe = load_pipeline(folder, device=device)
    workers = workers or (os.cpu_count() or 1)
    out: dict[str, Any] = {
        "model": str(folder),
        "step": meta.get("step"),
        "split": split,
        "n_seeds": n_seeds,
        "steps": config.num_inference_steps,
        "device": _device_name(),
    }
    for language in ("train", "heldout"):
        t = time.time()
        out[language] = {
            "atomic": evaluate_records(
                pipe,
                config,
                split=split,
                n_seeds=n_seeds,
                language=language,
                device=device,
                workers=workers,
            ),
            "whole": evaluate_whole(
                pipe,
                config,
                split=split,
                n_seeds=n_seeds,
                language=language,
                n_edits=n_edits,
                device=device,
            ),
        }
        log(
            f"{language}: atomic {out[language]['atomic']['model']['edit_right']:.3f} right, "
            f"whole {out[language]['whole']['model']['success_tolerant']:.3f} "
            f"({time.time() - t:.0f} s)"
        )
    return out
