"""`make demo` timed on this machine: the whole `mira-edit` command, Python start and model
loading included, with the `micro` preset's loop (one shot first, the critic's stop) and with
the plain planner loop (`--no-one-shot-first --stop-when-satisfied off`), in one run.

Each row runs the demo's command ``--repeat`` times in a fresh process (alternating the two
modes, so a slow spell of the machine falls on both) and gives the median, min and max wall
seconds, the editor calls and the stop reason of the last run (from its trace). Issue 12 asks
for at most 60 s on the 2-core CPU.

    python benchmarks/demo_cpu.py --repeat 3 [--preset micro]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the rows: a name and the options added to the demo's command
MODES = (
    ("the preset's own (micro: one shot first, critic's stop)", ()),
    (
        "plain planner loop",
        ("--no-one-shot-first", "--stop-when-satisfied", "off"),
    ),
)


def demo_command() -> tuple[str, str]:
    """The example image and the instruction of the Makefile's ``demo`` target."""
    lines = iter((ROOT / "Makefile").read_text().splitlines())
    parts = []
    for line in lines:
        if line.startswith("DEMO_INSTRUCTION := "):
            parts.append(line.removeprefix("DEMO_INSTRUCTION := "))
            while parts[-1].endswith("\\"):  # a continued make variable
                parts[-1] = parts[-1][:-1]
                parts.append(next(lines))
            break
    if not parts:
        raise RuntimeError("the Makefile has no DEMO_INSTRUCTION")
    return str(ROOT / "examples" / "micro_scene.png"), " ".join(" ".join(parts).split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per row (default: 3)")
    p.add_argument("--preset", default=None, help="another preset than mira-edit's default")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat!r}")
    image, instruction = demo_command()
    exe = str(Path(sys.executable).parent / "mira-edit")
    times: dict[str, list[float]] = {name: [] for name, _ in MODES}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for k, (name, options) in enumerate(MODES):
                out = Path(tmp) / f"run{i}_{k}.png"
                cmd = [exe, image, instruction, "--out", str(out), "--quiet", *options]
                if args.preset is not None:
                    cmd += ["--preset", args.preset]
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                took = time.perf_counter() - started
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                times[name].append(took)
                last[name] = json.loads(out.with_suffix(".trace.json").read_text())
    preset = args.preset or "micro (mira-edit's default)"
    print(f"`make demo`'s command, preset {preset}, {args.repeat} runs per row, wall seconds:\n")
    print("| mode | median | min | max | editor calls | stop reason |")
    print("|---|---:|---:|---:|---:|---|")
    for name, _ in MODES:
        t = times[name]
        trace = last[name]
        calls = sum(1 for s in trace["steps"] if s["kind"] == "edit")
        print(
            f"| {name} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} | {calls} "
            f"| {trace['stop_reason']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
