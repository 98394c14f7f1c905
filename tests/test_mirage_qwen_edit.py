"""Qwen-Image-Edit-only MIRAGE behaviour on a tiny random 2511 pipeline: wiring, not quality.

The invariants every sampler family keeps are tests/test_contract_mirage.py.

The pipeline module's reference sizes (``VAE_IMAGE_SIZE``, ``CONDITION_IMAGE_SIZE``) are set small
around each call and restored afterwards (``qwen_sizes``); the VAE area here is 256x192 so the
canvas has 16x12 cells, room for boxes that get upscaled.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY, build_from_configs  # noqa: E402
from tools.mirage.qwen_edit import (  # noqa: E402
    MirageQwenEdit,
    branch_to_canvas,
    context_window,
    feather_mask,
    pool_noise,
    upsample_noise,
    upscale_factor,
)
from tools.mirage.regions import CellBox, Region  # noqa: E402

STEPS = 4
W, H = 256, 192  # the source; also the canvas: calculate_dimensions(W * H, 4 / 3) = (256, 192)
VAE, COND = W * H, 56 * 56  # COND: the tiny editor's condition size
GRID = (H // 16, W // 16)  # (12, 16) cells


@contextmanager
def qwen_sizes(vae: int = VAE, cond: int = COND):
    """The pipeline module's reference sizes set for the duration of the block, then restored."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    shipped = module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE
    module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = vae, cond
    try:
        yield
    finally:
        module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = shipped


@pytest.fixture(scope="module")
def pipe():
    """The tiny 2511 pipeline, with non-trivial VAE latents_mean/std so the normalisation is
    exercised (the shared tiny one has mean 0, std 1)."""
    cfg = dict(TINY["Qwen-Image-Edit-2511"])
    cfg["vae"] = {
        **cfg["vae"],
        "latents_mean": [0.1, -0.2, 0.05, 0.3],
        "latents_std": [0.5, 1.5, 0.8, 1.2],
    }
    return build_from_configs("Qwen-Image-Edit-2511", "float32", "cpu", overrides=cfg, seed=0)


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))


def run(m: MirageQwenEdit, image, regions, instruction="edit the things", **kw):
    kw = {"num_inference_steps": STEPS, "true_cfg_scale": 1.0, "seed": 3, **kw}
    with qwen_sizes():
        return m(image, instruction, regions, **kw)


def plain(pipe, image, prompt="edit the things", seed=3, true_cfg_scale=1.0, **kw):
    """The plain QwenImageEditPlusPipeline at the canvas size with the noise MIRAGE draws for
    ``seed``, passed as packed ``latents`` (1, rows*cols, 4c)."""
    c = pipe.transformer.config.in_channels // 4
    noise = torch.randn(
        (1, 1, c, 2 * GRID[0], 2 * GRID[1]), generator=torch.Generator().manual_seed(seed)
    )
    latents = pipe._pack_latents(noise, 1, c, *noise.shape[3:])
    with qwen_sizes():
        return pipe(
            image=image,
            prompt=prompt,
            latents=latents,
            num_inference_steps=STEPS,
            height=H,
            width=W,
            true_cfg_scale=true_cfg_scale,
            output_type="pil",
            **kw,
        ).images[0]


