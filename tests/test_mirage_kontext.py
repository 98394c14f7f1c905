"""MIRAGE invariants (DESIGN 6) on the tiny random FLUX.1-Kontext pipeline: wiring, not quality."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY_CALL_KWARGS, tiny_pipeline  # noqa: E402
from tools.mirage.flux_kontext import MirageKontext  # noqa: E402
from tools.mirage.regions import Region  # noqa: E402

KONTEXT = "FLUX.1-Kontext-dev"
STEPS = 4
W, H = 128, 96  # multiples of 16: the pipeline keeps this size with max_area = W * H
L = TINY_CALL_KWARGS[KONTEXT]["max_sequence_length"]


def sampler(**kw) -> MirageKontext:
    return MirageKontext(tiny_pipeline(KONTEXT), **kw)


def run(m: MirageKontext, image, regions, instruction="edit the things", **kw):
    kw = {"num_inference_steps": STEPS, "guidance_scale": 2.5, "seed": 3, "max_sequence_length": L, **kw}
    return m(image, instruction, regions, **kw)


def plain(m: MirageKontext, image, prompt="edit the things", seed=3, **kw):
    """The plain FluxKontextPipeline at the image's own size with the noise MIRAGE draws for
    ``seed``, passed as packed ``latents`` (B, rows*cols, 4c)."""
    pipe = m.pipe
    c = pipe.transformer.config.in_channels // 4
    noise = torch.randn((1, c, 2 * H // 16, 2 * W // 16), generator=torch.Generator().manual_seed(seed))
    latents = pipe._pack_latents(noise, 1, c, *noise.shape[2:])
    return pipe(image=image, prompt=prompt, latents=latents, num_inference_steps=STEPS, guidance_scale=2.5,
                height=H, width=W, max_area=W * H, _auto_resize=False, max_sequence_length=L,
                output_type="pil", **kw).images[0]


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))


def R(x1, y1, x2, y2, text="make it red"):
    return Region(instruction=text, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


THREE = [R(10, 10, 60, 50), R(40, 30, 100, 90, "make it blue"), R(110, 80, 120, 90, "add a hat")]


def test_zero_regions_give_the_vae_reconstruction(image):
    m = sampler()
    out = run(m, image, [])
    assert out.calls == []  # nothing to denoise
    assert np.array_equal(np.asarray(out.image), np.asarray(m.decode(out.source_latent)))
    # x0 is exactly the pipeline's own reference latent (same preprocessing, scaling and shift)
    pipe = m.pipe
    pixels = pipe.image_processor.preprocess(image, H, W)
    with torch.no_grad():
        _, ref, _, ref_ids = pipe.prepare_latents(pixels, 1, pipe.transformer.config.in_channels // 4,
                                                  H, W, torch.float32, "cpu")
    assert torch.equal(out.source_latent.flatten(2).transpose(1, 2), ref)  # cell layout = packed tokens
    assert ref_ids[:, 0].eq(1).all()  # the reference's first id coordinate, as MIRAGE sets it


def test_background_latent_ends_exactly_at_the_source_latent(image):
    out = run(sampler(), image, THREE)
    bg = ~out.region_mask
    assert bg.any() and out.region_mask.any()
    assert out.latents.shape == (1, 16, H // 16, W // 16)  # (1, 4c, rows, cols), tiny c = 4
    assert torch.equal(out.latents[:, :, bg], out.source_latent[:, :, bg])
    assert not torch.equal(out.latents[:, :, out.region_mask], out.source_latent[:, :, out.region_mask])


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_full_image_region_equals_the_plain_pipeline(rho, image):
    # rho = 1: no early phase, the global branch alone is the plain pipeline. rho = 0.5: a
    # full-image branch with the global text is also the plain pipeline, which checks the early
    # phase's noise window, reference, ids and full-canvas schedule, and the handover paste.
    m = sampler()
    out = run(m, image, [R(0, 0, W, H, "edit the things")], rho=rho)
    assert sum(c["phase"] == "early" for c in out.calls) == round((1 - rho) * STEPS)
    assert np.array_equal(np.asarray(out.image), np.asarray(plain(m, image)))


@pytest.mark.parametrize("batch_cfg, exact", [(False, True), (True, False)])
def test_true_cfg_equals_the_plain_pipeline(batch_cfg, exact, image):
    m = sampler(batch_cfg=batch_cfg)
    cfg = {"true_cfg_scale": 3.0, "negative_prompt": "blurry"}
    out = run(m, image, [R(0, 0, W, H)], rho=1.0, **cfg)
    assert len(out.calls) == (STEPS if batch_cfg else 2 * STEPS)
    a = np.asarray(out.image, dtype=np.int16)
    b = np.asarray(plain(m, image, **cfg), dtype=np.int16)
    if exact:
        assert np.array_equal(a, b)
    else:  # the two passes as one batch of 2 instead of two calls: float rounding only
        assert np.abs(a - b).max() <= 2


def test_branches_use_the_full_canvas_schedule(image):
    m = sampler()
    out = run(m, image, THREE[:1], rho=0.5)
    plain_t = [float(t) for t in m.pipe.scheduler.timesteps]  # set for the full canvas by the run
    plain(m, image)
    assert [float(t) for t in m.pipe.scheduler.timesteps] == plain_t
    assert [c["timestep"] for c in out.calls] == plain_t
    assert [c["tokens"] for c in out.calls if c["phase"] == "early"] == [2 * 16 + L] * 2  # 4x4 cells + ref


def test_region_latents_are_pasted_without_resampling(image):
    out = run(sampler(), image, THREE, keep_intermediates=True)
    h = out.handover
    assert h["step"] == round((1 - 0.6) * STEPS)
    for j, c in enumerate(out.cells):
        mine = h["owner"][c.y1:c.y2, c.x1:c.x2] == j
        assert mine.any()
        window = h["canvas"][:, :, c.y1:c.y2, c.x1:c.x2]
        assert torch.equal(window[:, :, mine], h["branches"][j][:, :, mine])
        assert tuple(h["branches"][j].shape[2:]) == c.shape  # crop-sized, 1:1 with its cells


def test_odd_sizes_come_back_at_their_size(image):
    from PIL import Image

    odd = image.resize((110, 85), Image.BILINEAR)
    seen = []
    out = run(sampler(), odd, [R(5, 5, 60, 60)], progress=lambda i, n: seen.append((i, n)))
    assert out.image.size == (110, 85)
    assert out.latents.shape[2:] == (85 // 16, 110 // 16)
    assert seen == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert all(0 <= v <= 110 for b in out.boxes for v in b)


@pytest.mark.parametrize("kw, match", [({"rho": 0}, "rho"),
                                       ({"num_inference_steps": 0}, "num_inference_steps"),
                                       ({"true_cfg_scale": 2.0}, "negative_prompt"),
                                       ({"max_sequence_length": 513}, "max_sequence_length")])
def test_check_inputs(image, kw, match):
    with pytest.raises(ValueError, match=match):
        run(sampler(), image, [], **kw)


def test_wrong_pipeline_type():
    with pytest.raises(TypeError, match="FluxKontextPipeline"):
        MirageKontext(object())


def test_shorter_branch_text_shrinks_only_early_calls(image):
    full = run(sampler(), image, THREE)
    short = run(sampler(branch_max_sequence_length=8), image, THREE)
    early = lambda out: sorted({c["tokens"] for c in out.calls if c["phase"] == "early"})  # noqa: E731
    late = lambda out: sorted({c["tokens"] for c in out.calls if c["phase"] == "late"})  # noqa: E731
    assert late(short) == late(full)
    assert all(s == f - (L - 8) for s, f in zip(early(short), early(full)))
    bg = ~short.region_mask
    assert torch.equal(short.latents[:, :, bg], short.source_latent[:, :, bg])
