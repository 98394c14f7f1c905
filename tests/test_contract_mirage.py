"""The MIRAGE sampler contract (``docs/mirage.md``, invariants), run by every sampler family on
its tiny random pipeline: FLUX.2 [klein] distilled and base, FLUX.2 [dev], FLUX.1-Kontext and
Qwen-Image-Edit. Family-only behaviour stays in each family's own test file.

A family is one ``Family`` row: how to build its sampler, its call options, the plain
pipeline call with the noise MIRAGE draws for a seed, and which optional parts of the
contract it has (CFG, 1:1 pasting of crop latents, shorter branch text).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY, TINY_CALL_KWARGS, build_from_configs, tiny_pipeline  # noqa: E402
from tools.mirage.flux2 import MirageFlux2  # noqa: E402
from tools.mirage.flux_kontext import MirageKontext  # noqa: E402
from tools.mirage.qwen_edit import MirageQwenEdit  # noqa: E402
from tools.mirage.regions import Region  # noqa: E402

STEPS = 4
PROMPT = "edit the things"


def R(x1, y1, x2, y2, text="make it red"):
    return Region(instruction=text, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


@dataclass
class Family:
    name: str
    size: tuple[int, int]  # (W, H) of the test image = the canvas
    make: Callable[..., Any]  # sampler(**constructor options)
    options: dict[str, Any]  # call options (no CFG)
    plain: Callable[..., Any]  # plain(sampler, image, seed, **options)
    three: list[Region]  # three boxes, overlapping, not the whole image
    wrong_type: str  # in the TypeError for a wrong pipeline
    cfg: dict[str, Any] | None = None  # options that turn CFG on
    one_to_one: bool = True  # crop latents pasted 1:1 into their cells
    text_len: int | None = None  # prompt padding, when branch text can be shorter
    sizes: Callable[[], AbstractContextManager[Any]] = nullcontext


# -- FLUX.2 -------------------------------------------------------------------------------------
def _flux2_plain(config_dir: str) -> Callable[..., Any]:
    def plain(m, image, seed=3, **options):
        c = m.pipe.transformer.config.in_channels
        eps = torch.randn(
            (1, c, image.height // 16, image.width // 16),
            generator=torch.Generator().manual_seed(seed),
        )
        options = {k: v for k, v in options.items() if k != "max_sequence_length"}
        return m.pipe(
            image=image,
            prompt=PROMPT,
            latents=eps,
            num_inference_steps=STEPS,
            output_type="pil",
            **options,
            **TINY_CALL_KWARGS[config_dir],
        ).images[0]

    return plain


def _flux2(name: str, config_dir: str, guidance: float, cfg: dict[str, Any] | None) -> Family:
    return Family(
        name=name,
        size=(192, 128),
        make=lambda **kw: MirageFlux2(
            tiny_pipeline(config_dir), text_encoder_out_layers=(1,), **kw
        ),
        options={
            "guidance_scale": guidance,
            "max_sequence_length": TINY_CALL_KWARGS[config_dir]["max_sequence_length"],
        },
        plain=_flux2_plain(config_dir),
        three=[
            R(10, 10, 60, 50),
            R(40, 30, 120, 100, "make it blue"),
            R(150, 90, 170, 100, "add a hat"),
        ],
        wrong_type="Flux2KleinPipeline",
        cfg=cfg,
        text_len=TINY_CALL_KWARGS[config_dir]["max_sequence_length"],
    )


# -- FLUX.1-Kontext -----------------------------------------------------------------------------
_KONTEXT = "FLUX.1-Kontext-dev"


def _kontext_plain(m, image, seed=3, **options):
    pipe = m.pipe
    c = pipe.transformer.config.in_channels // 4
    noise = torch.randn(
        (1, c, 2 * (image.height // 16), 2 * (image.width // 16)),
        generator=torch.Generator().manual_seed(seed),
    )
    latents = pipe._pack_latents(noise, 1, c, *noise.shape[2:])
    return pipe(
        image=image,
        prompt=PROMPT,
        latents=latents,
        num_inference_steps=STEPS,
        height=image.height,
        width=image.width,
        max_area=image.width * image.height,
        _auto_resize=False,
        output_type="pil",
        **options,
    ).images[0]


# -- Qwen-Image-Edit ----------------------------------------------------------------------------
_QWEN_COND = 56 * 56  # the tiny editor's condition size
_QWEN_W, _QWEN_H = 256, 192  # also the canvas: calculate_dimensions(W * H, 4 / 3) = (256, 192)


@contextmanager
def qwen_sizes(vae: int = _QWEN_W * _QWEN_H, cond: int = _QWEN_COND):
    """The pipeline module's reference sizes set for the duration of the block, then restored."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    shipped = module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE
    module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = vae, cond
    try:
        yield
    finally:
        module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = shipped


