"""benchmarks/mirage_micro.py: MIRAGE with oracle regions on the shipped micro editor keeps the
background on the source's autoencoder round trip, and the table has its rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "mirage_micro", ROOT / "benchmarks/mirage_micro.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _fake_output(shift_outside: float, shift_pixels: int):  # type: ignore[no-untyped-def]
    """A MirageOutput on a 4x4-cell (64 px) canvas with one region in the top-left 2x2 cells."""
    import torch
    from PIL import Image

    from tools.mirage._base import MirageOutput
    from tools.mirage.regions import CellBox

    x0 = torch.zeros(1, 3, 4, 4)
    lat = x0.clone()
    lat[:, :, :2, :2] = 1.0  # the edit, inside the region
    lat[:, :, 3, 3] += shift_outside
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    ref = np.full((64, 64, 3), 100, np.uint8)
    img = ref.copy()
    img[:32, :32] = 200  # inside: free to differ
    img[60:, 60:] += np.uint8(shift_pixels)
    out = MirageOutput(
        image=Image.fromarray(img),
        cells=[CellBox(0, 0, 2, 2)],
        boxes=[(0, 0, 32, 32)],
        latents=lat,
        source_latent=x0,
        region_mask=mask,
    )
    return out, Image.fromarray(ref)


def test_background_check_sees_latent_and_pixel_changes_outside_the_regions() -> None:
    out, ref = _fake_output(0.0, 0)
    bg = bench.background_check(out, ref)
    assert bg.latent_equal and bg.latent_max_diff == 0.0
    assert all(bg.pixels[r] == (0, 0.0) for r in bench.RINGS)

    out, ref = _fake_output(0.5, 7)
    bg = bench.background_check(out, ref)
    assert not bg.latent_equal and bg.latent_max_diff == pytest.approx(0.5)
    worst, frac = bg.pixels[0]
    assert worst == 7 and frac == pytest.approx(16 / (64 * 64 - 32 * 32))
    assert bg.pixels[16][0] == 7  # the corner lies more than 16 px from the region
    assert bg.pixels[32] == (0, 0.0)  # grown by 32 px the region covers the whole canvas


def test_one_test_case_keeps_the_background_and_fills_every_row() -> None:
    """The script's core on one test-seed case with the shipped editor: MIRAGE edits exactly
    the target cells, every latent cell outside them ends on the source latent, the decoded
    background stays within the scorer's tolerance of the source's round trip, and the table
    has a line per row."""
    from agent.microworld.scoring import Thresholds
    from agent.microworld.splits import seeds
    from agent.microworld.truth import make_case, target_box

    editor, sampler, call = bench.load(dtype="bfloat16")
    case = make_case(seeds("test", 1)[0], n_edits=2, language="train")
    result = bench.run_case(editor, sampler, call, case, rho=0.75)

    assert result.mirage_boxes == [target_box(case.scene, e) for e in case.edits]
    assert result.background.latent_equal
    worst, _ = result.background.pixels[0]
    assert worst < Thresholds().tol
    assert set(result.scores) == set(bench.ROWS)
    assert result.scores[bench.CEILING].edits_passed == 1.0  # the round trip of the answer

    text = bench.table([result])
    lines = text.splitlines()
    assert len(lines) == 2 + len(bench.ROWS)
    for row, line in zip(bench.ROWS, lines[2:]):
        assert line.startswith(f"| {row} | 1 |")
    summary = bench.background_summary([result])
    assert "equal to the source latent x0: 1/1 cases" in summary


def test_learned_row_finds_regions_with_a_parser_and_grounder_or_leaves_the_source() -> None:
    """The ``--vlm`` row runs the RegionalEditor's parse-and-ground path: with a parser and a
    grounder that return the truth it edits like the oracle row; when grounding fails, the
    case scores the unedited source (what the failed call leaves) and is counted as not found."""
    from agent.microworld.render import render
    from agent.microworld.scoring import score_case
    from agent.microworld.splits import seeds
    from agent.microworld.truth import make_case, target_box
    from tools.contracts import Box, Grounding
    from tools.errors import GroundingError
    from tools.mirage.parse import StaticParser
    from tools.mirage.tool import RegionalEditor

    editor, sampler, call = bench.load(dtype="bfloat16")
    case = make_case(seeds("test", 1)[0], n_edits=2, language="train")
    boxes = {text: target_box(case.scene, e) for e, text in zip(case.edits, case.atomic)}

    class TruthGrounder:
        def ground(self, image, expression):  # type: ignore[no-untyped-def]
            x1, y1, x2, y2 = boxes[expression]
            return Grounding(expression=expression, boxes=[Box(x1=x1, y1=y1, x2=x2, y2=y2)])

    class NoGrounder:
        def ground(self, image, expression):  # type: ignore[no-untyped-def]
            raise GroundingError(f"nothing for {expression!r}", tool="grounder")

    parser = StaticParser([(text, text) for text in case.atomic])
    rows = (bench.MIRAGE, bench.LEARNED)
    good = RegionalEditor(sampler, parser=parser, grounder=TruthGrounder())
    result = bench.run_case(editor, sampler, call, case, rho=0.75, rows=rows, regional=good)
    assert result.regions_found == len(case.edits)
    assert result.scores[bench.LEARNED] == result.scores[bench.MIRAGE]
    bad = RegionalEditor(sampler, parser=parser, grounder=NoGrounder())
    result = bench.run_case(editor, sampler, call, case, rho=0.75, rows=rows, regional=bad)
    assert result.regions_found is None
    assert result.scores[bench.LEARNED] == score_case(case, render(case.scene))
