"""MIRAGE on the shipped micro editor with an oracle grounder, against the plain editor.

Multi-instance micro-world cases (2-3 edits, train-split language) from one seed split. Each
case is answered four ways, all scored by ``score_case`` against exact ground truth:

- ``AE round trip of the ground truth``: the ceiling (encode + decode the right answer);
- ``plain, whole instruction``: the editor, one call with the joined instruction;
- ``plain, atomic edits in sequence``: the editor once per atomic edit (oracle split), each
  call on the previous result;
- ``MIRAGE, oracle regions``: one MIRAGE call; region k = the ground-truth target box of edit
  k (its micro-world cell) with edit k's atomic phrasing as the branch text; the global branch
  gets the whole instruction.

Beside the scores it checks MIRAGE's background: in latent space every cell outside the
regions must end equal to the source latent x0 (exactly), and in pixels the output outside the
regions must equal the autoencoder's round trip of the source (``decode(x0)``) up to the
decoder's reach across region borders (reported per pixel ring around the regions).

    python benchmarks/mirage_micro.py --split test --n 48 --rho 0.75

Choices (rho, min cells) are made with ``--split validation``; the table in docs/mirage.md is
on test seeds. Times are only given as ratios to the plain whole-instruction call of the
same run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

#: Row names, in table order.
CEILING = "AE round trip of the ground truth (ceiling)"
PLAIN = "plain editor, whole instruction (1 call)"
SEQUENTIAL = "plain editor, atomic edits in sequence (oracle split)"
MIRAGE = "MIRAGE, oracle regions (1 call)"
LEARNED = "MIRAGE, learned parser + grounder (1 call)"
ROWS = (CEILING, PLAIN, SEQUENTIAL, MIRAGE)
#: Pixel rings (px) around the regions where the background check is reported.
RINGS = (0, 8, 16, 32)


@dataclass
class Background:
    """MIRAGE's background against the round trip of the source, for one case."""

    latent_equal: bool  # every cell outside the regions equals x0 exactly
    latent_max_diff: float
    #: ring (px beyond the snapped regions) -> (largest channel difference 0..255, fraction of
    #: those pixels that differ at all)
    pixels: dict[int, tuple[int, float]] = field(default_factory=dict)


@dataclass
class CaseResult:
    seed: int
    scores: dict[str, Any]  # row -> agent.microworld.scoring.Score
    seconds: dict[str, float]
    background: Background
    mirage_boxes: list[tuple[int, int, int, int]]  # MIRAGE's snapped regions, pixel XYXY
    regions_found: int | None = None  # LEARNED row: regions found, None when it failed


def load(
    model: str | None = None, *, min_cells: int = 2, dtype: str = "float32"
) -> tuple[Any, Any, dict[str, Any]]:
    """(editor, MIRAGE sampler on its pipeline, the sampler's call options)."""
    from agent.micro import micro_editor

    editor = micro_editor(dtype=dtype) if model is None else micro_editor(model=model, dtype=dtype)
    sampler, call = editor.mirage_sampler(min_cells=min_cells)
    return editor, sampler, call


def roundtrip(sampler: Any, image: Any) -> Any:
    """The autoencoder's round trip of ``image`` (encode, decode), as MIRAGE encodes it."""
    import torch

    with torch.no_grad():
        return sampler.decode(sampler._encode_image(image.convert("RGB")))


def regions_of(case: Any) -> list[Any]:
    """The oracle grounder: each edit's ground-truth target box with its atomic phrasing."""
    from agent.microworld.truth import target_box
    from tools.contracts import Box
    from tools.mirage.regions import Region

    return [
        Region(
            instruction=text,
            box=Box(**dict(zip(("x1", "y1", "x2", "y2"), target_box(case.scene, edit)))),
            expression=text,
        )
        for edit, text in zip(case.edits, case.atomic)
    ]