_QWEN_PIPE: list[Any] = []


def qwen_pipe():
    """The tiny 2511 pipeline, with non-trivial VAE latents_mean/std so the normalisation is
    exercised (the shared tiny one has mean 0, std 1); built once."""
    if not _QWEN_PIPE:
        cfg = dict(TINY["Qwen-Image-Edit-2511"])
        cfg["vae"] = {
            **cfg["vae"],
            "latents_mean": [0.1, -0.2, 0.05, 0.3],
            "latents_std": [0.5, 1.5, 0.8, 1.2],
        }
        _QWEN_PIPE.append(
            build_from_configs("Qwen-Image-Edit-2511", "float32", "cpu", overrides=cfg, seed=0)
        )
    return _QWEN_PIPE[0]


def _qwen_plain(m, image, seed=3, **options):
    pipe = m.pipe
    c = pipe.transformer.config.in_channels // 4
    rows, cols = image.height // 16, image.width // 16
    noise = torch.randn(
        (1, 1, c, 2 * rows, 2 * cols), generator=torch.Generator().manual_seed(seed)
    )
    latents = pipe._pack_latents(noise, 1, c, *noise.shape[3:])
    with qwen_sizes():
        return pipe(
            image=image,
            prompt=PROMPT,
            latents=latents,
            num_inference_steps=STEPS,
            height=image.height,
            width=image.width,
            output_type="pil",
            **options,
        ).images[0]


FAMILIES = [
    _flux2("flux2-klein", "FLUX.2-klein-4B", 4.0, None),  # distilled: guidance ignored
    _flux2("flux2-klein-base", "FLUX.2-klein-base-4B", 1.0, {"guidance_scale": 4.0}),
    _flux2("flux2-dev", "FLUX.2-dev", 4.0, None),  # embedded guidance, one pass
    Family(
        name="kontext",
        size=(128, 96),
        make=lambda **kw: MirageKontext(tiny_pipeline(_KONTEXT), **kw),
        options={
            "guidance_scale": 2.5,
            "max_sequence_length": TINY_CALL_KWARGS[_KONTEXT]["max_sequence_length"],
        },
        plain=_kontext_plain,
        three=[
            R(10, 10, 60, 50),
            R(40, 30, 100, 90, "make it blue"),
            R(110, 80, 120, 90, "add a hat"),
        ],
        wrong_type="FluxKontextPipeline",
        cfg={"true_cfg_scale": 3.0, "negative_prompt": "blurry"},
        text_len=TINY_CALL_KWARGS[_KONTEXT]["max_sequence_length"],
    ),
    Family(
        name="qwen-edit",
        size=(_QWEN_W, _QWEN_H),
        make=lambda **kw: MirageQwenEdit(qwen_pipe(), **kw),
        options={"true_cfg_scale": 1.0},
        plain=_qwen_plain,
        # box 0 is upscaled 2x (4x4 cells), box 1 overlaps it, box 2 is large
        three=[
            R(64, 48, 128, 112),
            R(100, 90, 170, 150, "make it blue"),
            R(0, 0, 200, 160, "add a hat"),
        ],
        wrong_type="QwenImageEditPlusPipeline",
        cfg={"true_cfg_scale": 3.0, "negative_prompt": "blurry"},
        one_to_one=False,  # crops are upscaled and blended with a soft edge
        sizes=qwen_sizes,
    ),
]
IDS = [f.name for f in FAMILIES]


@pytest.fixture(params=FAMILIES, ids=IDS)
def family(request) -> Family:
    return request.param


def image_for(family: Family, size: tuple[int, int] | None = None):
    from PIL import Image

    w, h = size or family.size
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


def run(family: Family, m, image, regions, **kw):
    with family.sizes():
        return m(
            image,
            PROMPT,
            regions,
            **{"num_inference_steps": STEPS, "seed": 3, **family.options, **kw},
        )


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# -- the contract -------------------------------------------------------------------------------
def test_zero_regions_give_the_vae_reconstruction(family):
    m = family.make()
    out = run(family, m, image_for(family), [])
    assert out.calls == []  # nothing to denoise
    assert out.image.size == family.size
    assert np.array_equal(np.asarray(out.image), np.asarray(m.decode(out.source_latent)))


