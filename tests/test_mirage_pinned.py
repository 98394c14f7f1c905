"""MIRAGE outputs on the tiny FLUX.2 and Kontext models, pinned.

The FLUX-family samplers share one core; ``snapshots/mirage_pinned.npz`` holds what each case
produced (latents, the source latent, the region mask, the handover canvas, decoded pixels)
and ``snapshots/mirage_pinned.json`` the transformer calls, cells and boxes, so a refactor
that changes the numbers fails here. Floats are compared to 1e-4 (relative 1e-3), pixels to
one level of 255, the rest exactly. (The first version pinned sha256 digests of the bits;
they failed on the tenth session's machine, an AVX-512 CPU, at a commit whose CI had passed:
CPU kernels round differently from machine to machine.)
Run single-threaded. Regenerate (only for an intended change of the numbers) with
``python tests/test_mirage_pinned.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from agent.testing import make_test_image  # noqa: E402
from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY_CALL_KWARGS, tiny_pipeline  # noqa: E402
from tools.mirage.flux2 import MirageFlux2  # noqa: E402
from tools.mirage.flux_kontext import MirageKontext  # noqa: E402
from tools.mirage.regions import Region  # noqa: E402

LEFT = Region(instruction="make it red", box=Box(x1=0, y1=0, x2=64, y2=96))
MIDDLE = Region(instruction="make it blue", box=Box(x1=40, y1=16, x2=104, y2=80))
RIGHT = Region(instruction="add a hat", box=Box(x1=70, y1=10, x2=128, y2=90))


def _flux2(config_dir: str, **kw):
    def make():
        return MirageFlux2(tiny_pipeline(config_dir), text_encoder_out_layers=(1,), **kw)

    return make


def _kontext(**kw):
    def make():
        return MirageKontext(tiny_pipeline("FLUX.1-Kontext-dev"), **kw)

    return make


_L2 = TINY_CALL_KWARGS["FLUX.2-klein-4B"]["max_sequence_length"]
_LK = TINY_CALL_KWARGS["FLUX.1-Kontext-dev"]["max_sequence_length"]

#: name -> (sampler factory, regions, call options)
CASES = {
    "klein-3-regions": (
        _flux2("FLUX.2-klein-4B"),
        [LEFT, MIDDLE, RIGHT],
        {"guidance_scale": 1.0, "max_sequence_length": _L2},
    ),
    "klein-zero-regions": (
        _flux2("FLUX.2-klein-4B"),
        [],
        {"guidance_scale": 1.0, "max_sequence_length": _L2},
    ),
    "klein-rho1-no-bg-reset": (
        _flux2("FLUX.2-klein-4B"),
        [LEFT, RIGHT],
        {"rho": 1.0, "background_replacement": False, "max_sequence_length": _L2},
    ),
    "klein-base-cfg": (
        _flux2("FLUX.2-klein-base-4B"),
        [LEFT, MIDDLE],
        {"guidance_scale": 4.0, "max_sequence_length": _L2},
    ),
    "klein-base-cfg-unbatched-short-branch": (
        _flux2("FLUX.2-klein-base-4B", batch_cfg=False, max_batch=1, branch_max_sequence_length=16),
        [LEFT, MIDDLE, RIGHT],
        {"guidance_scale": 4.0, "max_sequence_length": _L2},
    ),
    "dev-guidance": (
        _flux2("FLUX.2-dev"),
        [MIDDLE, RIGHT],
        {"guidance_scale": 3.0, "max_sequence_length": _L2, "target_replacement": False},
    ),
    "kontext-3-regions": (
        _kontext(),
        [LEFT, MIDDLE, RIGHT],
        {"guidance_scale": 2.5, "max_sequence_length": _LK},
    ),
    "kontext-true-cfg": (
        _kontext(),
        [LEFT, RIGHT],
        {"true_cfg_scale": 2.0, "negative_prompt": "blurry", "max_sequence_length": _LK},
    ),
    "kontext-true-cfg-unbatched-short-branch": (
        _kontext(batch_cfg=False, branch_max_sequence_length=8),
        [MIDDLE, RIGHT],
        {"true_cfg_scale": 2.0, "negative_prompt": "blurry", "max_sequence_length": _LK},
    ),
    "kontext-zero-regions": (_kontext(), [], {"max_sequence_length": _LK}),
}

SNAPSHOT = Path(__file__).parent / "snapshots" / "mirage_pinned"


def _outputs(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, the JSON part) of case ``name``, run single-threaded."""
    make, regions, options = CASES[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = make()(
            make_test_image(128, 96),
            "edit the things",
            regions,
            num_inference_steps=4,
            seed=5,
            keep_intermediates=True,
            **options,
        )
    finally:
        torch.set_num_threads(threads)
    arrays = {
        "latents": out.latents.detach().float().cpu().numpy(),
        "source_latent": out.source_latent.detach().float().cpu().numpy(),
        "image": np.asarray(out.image),
        "region_mask": out.region_mask.numpy(),
    }
    if out.handover:
        arrays["handover"] = out.handover["canvas"].detach().float().cpu().numpy()
    rest = {
        "calls": [dict(c) for c in out.calls],
        "cells": [[c.x1, c.y1, c.x2, c.y2] for c in out.cells],
        "boxes": out.boxes,
    }
    return arrays, json.loads(json.dumps(rest, sort_keys=True))


@pytest.mark.parametrize("name", list(CASES))
def test_mirage_output_is_pinned(name):
    arrays, rest = _outputs(name)
    pinned = np.load(SNAPSHOT.with_suffix(".npz"))
    keys = sorted(k.split("/", 1)[1] for k in pinned.files if k.startswith(f"{name}/"))
    assert sorted(arrays) == keys
    for key, value in arrays.items():
        expected = pinned[f"{name}/{key}"]
        assert value.shape == expected.shape and value.dtype == expected.dtype, key
        if value.dtype == np.uint8:
            assert np.abs(value.astype(int) - expected.astype(int)).max() <= 1, key
        elif np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(value, expected, rtol=1e-3, atol=1e-4, err_msg=key)
        else:
            np.testing.assert_array_equal(value, expected, err_msg=key)
    assert rest == json.loads(SNAPSHOT.with_suffix(".json").read_text())[name]


if __name__ == "__main__":
    everything, parts = {}, {}
    for case in CASES:
        arrays, parts[case] = _outputs(case)
        everything.update({f"{case}/{k}": v for k, v in arrays.items()})
    np.savez_compressed(SNAPSHOT.with_suffix(".npz"), **everything)
    SNAPSHOT.with_suffix(".json").write_text(json.dumps(parts, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}.npz and .json ({len(CASES)} cases)")