def background_check(out: Any, reference: Any) -> Background:
    """Compare MIRAGE's output ``out`` (a ``MirageOutput``) with ``reference`` = decode(x0)
    outside its snapped regions, grown by each of ``RINGS`` pixels."""
    import numpy as np

    outside_lat = ~out.region_mask.to(out.latents.device)
    d = (out.latents - out.source_latent).abs()[0].amax(0)  # (rows, cols)
    lat_max = float(d[outside_lat].max()) if bool(outside_lat.any()) else 0.0
    a = np.asarray(out.image.convert("RGB"), dtype=np.int16)
    b = np.asarray(reference.convert("RGB"), dtype=np.int16)
    diff = np.abs(a - b).max(-1)  # (H, W)
    h, w = diff.shape
    pixels = {}
    for ring in RINGS:
        inside = np.zeros((h, w), bool)
        for x1, y1, x2, y2 in out.boxes:
            inside[max(0, y1 - ring) : y2 + ring, max(0, x1 - ring) : x2 + ring] = True
        rest = diff[~inside]
        pixels[ring] = (int(rest.max()), float((rest > 0).mean())) if rest.size else (0, 0.0)
    return Background(latent_equal=lat_max == 0.0, latent_max_diff=lat_max, pixels=pixels)


def run_case(
    editor: Any,
    sampler: Any,
    call: dict[str, Any],
    case: Any,
    *,
    rho: float,
    seed: int = 0,
    rows: tuple[str, ...] = ROWS,
    regional: Any = None,
) -> CaseResult:
    """Answer ``case`` each way named in ``rows`` and score it (``MIRAGE`` always runs: the
    background check needs it). ``regional``: a ``RegionalEditor`` with a parser and a
    grounder for the ``LEARNED`` row; a case whose regions cannot be found (a recoverable
    parse or grounding error) scores the unedited source, as the failed call leaves it."""
    from agent.microworld.render import render
    from agent.microworld.scoring import score_case
    from agent.microworld.truth import intermediate

    source = render(case.scene)
    scores: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    if CEILING in rows:
        scores[CEILING] = score_case(case, roundtrip(sampler, intermediate(case)))
    if PLAIN in rows:
        t = time.perf_counter()
        image = editor.edit(source, case.instruction, seed=seed)
        seconds[PLAIN] = time.perf_counter() - t
        scores[PLAIN] = score_case(case, image)
    if SEQUENTIAL in rows:
        t = time.perf_counter()
        image = source
        for text in case.atomic:
            image = editor.edit(image, text, seed=seed)
        seconds[SEQUENTIAL] = time.perf_counter() - t
        scores[SEQUENTIAL] = score_case(case, image)
    t = time.perf_counter()
    out = sampler(
        source,
        case.instruction,
        regions_of(case),
        rho=rho,
        seed=seed,
        num_inference_steps=editor.num_inference_steps,
        guidance_scale=editor.guidance_scale,
        **call,
    )
    seconds[MIRAGE] = time.perf_counter() - t
    scores[MIRAGE] = score_case(case, out.image)
    found = None
    if LEARNED in rows and regional is not None:
        from tools.errors import RecoverableToolError

        t = time.perf_counter()
        try:
            regions, _ = regional.find_regions(source, case.instruction)
            found = len(regions)
            image = sampler(
                source,
                case.instruction,
                regions,
                rho=rho,
                seed=seed,
                num_inference_steps=editor.num_inference_steps,
                guidance_scale=editor.guidance_scale,
                **call,
            ).image
        except RecoverableToolError:
            image = source
        seconds[LEARNED] = time.perf_counter() - t
        scores[LEARNED] = score_case(case, image)
    background = background_check(out, sampler.decode(out.source_latent))
    return CaseResult(
        seed=case.seed,
        scores=scores,
        seconds=seconds,
        background=background,
        mirage_boxes=list(out.boxes),
        regions_found=found,
    )


def cases(split: str, n: int, *, offset: int = 0) -> list[Any]:
    """``n`` cases of 2-3 edits with train-split language from the first seeds of ``split``."""
    from agent.microworld.splits import seeds
    from agent.microworld.truth import make_case

    return [
        make_case(s, n_edits=(2, 3), language="train")
        for s in seeds(split, n, offset=offset)  # type: ignore[arg-type]
    ]


