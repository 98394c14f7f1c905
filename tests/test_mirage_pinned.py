"""MIRAGE outputs on the tiny FLUX.2 and Kontext models, pinned bit for bit.

The FLUX-family samplers share one core; this file holds the sha256 of what each produced
before they did (latents, decoded pixels, transformer calls), so a refactor that changes a
single bit fails here. Run single-threaded: CPU reductions may round differently with
another thread count. Regenerate (only for an intended change of the numbers) with
``python tests/test_mirage_pinned.py``, which prints the table.
"""

from __future__ import annotations

import hashlib
import json

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

EXPECTED = {
    "klein-3-regions": "42d96d363f5136b875b9aefe5a6b5e38f3807188f4b90c9ad80469471ae36fe0",
    "klein-zero-regions": "5028b998fa3b0ed5d3748b4755fb5b92fc0a812677867836bd48e338ad4d0879",
    "klein-rho1-no-bg-reset": "b6d7e197fc2e361ad9677df99eb7622d1bf2f9a14b210c0e9831aee68e955390",
    "klein-base-cfg": "0f5f8ac30bb7848f90437c5fe32ce7d359ce36ef7ff6f4513ce95e38e51d9e66",
    "klein-base-cfg-unbatched-short-branch": "0c41d63c49e2dffda7f31d051259e89871bdf4ecd31511548846eac1f505a623",
    "dev-guidance": "7e6b1acf1473a048f592701495cf3b32e52838d5b18f91b1c58691eaede2cb84",
    "kontext-3-regions": "b58706900e81a48a66c30075c8438bc23fc3bcfdad03fd7979985da21995186c",
    "kontext-true-cfg": "7371ce617a73f6c68869f6b5d8954770bdc47bc25bf8b02db1938fe1745d739a",
    "kontext-true-cfg-unbatched-short-branch": "64aa5d1e123cc8f506127c6412a4922119ad12019f919b8ffffc6ac9a683cdaf",
    "kontext-zero-regions": "461bf7e119d0a93e17f86b5b6400590d44fb93b9645deed9e7be8a4288c1ebbd",
}


def _digest(name: str) -> str:
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
    h = hashlib.sha256()
    h.update(out.latents.detach().float().cpu().numpy().tobytes())
    h.update(out.source_latent.detach().float().cpu().numpy().tobytes())
    h.update(np.asarray(out.image).tobytes())
    h.update(out.region_mask.numpy().tobytes())
    if out.handover:
        h.update(out.handover["canvas"].detach().float().cpu().numpy().tobytes())
    calls = [{k: v for k, v in c.items()} for c in out.calls]
    h.update(
        json.dumps(
            {
                "calls": calls,
                "cells": [[c.x1, c.y1, c.x2, c.y2] for c in out.cells],
                "boxes": out.boxes,
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


@pytest.mark.parametrize("name", list(CASES))
def test_mirage_output_is_pinned(name):
    assert _digest(name) == EXPECTED[name]


if __name__ == "__main__":
    for case in CASES:
        print(f"    {case!r}: {_digest(case)!r},")
