"""FLUX.2-only MIRAGE behaviour on tiny random pipelines (region geometry, batching, ablations).

The invariants every sampler family keeps are tests/test_contract_mirage.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY_CALL_KWARGS, tiny_pipeline  # noqa: E402
from tools.mirage.flux2 import MirageFlux2  # noqa: E402
from tools.mirage.regions import CellBox, Region, batch_by_shape, owner_map, snap_box  # noqa: E402

KLEIN, BASE, DEV = "FLUX.2-klein-4B", "FLUX.2-klein-base-4B", "FLUX.2-dev"
STEPS = 4


def sampler(family: str, **kw) -> MirageFlux2:
    return MirageFlux2(tiny_pipeline(family), text_encoder_out_layers=(1,), **kw)


def run(m: MirageFlux2, image, regions, **kw):
    kw = {
        "num_inference_steps": STEPS,
        "guidance_scale": 4.0,
        "seed": 3,
        "max_sequence_length": TINY_CALL_KWARGS[KLEIN]["max_sequence_length"],
        **kw,
    }
    return m(image, "edit the things", regions, **kw)


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(128, 192, 3) * 255).astype(np.uint8))


def R(x1, y1, x2, y2, text="make it red"):
    return Region(instruction=text, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


THREE = [R(10, 10, 60, 50), R(40, 30, 120, 100, "make it blue"), R(150, 90, 170, 100, "add a hat")]


# -- geometry ---------------------------------------------------------------------------------
def test_snap_box_outward_minimum_and_edges():
    grid = (8, 12)  # rows, cols of 16 px
    assert snap_box(Box(x1=17, y1=17, x2=95, y2=80), cell=16, grid=grid) == CellBox(1, 1, 6, 5)
    # smaller than 4 cells: grown around its centre
    assert snap_box(Box(x1=70, y1=70, x2=80, y2=75), cell=16, grid=grid) == CellBox(3, 3, 7, 7)
    # at the right/bottom edge: shifted inward, not clipped
    assert snap_box(Box(x1=185, y1=120, x2=192, y2=128), cell=16, grid=grid) == CellBox(8, 4, 12, 8)
    # at the left/top edge
    assert snap_box(Box(x1=0, y1=0, x2=5, y2=5), cell=16, grid=grid) == CellBox(0, 0, 4, 4)
    # canvas smaller than the minimum: the whole side
    assert snap_box(Box(x1=0, y1=0, x2=5, y2=5), cell=16, grid=(2, 3)) == CellBox(0, 0, 3, 2)
    with pytest.raises(ValueError, match="outside"):
        snap_box(Box(x1=400, y1=0, x2=500, y2=5), cell=16, grid=grid)


def test_owner_map_larger_strength_wins_per_cell():
    a, b = CellBox(0, 0, 3, 2), CellBox(2, 0, 5, 2)  # overlap in column 2
    sa = torch.tensor([[1.0, 1.0, 5.0], [1.0, 1.0, 0.5]])
    sb = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    owner = owner_map([a, b], [sa, sb], (3, 6))
    assert owner[0].tolist() == [0, 0, 0, 1, 1, -1]  # a stronger at (0, 2)
    assert owner[1].tolist() == [0, 0, 1, 1, 1, -1]  # b stronger at (1, 2)
    assert owner[2].tolist() == [-1] * 6


def test_batches_by_shape_and_size():
    boxes = [CellBox(0, 0, 4, 4), CellBox(4, 0, 8, 4), CellBox(0, 4, 5, 8), CellBox(8, 4, 12, 8)]
    assert sorted(map(sorted, batch_by_shape(boxes, 8))) == [[0, 1, 3], [2]]
    assert sorted(map(sorted, batch_by_shape(boxes, 2))) == [[0, 1], [2], [3]]


# -- invariants -------------------------------------------------------------------------------
def test_overlap_goes_to_the_branch_that_edits_more(image):
    out = run(sampler(BASE), image, THREE[:2], keep_intermediates=True)
    a, b = out.cells
    overlap = (slice(max(a.y1, b.y1), min(a.y2, b.y2)), slice(max(a.x1, b.x1), min(a.x2, b.x2)))
    owners = set(out.handover["owner"][overlap].flatten().tolist())
    assert owners <= {0, 1} and len(out.handover["owner"][overlap].flatten()) > 0


def test_more_regions_than_one_batch(image):
    regions = [
        R(16 * i, 0, 16 * i + 30, 30, f"edit {i}") for i in range(0, 10, 2)
    ]  # 5 of 4x4 cells... mostly
    small = run(sampler(KLEIN, max_batch=2), image, regions)
    big = run(sampler(KLEIN, max_batch=8), image, regions)
    early_small = [c for c in small.calls if c["phase"] == "early"]
    early_big = [c for c in big.calls if c["phase"] == "early"]
    k = round(0.4 * STEPS)
    assert len(early_big) == k * len(batch_by_shape(big.cells, 8))
    assert len(early_small) == k * len(batch_by_shape(small.cells, 2)) > len(early_big)
    assert max(c["batch"] for c in early_small) <= 2
    diff = (small.latents - big.latents).abs().max().item()
    assert diff < 1e-4  # same computation, other batching


def test_ablations(image):
    m = sampler(KLEIN)
    no_bg = run(m, image, THREE, background_replacement=False)
    bg = ~no_bg.region_mask
    assert not torch.equal(no_bg.latents[:, :, bg], no_bg.source_latent[:, :, bg])
    no_target = run(m, image, THREE, target_replacement=False)
    assert all(c["phase"] == "late" for c in no_target.calls) and len(no_target.calls) == STEPS
    assert torch.equal(no_target.latents[:, :, bg], no_target.source_latent[:, :, bg])