def table(results: list[CaseResult], rows: tuple[str, ...] = ROWS) -> str:
    """The Markdown table: one line per row that ran."""
    lines = [
        "| answer | cases | success strict | success tolerant | edits right | changed outside "
        "targets | PSNR outside targets (dB) | time vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    plain_s = sum(r.seconds.get(PLAIN, 0.0) for r in results)
    for row in rows:
        got = [r.scores[row] for r in results if row in r.scores]
        if not got:
            continue
        n = len(got)
        n_edits = sum(len(s.edits) for s in got)
        right = sum(e.passed for s in got for e in s.edits)
        ratio = "-"
        if plain_s > 0 and all(row in r.seconds for r in results):
            ratio = f"{sum(r.seconds[row] for r in results) / plain_s:.2f}x"
        lines.append(
            f"| {row} | {n} | {sum(s.success_strict for s in got) / n:.3f} "
            f"| {sum(s.success_tolerant for s in got) / n:.3f} "
            f"| {right / n_edits:.3f} ({right}/{n_edits}) "
            f"| {100 * sum(s.changed_fraction for s in got) / n:.3f}% "
            f"| {sum(s.psnr for s in got) / n:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def background_summary(results: list[CaseResult]) -> str:
    """One line per check: latent equality, then pixels per ring around the regions."""
    n = len(results)
    bg = [r.background for r in results]
    lines = [
        f"- latent cells outside the regions equal to the source latent x0: "
        f"{sum(b.latent_equal for b in bg)}/{n} cases "
        f"(largest difference {max(b.latent_max_diff for b in bg):.3g})"
    ]
    for ring in RINGS:
        worst = max(b.pixels[ring][0] for b in bg)
        frac = sum(b.pixels[ring][1] for b in bg) / n
        exact = sum(b.pixels[ring][0] == 0 for b in bg)
        where = "outside the regions" if ring == 0 else f"more than {ring} px from the regions"
        lines.append(
            f"- pixels {where} vs decode(x0): identical in {exact}/{n} cases; "
            f"largest difference {worst}/255; {100 * frac:.3f}% of those pixels differ"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", default="test", choices=("validation", "test"))
    p.add_argument("--n", type=int, default=48, help="cases per row")
    p.add_argument("--offset", type=int, default=0, help="skip this many seeds of the split")
    p.add_argument("--rho", type=float, nargs="+", default=[0.75], help="one or more values")
    p.add_argument("--min-cells", type=int, default=2, help="least region side, latent cells")
    p.add_argument("--seed", type=int, default=0, help="noise seed of every call")
    p.add_argument("--model", default=None, help="a micro editor folder (default: shipped)")
    p.add_argument("--dtype", default="float32", help="compute dtype (the weights are bf16)")
    p.add_argument("--mirage-only", action="store_true", help="only the MIRAGE row")
    p.add_argument(
        "--vlm",
        default=None,
        help="a micro VLM folder (mira-train vlm): adds the row with its parser and grounder",
    )
    args = p.parse_args(argv)
    editor, sampler, call = load(args.model, min_cells=args.min_cells, dtype=args.dtype)
    regional = None
    if args.vlm is not None:
        from agent.train.vlm import GROUNDER_ADAPTER, load_folder
        from tools.mirage.parse import VLMInstructionParser
        from tools.mirage.tool import RegionalEditor
        from tools.vlm.grounder import QwenVLGrounder

        vlm = load_folder(args.vlm, grounder=True)[0]
        vlm.model.eval()
        # the folder's grounder adapter when it has one, as the micro-grounder backend
        adapter = GROUNDER_ADAPTER if GROUNDER_ADAPTER in vlm.adapters else None
        regional = RegionalEditor(
            sampler,
            parser=VLMInstructionParser(vlm, retries=0),
            grounder=QwenVLGrounder(vlm, retries=0, adapter=adapter),
        )
    todo = cases(args.split, args.n, offset=args.offset)
    n_edits = sum(len(c.edits) for c in todo)
    print(
        f"{len(todo)} {args.split} cases (seeds {todo[0].seed}..{todo[-1].seed}, 2-3 edits, "
        f"{n_edits} edits, train-split language), {editor.num_inference_steps} steps, "
        f"min_cells {args.min_cells}, {args.dtype}, noise seed {args.seed}\n"
    )
    for rho in args.rho:
        rows = (MIRAGE,) if args.mirage_only else ROWS
        if regional is not None:
            rows = (*rows, LEARNED)
        results = [
            run_case(
                editor, sampler, call, c, rho=rho, seed=args.seed, rows=rows, regional=regional
            )
            for c in todo
        ]
        print(f"rho = {rho} (early phase {round((1 - rho) * editor.num_inference_steps)} steps)\n")
        print(table(results, rows))
        print("\nMIRAGE background:\n" + background_summary(results) + "\n")
        if regional is not None:
            failed = sum(r.regions_found is None for r in results)
            print(
                f"learned parser + grounder: regions not found in {failed}/{len(results)} cases\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