def test_background_latent_ends_exactly_at_the_source_latent(family):
    out = run(family, family.make(), image_for(family), family.three)
    bg = ~out.region_mask
    assert bg.any() and out.region_mask.any()
    assert out.latents.shape[2:] == (family.size[1] // 16, family.size[0] // 16)  # (rows, cols)
    assert torch.equal(out.latents[:, :, bg], out.source_latent[:, :, bg])
    assert not torch.equal(
        out.latents[:, :, out.region_mask], out.source_latent[:, :, out.region_mask]
    )


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_full_image_region_equals_the_plain_pipeline(family, rho):
    # rho = 1: no early phase, the global branch alone is the plain pipeline. rho = 0.5: a
    # full-image branch with the global text is also the plain pipeline, which checks the early
    # phase's noise window, reference, ids and full-canvas schedule, and the handover paste.
    m = family.make()
    image = image_for(family)
    w, h = family.size
    out = run(family, m, image, [R(0, 0, w, h, PROMPT)], rho=rho)
    assert sum(c["phase"] == "early" for c in out.calls) == round((1 - rho) * STEPS)
    assert np.array_equal(
        np.asarray(out.image), np.asarray(family.plain(m, image, **family.options))
    )


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_cfg_equals_the_plain_pipeline(family, batch_cfg):
    if family.cfg is None:
        pytest.skip(f"{family.name} has no classifier-free guidance")
    m = family.make(batch_cfg=batch_cfg)
    image = image_for(family)
    w, h = family.size
    options = {**family.options, **family.cfg}
    out = run(family, m, image, [R(0, 0, w, h)], rho=1.0, **family.cfg)
    assert len(out.calls) == (STEPS if batch_cfg else 2 * STEPS)
    a, b = _pixels(out.image), _pixels(family.plain(m, image, **options))
    if batch_cfg:  # the two passes as one batch of 2 instead of two calls: float rounding only
        assert np.abs(a - b).max() <= 2
    else:
        assert np.array_equal(a, b)


def test_region_latents_are_pasted_without_resampling(family):
    if not family.one_to_one:
        pytest.skip(f"{family.name} resamples its crops (its own test file checks the blend)")
    out = run(family, family.make(), image_for(family), family.three, keep_intermediates=True)
    h = out.handover
    assert h["step"] == round((1 - 0.6) * STEPS)
    for j, c in enumerate(out.cells):
        mine = h["owner"][c.y1 : c.y2, c.x1 : c.x2] == j
        assert mine.any()
        window = h["canvas"][:, :, c.y1 : c.y2, c.x1 : c.x2]
        assert torch.equal(window[:, :, mine], h["branches"][j][:, :, mine])
        assert tuple(h["branches"][j].shape[2:]) == c.shape  # crop-sized, 1:1 with its cells


def test_odd_sizes_progress_and_seeds(family):
    from PIL import Image

    odd = image_for(family).resize((110, 85), Image.BILINEAR)
    seen = []
    m = family.make()
    out = run(family, m, odd, [R(5, 5, 60, 60)], progress=lambda i, n: seen.append((i, n)))
    assert out.image.size == (110, 85)
    assert seen == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert all(0 <= v <= 110 for b in out.boxes for v in b)
    again = run(family, m, odd, [R(5, 5, 60, 60)])
    other = run(family, m, odd, [R(5, 5, 60, 60)], seed=4)
    assert np.array_equal(np.asarray(out.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(out.image), np.asarray(other.image))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"rho": 0}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"instruction": " "}, "instruction"),
    ],
)
def test_check_inputs_name_the_argument(family, kw, match):
    m = family.make()
    kw = dict(kw)  # the parameter dict is shared by every family
    instruction = kw.pop("instruction", PROMPT)
    with pytest.raises(ValueError, match=match), family.sizes():
        m(
            image_for(family),
            instruction,
            [],
            **{"num_inference_steps": STEPS, **family.options, **kw},
        )


def test_wrong_pipeline_type(family):
    with pytest.raises(TypeError, match=family.wrong_type):
        type(family.make())(object())


def test_shorter_branch_text_shrinks_only_early_calls(family):
    if family.text_len is None:
        pytest.skip(f"{family.name} does not pad its prompts")
    image = image_for(family)
    full = run(family, family.make(), image, family.three)
    short = run(family, family.make(branch_max_sequence_length=8), image, family.three)
    early = lambda out: sorted({c["tokens"] for c in out.calls if c["phase"] == "early"})  # noqa: E731
    late = lambda out: sorted({c["tokens"] for c in out.calls if c["phase"] == "late"})  # noqa: E731
    assert early(full) and late(short) == late(full)
    assert all(s == f - (family.text_len - 8) for s, f in zip(early(short), early(full)))
    bg = ~short.region_mask
    assert torch.equal(short.latents[:, :, bg], short.source_latent[:, :, bg])
