"""MIRAGE vs the plain FLUX.2 pipeline: denoising time, transformer calls, tokens, peak memory.

Real-size architecture from tools/model_configs with random bf16 weights (timing only: the
images are noise). Everything is measured in one run, so the ratios compare like with like.

    python benchmarks/mirage_speed.py --config FLUX.2-klein-base-9B --size 1024 --steps 50 \
        --guidance 4 --regions 1,3,5 --json out.json

Denoising time runs from the first transformer call to the end of the last (CUDA-synchronised
forward hooks, identical for both samplers); text encoding, VAE encode and decode are reported
apart. Peak memory is the most allocated during a run, above the resident weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

# Boxes (pixel XYXY at 1024^2) of realistic instance sizes: a row of objects, as in MIRA-Bench.
LAYOUTS = {
    1: [(384, 320, 640, 650)],
    3: [(64, 320, 320, 650), (384, 320, 640, 650), (704, 320, 960, 650)],
    5: [
        (20, 340, 200, 640),
        (222, 340, 402, 640),
        (424, 340, 604, 640),
        (626, 340, 806, 640),
        (828, 340, 1008, 640),
    ],
}


class CallMeter:
    """Counts transformer calls and tokens; times first call start to last call end."""

    def __init__(self, module, cuda: bool) -> None:
        import torch

        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.reset()
        module.register_forward_pre_hook(self._pre, with_kwargs=True)
        module.register_forward_hook(self._post, with_kwargs=True)

    def reset(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.first = self.last = None

    def _pre(self, module, args, kwargs):
        h, e = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        self.calls.append((h.shape[0], h.shape[1] + e.shape[1]))
        if self.first is None:
            self.sync()
            self.first = time.perf_counter()

    def _post(self, module, args, kwargs, out):
        self.sync()
        self.last = time.perf_counter()

    @property
    def denoise_s(self) -> float:
        return (self.last - self.first) if self.first is not None else 0.0

    def summary(self) -> dict:
        shapes: dict[str, int] = {}
        for b, t in self.calls:
            shapes[f"{b}x{t}"] = shapes.get(f"{b}x{t}", 0) + 1
        return {
            "calls": len(self.calls),
            "token_rows": sum(b * t for b, t in self.calls),
            "shapes": shapes,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="FLUX.2-klein-base-9B")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--rho", type=float, default=0.6)
    ap.add_argument("--regions", default="1,3,5")
    ap.add_argument("--sequential", default="3", help="region counts also run one branch per call")
    ap.add_argument(
        "--branch-text",
        type=int,
        default=0,
        help="also run with region prompts padded to this many tokens (0: skip)",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--tiny", action="store_true", help="tiny random model on the CPU: checks the script"
    )
    args = ap.parse_args()

    import torch
    from PIL import Image

    from agent.testing import make_test_image
    from tools.contracts import Box
    from tools.editors import editor_for_pipeline
    from tools.editors.tiny import build_from_configs
    from tools.mirage.regions import Region

    cuda = torch.cuda.is_available() and not args.tiny
    dev = torch.cuda.get_device_name() if cuda else "CPU (tiny model; script check only)"
    t0 = time.perf_counter()
    call_kwargs: dict = {}
    if args.tiny:
        from tools.editors.tiny import TINY, TINY_CALL_KWARGS

        config = args.config.replace("-9B", "-4B")
        pipe = build_from_configs(config, "float32", "cpu", overrides=TINY[config], seed=0)
        call_kwargs = dict(TINY_CALL_KWARGS[config])
    else:
        pipe = build_from_configs(args.config, "bfloat16", "cuda", seed=0)
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t0
    mem = (lambda: torch.cuda.memory_allocated()) if cuda else (lambda: 0)
    peak = (lambda: torch.cuda.max_memory_allocated()) if cuda else (lambda: 0)
    weights_gib = mem() / 2**30
    meter = CallMeter(pipe.transformer, cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    image = make_test_image(args.size, args.size).resize((args.size, args.size), Image.BILINEAR)
    scale = args.size / 1024
    prompt = "make the leftmost statue marble, turn the middle one gold and the rightmost one red"

    def regions(k: int) -> list[Region]:
        return [
            Region(
                instruction=f"edit number {i}",
                box=Box(x1=int(a * scale), y1=int(b * scale), x2=int(c * scale), y2=int(d * scale)),
            )
            for i, (a, b, c, d) in enumerate(LAYOUTS[k])
        ]

    def measure(name: str, fn) -> dict:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = mem()
        meter.reset()
        t = time.perf_counter()
        extra = fn() or {}
        sync()
        total = time.perf_counter() - t
        row = {
            "variant": name,
            "total_s": total,
            "denoise_s": meter.denoise_s,
            "peak_extra_gib": (peak() - base) / 2**30,
            **meter.summary(),
            **extra,
        }
        print(
            f"  {name}: denoise {row['denoise_s']:.2f} s, total {total:.2f} s, "
            f"{row['calls']} calls {row['shapes']}",
            flush=True,
        )
        return row

    # The family's editor, chosen by the pipeline's type: its plain-call guidance arguments and
    # its MIRAGE sampler (the editor declares both; nothing here names a family).
    editor = editor_for_pipeline(pipe, call_kwargs=call_kwargs)
    plain_guidance = {
        k: v
        for k, v in editor._call_kwargs(
            pipe, image, prompt, args.steps, args.guidance, args.size, args.size
        ).items()
        if k not in ("height", "width")
    }
    if (
        "_auto_resize" in plain_guidance
    ):  # keep the reference at the generation size, as MIRAGE does
        plain_guidance["_auto_resize"] = False

    def make_sampler(max_batch: int, branch_len: int | None):
        options = {"max_batch": max_batch}
        if branch_len is not None:  # not every family pads its prompts (Qwen does not)
            options["branch_max_sequence_length"] = branch_len
        return editor.mirage_sampler(**options)

    def plain(steps: int):
        def run():
            pipe(
                image=image,
                prompt=prompt,
                num_inference_steps=steps,
                height=args.size,
                width=args.size,
                generator=torch.Generator().manual_seed(0),
                output_type="pil",
                **plain_guidance,
                **call_kwargs,
            )

        return run

    def mirage(k: int, steps: int, max_batch: int = 8, branch_len: int | None = None):
        sampler, extra = make_sampler(max_batch, branch_len)

        def run():
            out = sampler(
                image,
                prompt,
                regions(k),
                rho=args.rho,
                num_inference_steps=steps,
                seed=0,
                guidance_scale=args.guidance,
                **extra,
            )
            return {
                "phases_s": {k2: round(v, 3) for k2, v in out.timings.items()},
                "cells": [list(c.shape) for c in out.cells],
            }

        return run

    print(
        f"{dev}: {args.config} built in {build_s:.1f} s, {weights_gib:.1f} GiB of weights",
        flush=True,
    )
    measure("warm-up plain", plain(2))
    measure("warm-up mirage", mirage(3, 3))
    rows = [measure("plain pipeline", plain(args.steps))]
    counts = [int(x) for x in args.regions.split(",") if x]
    sequential = {int(x) for x in args.sequential.split(",") if x}
    for k in counts:
        rows.append(measure(f"MIRAGE {k} region{'s' * (k > 1)} (batched)", mirage(k, args.steps)))
        if k in sequential and k > 1:
            rows.append(
                measure(
                    f"MIRAGE {k} regions (one branch per call)", mirage(k, args.steps, max_batch=1)
                )
            )
        if args.branch_text:
            rows.append(
                measure(
                    f"MIRAGE {k} region{'s' * (k > 1)} (batched, branch text {args.branch_text})",
                    mirage(k, args.steps, branch_len=args.branch_text),
                )
            )

    ref = rows[0]["denoise_s"]
    print(
        f"\n{dev}, {args.config} (random bf16 weights), {args.size}x{args.size}, "
        f"{args.steps} steps, guidance {args.guidance}, rho {args.rho}\n"
    )
    print(
        "| variant | denoise s | vs plain | transformer calls | token rows | total s "
        "| peak above weights GiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['denoise_s']:.2f} | {r['denoise_s'] / ref:.2f}x "
            f"| {r['calls']} | {r['token_rows']:,} | {r['total_s']:.2f} "
            f"| {r['peak_extra_gib']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": dev,
                    "args": vars(args),
                    "build_s": build_s,
                    "weights_gib": weights_gib,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
