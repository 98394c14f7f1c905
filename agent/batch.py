"""``mira-batch``: edit a folder of images, in one process or over a Ray cluster.

    mira-batch IN_DIR --out OUT_DIR [--preset NAME] [--strategy mira|mirage|mira+mirage]
               [--max-steps N] [--seed N] [--budget N] [--ray [ADDRESS]] [--ray-workers N]
               [--quiet]

``IN_DIR`` holds ``X.png`` (or ``.jpg``/``.webp``) with its instruction in ``X.txt``, as a
``mira-bench`` folder dataset. Each result is written to ``OUT_DIR/X.png``; the records (trace,
stop reason, timings) go to ``OUT_DIR/results.jsonl`` as each finishes, so a rerun of the same
command skips what is done. ``--ray`` spreads the images over Ray actors, one per GPU (or CPU
slot), each loading its models once (``agent/distributed.py``).

Exit status: 0 done; 2 a bad option; 130 interrupted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import bench
from agent.config import PRESETS

__all__ = ["main", "build_parser"]

PROG = "mira-batch"
#: mira-batch's strategy -> the mira-bench row that runs it.
_ROWS = {"mira": "agent", "mirage": "mirage", "mira+mirage": "mira+mirage"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Edit every image of a folder.")
    p.add_argument("input", metavar="IN_DIR", help="folder of X.png + X.txt (the instruction)")
    p.add_argument("--out", metavar="OUT_DIR", required=True, help="folder of the results")
    p.add_argument("--preset", choices=sorted(PRESETS), default="dry-run")
    p.add_argument("--strategy", choices=sorted(_ROWS), default="mira")
    p.add_argument("--max-steps", type=int, default=None, help="AgentConfig.max_steps")
    p.add_argument("--seed", type=int, default=0, help="base seed of the edits")
    p.add_argument("--budget", type=int, default=10, help="editor calls per image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bench.add_ray_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mira-batch`` with ``argv`` (``sys.argv[1:]`` when None); returns the exit status."""
    args = build_parser().parse_args(argv)
    folder, out = Path(args.input), Path(args.out)
    if not folder.is_dir():
        print(f"{PROG}: error: IN_DIR {args.input!r} is not a folder", file=sys.stderr)
        return 2
    if folder.resolve() == out.resolve():
        print(f"{PROG}: error: --out {args.out!r} must not be IN_DIR", file=sys.stderr)
        return 2
    row = _ROWS[args.strategy]
    forwarded = ["--dataset", str(folder), "--out", str(out), "--strategy", row]
    forwarded += ["--preset", args.preset, "--seed", str(args.seed), "--budget", str(args.budget)]
    if args.max_steps is not None:
        forwarded += ["--max-steps", str(args.max_steps)]
    if args.ray is not None:
        forwarded += ["--ray", args.ray]
    if args.ray_workers is not None:
        forwarded += ["--ray-workers", str(args.ray_workers)]
    if args.quiet:
        forwarded.append("--quiet")
    bench_args = bench.build_parser().parse_args(forwarded)
    try:
        samples = list(bench.folder_samples(folder))
        if args.ray_workers is not None and (args.ray is None or args.ray_workers < 1):
            raise bench._Refused(
                f"--ray-workers must be >= 1 and go with --ray, got {args.ray_workers}"
            )
        rows = [bench.Row(row, row)]
        runner = bench._Runner(bench_args, out, rows)
    except (bench._Refused, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.ray is None:
            records = bench.run_bench(samples, [row], out, runner, quiet=args.quiet)
        else:
            from functools import partial

            from agent.distributed import run_bench_ray

            records = run_bench_ray(
                samples,
                [row],
                out,
                partial(bench._Runner, bench_args, out, rows),
                address=None if args.ray == "local" else args.ray,
                workers=args.ray_workers,
                quiet=args.quiet,
            )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    for record in records:  # OUT/X.png next to the records
        shutil.copyfile(out / record["images"]["result"], out / f"{record['id']}.png")
    stops: dict[str, int] = {}
    for record in records:
        stops[record["stop_reason"]] = stops.get(record["stop_reason"], 0) + 1
    summary = ", ".join(f"{n} {reason}" for reason, n in sorted(stops.items()))
    print(f"{PROG}: {len(records)} of {len(samples)} images in {out} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
