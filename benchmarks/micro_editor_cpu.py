"""The shipped micro editor on this machine's CPU: load time and seconds per edit.

One edit = the real ``Flux2KleinEditor.edit`` call on a 224 px micro-world scene (text
encoding, VAE encode, N Euler steps of the transformer, VAE decode). Every row is measured in
the same run, after one warm-up edit; the table gives the median of ``--repeat`` edits.

    python benchmarks/micro_editor_cpu.py --steps 8,4 --repeat 5 [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="8,4", help="comma-separated step counts (default: 8,4)")
    p.add_argument("--repeat", type=int, default=5, help="timed edits per row (default: 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    if args.repeat < 1 or any(s < 1 for s in steps):
        p.error(f"--repeat and --steps must be >= 1, got {args.repeat!r} and {args.steps!r}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from agent.micro import micro_editor
    from agent.microworld.render import render
    from agent.microworld.splits import seeds
    from agent.microworld.truth import make_case

    case = make_case(seeds("test", 1)[0], n_edits=1, language="train")
    image, text = render(case.scene), case.atomic[0]
    t = time.perf_counter()
    editor = micro_editor()
    editor.edit(image, text, seed=0, num_inference_steps=1)  # loads the pipeline, warms up
    load = time.perf_counter() - t
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; load + first 1-step edit {load:.2f} s"
    )
    print("\n| steps | s per edit (median) | min | max |\n|---:|---:|---:|---:|")
    for n in steps:
        times = []
        for i in range(args.repeat):
            t = time.perf_counter()
            editor.edit(image, text, seed=i, num_inference_steps=n)
            times.append(time.perf_counter() - t)
        print(f"| {n} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
