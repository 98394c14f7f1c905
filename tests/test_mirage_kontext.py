"""Kontext-only MIRAGE behaviour on the tiny random FLUX.1-Kontext pipeline: wiring, not quality.

The invariants every sampler family keeps are tests/test_contract_mirage.py.
"""

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
    kw = {
        "num_inference_steps": STEPS,
        "guidance_scale": 2.5,
        "seed": 3,
        "max_sequence_length": L,
        **kw,
    }
    return m(image, instruction, regions, **kw)


def plain(m: MirageKontext, image, prompt="edit the things", seed=3, **kw):
    """The plain FluxKontextPipeline at the image's own size with the noise MIRAGE draws for
    ``seed``, passed as packed ``latents`` (B, rows*cols, 4c)."""
    pipe = m.pipe
    c = pipe.transformer.config.in_channels // 4
    noise = torch.randn(
        (1, c, 2 * H // 16, 2 * W // 16), generator=torch.Generator().manual_seed(seed)
    )
    latents = pipe._pack_latents(noise, 1, c, *noise.shape[2:])
    return pipe(
        image=image,
        prompt=prompt,
        latents=latents,
        num_inference_steps=STEPS,
        guidance_scale=2.5,
        height=H,
        width=W,
        max_area=W * H,
        _auto_resize=False,
        max_sequence_length=L,
        output_type="pil",
        **kw,
    ).images[0]


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))


def R(x1, y1, x2, y2, text="make it red"):
    return Region(instruction=text, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


THREE = [R(10, 10, 60, 50), R(40, 30, 100, 90, "make it blue"), R(110, 80, 120, 90, "add a hat")]


def test_source_latent_is_the_pipelines_reference_latent(image):
    out = run(sampler(), image, [])
    # x0 is exactly the pipeline's own reference latent (same preprocessing, scaling and shift)
    pipe = sampler().pipe
    pixels = pipe.image_processor.preprocess(image, H, W)
    with torch.no_grad():
        _, ref, _, ref_ids = pipe.prepare_latents(
            pixels, 1, pipe.transformer.config.in_channels // 4, H, W, torch.float32, "cpu"
        )
    assert torch.equal(
        out.source_latent.flatten(2).transpose(1, 2), ref
    )  # cell layout = packed tokens
    assert ref_ids[:, 0].eq(1).all()  # the reference's first id coordinate, as MIRAGE sets it


def test_branches_use_the_full_canvas_schedule(image):
    m = sampler()
    out = run(m, image, THREE[:1], rho=0.5)
    plain_t = [float(t) for t in m.pipe.scheduler.timesteps]  # set for the full canvas by the run
    plain(m, image)
    assert [float(t) for t in m.pipe.scheduler.timesteps] == plain_t
    assert [c["timestep"] for c in out.calls] == plain_t
    assert [c["tokens"] for c in out.calls if c["phase"] == "early"] == [
        2 * 16 + L
    ] * 2  # 4x4 cells + ref


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"true_cfg_scale": 2.0}, "negative_prompt"),
        ({"max_sequence_length": 513}, "max_sequence_length"),
    ],
)
def test_check_inputs(image, kw, match):
    with pytest.raises(ValueError, match=match):
        run(sampler(), image, [], **kw)
