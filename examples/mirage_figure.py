"""Draw one MIRAGE run's regions: requested boxes, snapped latent cells, and which branch owns
each cell at the handover (docs/mirage_regions.png).

    python examples/mirage_figure.py --out docs/mirage_regions.png

The scene is a micro-world case (3 edits, exact target boxes); the sampler is a tiny random
FLUX.2 [klein] base, so the geometry and ownership are real and the pixels are not shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLOURS = [(230, 60, 60), (40, 120, 230), (40, 170, 80), (230, 150, 30), (150, 60, 200)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/mirage_regions.png")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from PIL import Image, ImageDraw

    from agent.microworld import make_case, render, target_box
    from tools.contracts import Box
    from tools.editors.tiny import TINY_CALL_KWARGS, tiny_pipeline
    from tools.mirage.flux2 import MirageFlux2
    from tools.mirage.regions import Region

    case = make_case(args.seed, n_edits=3, size=512)
    source = render(case.scene)
    regions = [
        Region(
            instruction=text,
            box=Box(**dict(zip(("x1", "y1", "x2", "y2"), target_box(case.scene, e)))),
        )
        for e, text in zip(case.edits, case.atomic)
    ]
    family = "FLUX.2-klein-base-4B"
    sampler = MirageFlux2(tiny_pipeline(family), text_encoder_out_layers=(1,))
    out = sampler(
        source,
        case.instruction,
        regions,
        rho=0.6,
        num_inference_steps=10,
        seed=0,
        max_sequence_length=TINY_CALL_KWARGS[family]["max_sequence_length"],
        keep_intermediates=True,
    )
    cell = sampler.cell

    # (a) the source with requested boxes (thin) and snapped cell boxes (thick)
    left = source.copy()
    draw = ImageDraw.Draw(left)
    for k, (r, c) in enumerate(zip(regions, out.cells)):
        colour = COLOURS[k % len(COLOURS)]
        draw.rectangle(r.box.as_tuple(), outline=colour, width=1)
        px = c.to_pixels(cell).as_tuple()
        draw.rectangle((px[0], px[1], px[2] - 1, px[3] - 1), outline=colour, width=3)
        draw.text((px[0] + 4, px[1] + 2), f"{k + 1}", fill=colour)

    # (b) owner of each 16-px latent cell at the handover; grey cells are background, reset to
    #     the source's noisy trajectory after every late step
    owner = out.handover["owner"]
    right = Image.new("RGB", source.size, (255, 255, 255))
    draw = ImageDraw.Draw(right)
    rows, cols = owner.shape
    for y in range(rows):
        for x in range(cols):
            k = int(owner[y, x])
            fill = (200, 200, 200) if k < 0 else COLOURS[k % len(COLOURS)]
            draw.rectangle((x * cell, y * cell, (x + 1) * cell - 2, (y + 1) * cell - 2), fill=fill)

    pad, caption = 12, 70
    sheet = Image.new(
        "RGB", (2 * source.width + 3 * pad, source.height + 2 * pad + caption), "white"
    )
    sheet.paste(left, (pad, pad))
    sheet.paste(right, (2 * pad + source.width, pad))
    draw = ImageDraw.Draw(sheet)
    y = source.height + 2 * pad
    draw.text(
        (pad, y), "(a) target boxes (thin) and the latent cells MIRAGE edits (thick)", fill="black"
    )
    draw.text(
        (2 * pad + source.width, y),
        "(b) owner of each 16-px cell at the handover; grey = background",
        fill="black",
    )
    for k, text in enumerate(case.atomic):
        draw.text((pad, y + 16 + 14 * k), f"{k + 1}. {text}", fill=COLOURS[k % len(COLOURS)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}; cells {[(c.x1, c.y1, c.x2, c.y2) for c in out.cells]}")


if __name__ == "__main__":
    main()