def R(x1, y1, x2, y2, text="make it red"):
    return Region(instruction=text, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


# Box 0: 4x4 cells -> window 6x6 -> upscaled 2x; box 1 (5x5 -> window 9x9, f = 1) overlaps it and
# box 2 (large, f = 1).
THREE = [R(64, 48, 128, 112), R(100, 90, 170, 150, "make it blue"), R(0, 0, 200, 160, "add a hat")]


def test_source_latent_is_the_pipelines_reference_latent(pipe, image):
    out = run(MirageQwenEdit(pipe), image, [])
    # x0 is exactly the pipeline's own reference latent (same resize, argmax, latents_mean/std)
    pixels = pipe.image_processor.preprocess(image, H, W).unsqueeze(2)
    with torch.no_grad():
        _, ref = pipe.prepare_latents([pixels], 1, 4, H, W, torch.float32, "cpu", None)
    assert torch.equal(
        out.source_latent.flatten(2).transpose(1, 2), ref
    )  # cell layout = packed tokens


def test_small_boxes_are_upscaled_and_a_full_image_box_is_not(pipe, image):
    assert run(MirageQwenEdit(pipe), image, THREE, true_cfg_scale=3.0).upscales == [2, 1, 1]
    full = run(MirageQwenEdit(pipe), image, [R(0, 0, W, H, "edit the things")], rho=0.5)
    assert full.upscales == [1] and full.windows == [CellBox(0, 0, GRID[1], GRID[0])]


@pytest.mark.parametrize(
    "kw", [{"rho": 1.0}, {"target_replacement": False}, {"background_replacement": False}]
)
def test_no_early_phase_and_the_ablations(kw, pipe, image):
    out = run(MirageQwenEdit(pipe), image, THREE, **kw)
    assert torch.isfinite(
        out.latents
    ).all()  # upscaled branches with no step taken paste nothing odd
    bg = ~out.region_mask
    if kw.get("background_replacement", True):
        assert torch.equal(out.latents[:, :, bg], out.source_latent[:, :, bg])
        assert sum(c["phase"] == "early" for c in out.calls) == 0
    else:  # background follows the global branch freely
        assert not torch.equal(out.latents[:, :, bg], out.source_latent[:, :, bg])


def test_soft_blend_pastes_the_branch_inside_and_blends_at_the_edges(pipe, image):
    out = run(MirageQwenEdit(pipe), image, THREE[:1], keep_intermediates=True)
    h, (c,), (w,) = out.handover, out.cells, out.windows
    assert c == CellBox(4, 3, 8, 7) and w == CellBox(3, 2, 9, 8) and out.upscales == [2]
    assert h["branches"][0].shape[2:] == (12, 12)  # the 6x6-cell window, upscaled 2x
    a = h["alpha"][0]  # (4, 4): 1 in the middle, 1/2 on the rim
    assert a[1:3, 1:3].eq(1).all() and a[0].eq(0.5).all() and a[:, -1].eq(0.5).all()
    box = h["canvas"][:, :, c.y1 : c.y2, c.x1 : c.x2]
    ref = h["z_ref"][:, :, c.y1 : c.y2, c.x1 : c.x2]
    branch = h["on_canvas"][0]
    centre = a == 1
    assert torch.equal(box[:, :, centre], branch[:, :, centre])  # the branch's values, exactly
    rim = ~centre
    assert torch.allclose(box[:, :, rim], (0.5 * branch + 0.5 * ref)[:, :, rim])
    assert not torch.allclose(box[:, :, rim], branch[:, :, rim])
    assert not torch.allclose(box[:, :, rim], ref[:, :, rim])
    outside = torch.ones(GRID, dtype=torch.bool)
    outside[c.y1 : c.y2, c.x1 : c.x2] = False
    assert torch.equal(
        h["canvas"][:, :, outside], h["z_ref"][:, :, outside]
    )  # margin cells not pasted
    # the branch's noise refines the canvas's window of eps (the seed's draw): block sums / 2
    eps = torch.randn((1, 4, 2 * GRID[0], 2 * GRID[1]), generator=torch.Generator().manual_seed(3))
    window = eps[:, :, 2 * w.y1 : 2 * w.y2, 2 * w.x1 : 2 * w.x2]
    assert torch.allclose(pool_noise(MirageQwenEdit._to_vae(h["noise"][0]), 2), window, atol=1e-5)


def test_back_to_canvas_keeps_the_canvas_noise():
    gen = torch.Generator().manual_seed(0)
    eps_w = torch.randn(1, 4, 6, 10, generator=gen)  # window noise, VAE layout
    eps_b = upsample_noise(eps_w, 3, gen)  # (1, 4, 18, 30)
    assert torch.allclose(pool_noise(eps_b, 3), eps_w, atol=1e-5)
    x_b = torch.randn(1, 4, 18, 30, generator=gen)
    s = torch.tensor(0.7)
    to_cells, to_vae = MirageQwenEdit._to_cells, MirageQwenEdit._to_vae
    zb = to_cells(s * eps_b + (1 - s) * x_b)
    back = branch_to_canvas(zb, to_cells(eps_b), to_cells(eps_w), s, 3)
    expect = s * eps_w + (1 - s) * torch.nn.functional.avg_pool2d(x_b, 3)
    assert torch.allclose(to_vae(back), expect, atol=1e-5)
    # no step taken (s = 1): the branch is its noise, which is the canvas's
    assert torch.equal(
        branch_to_canvas(to_cells(eps_b), to_cells(eps_b), to_cells(eps_w), torch.tensor(1.0), 3),
        to_cells(eps_w),
    )
    assert torch.equal(to_vae(to_cells(x_b)), x_b)


def test_upsampled_noise_is_white():
    gen = torch.Generator().manual_seed(1)
    eps = torch.randn(1, 4, 64, 64, generator=gen)
    z = upsample_noise(eps, 4, gen)  # (1, 4, 256, 256)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    right = (z[..., :-1] * z[..., 1:]).mean()  # neighbours, mostly in one block
    assert abs(float(right)) < 0.01
    assert torch.allclose(pool_noise(z, 4), eps, atol=1e-5)


def test_upscale_factor_is_capped_at_four(pipe, image):
    assert upscale_factor(CellBox(0, 0, 1, 1), GRID, 4) == 4  # 192 cells / 1 -> 13, capped
    assert upscale_factor(CellBox(0, 0, 6, 6), GRID, 4) == 2  # sqrt(192 / 36) = 2.3
    assert upscale_factor(CellBox(0, 0, 16, 12), GRID, 4) == 1
    assert context_window(CellBox(1, 1, 5, 5), GRID, 0.25) == CellBox(0, 0, 6, 6)
    tiny_box = [R(112, 80, 128, 96)]  # exactly one cell
    out = run(MirageQwenEdit(pipe, min_cells=1, context=0), image, tiny_box)
    assert out.upscales == [4]
    early = [c for c in out.calls if c["phase"] == "early"]
    assert early and all(c["cells"] == (4, 4) for c in early)  # 4x per side, not 16x
    out2 = run(MirageQwenEdit(pipe, min_cells=1, context=0, max_upscale=2), image, tiny_box)
    assert out2.upscales == [2]
    with pytest.raises(ValueError, match="max_upscale"):
        MirageQwenEdit(pipe, max_upscale=5)


def test_feather_mask_spares_canvas_borders():
    a = feather_mask(
        CellBox(0, 0, 6, 4), GRID, 2
    )  # top-left corner: only right and bottom feathered
    assert a[0, 0] == 1 and a[-1, 0] < 1 and a[0, -1] < 1
    assert feather_mask(CellBox(0, 0, GRID[1], GRID[0]), GRID, 2).eq(1).all()
    assert feather_mask(CellBox(4, 4, 8, 8), GRID, 0).eq(1).all()  # feather 0: a hard edge


def test_odd_sizes_use_the_pipelines_canvas(pipe, image):
    from PIL import Image

    out = run(MirageQwenEdit(pipe), image.resize((110, 85), Image.BILINEAR), [R(5, 5, 60, 60)])
    assert out.image.size == (110, 85)
    assert out.latents.shape[2:] == (
        12,
        16,
    )  # canvas calculate_dimensions(W * H, 110 / 85) = 256x192


def test_sizes_come_from_the_module_or_the_constructor(pipe, image):
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    shipped = module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE
    m = MirageQwenEdit(pipe)
    with qwen_sizes(128 * 96, COND):
        assert m.sizes() == (128 * 96, COND)
        small = m(image, "edit", [], num_inference_steps=2, true_cfg_scale=1.0)
    assert (module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE) == shipped  # restored
    assert small.source_latent.shape[2:] == (6, 8)
    fixed = MirageQwenEdit(pipe, vae_image_size=128 * 96, condition_image_size=COND)
    assert fixed.sizes() == (128 * 96, COND)  # no module constants needed
    assert torch.equal(
        fixed(image, "edit", [], num_inference_steps=2, true_cfg_scale=1.0).source_latent,
        small.source_latent,
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"true_cfg_scale": 2.0, "negative_prompt": None}, "negative_prompt"),
        ({"true_cfg_scale": 2.0, "guidance_scale": 3.0}, "same scale"),
    ],
)
def test_check_inputs(pipe, image, kw, match):
    with pytest.raises(ValueError, match=match):
        run(MirageQwenEdit(pipe), image, [], **kw)


def test_on_the_tiny_editors_pipeline_and_sizes(image):
    """How ``RegionalEditor.for_editor`` would build it: the editor's pipeline, reference sizes
    and guidance (its true-CFG scale, passed as ``guidance_scale``)."""
    from tools.editors.tiny import tiny_qwen_edit_plus_editor

    editor = tiny_qwen_edit_plus_editor()
    m = MirageQwenEdit(
        editor._pipeline(),
        vae_image_size=editor.vae_image_size,
        condition_image_size=editor.condition_image_size,
        min_cells=2,
    )
    out = m(
        image,
        "edit the things",
        [R(0, 0, 64, 48)],
        num_inference_steps=2,
        guidance_scale=editor.guidance_scale,
        negative_prompt=editor.negative_prompt,
        seed=0,
    )
    assert out.image.size == (W, H)
    assert out.latents.shape[2:] == (4, 4)  # calculate_dimensions(64 * 64, 4 / 3) = 64x64 px
    assert len(out.calls) == 2 and out.cells == [CellBox(0, 0, 2, 2)]
    bg = ~out.region_mask
    assert torch.equal(out.latents[:, :, bg], out.source_latent[:, :, bg])
