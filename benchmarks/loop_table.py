"""The loop table over tool seeds: the mean (and each seed's figure) of every strategy's edits
done, tolerant and strict success, per block of edits and language, from a folder of
``mira-bench`` runs (``benchmarks/loop_gpu.sh`` with ``benchmarks/loop_table.jobs`` writes one).

Each run folder is named ``e<edits>_<language>_s<seed>_<group>`` (``loop_table.jobs``); the rows
are its strategies, the oracle group's marked as upper bounds. A second table gives each row's
mean editor calls, stop reasons (summed over the seeds), the share of the image changed outside
the edits (mean over the cases, as the scorer measures it) and seconds per case.

    python benchmarks/loop_table.py .micro/loop/s13/res
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

NAME = re.compile(r"e(?P<edits>\d)_(?P<language>train|heldout)_s(?P<seed>\d+)_(?P<group>\w+)")
#: the order of the rows, and the label of the oracle group's rows
ORDER = ("single-shot", "best-of-n", "agent", "mirage", "mira+mirage", "roundtrip")
ORACLE = "oracle"
#: loop_table.jobs' groups of learned runs; a row of any other group is named with its group
GROUPS = ("base", "agent", "mirage", "mm")
#: loop_table.jobs' groups whose rows carry loop settings of their own, and how they are named
SETTINGS = {"preset": "one shot first + the critic's stop (the `micro` preset)"}


#: (block, row, group) -> seed -> records
Runs = dict[tuple[str, str, str], dict[int, list[dict]]]


def load(folder: Path) -> Runs:
    """(block, row, group) -> seed -> records, from every run folder under ``folder``."""
    runs: Runs = collections.defaultdict(dict)
    for results in sorted(folder.glob("*/results.jsonl")):
        m = NAME.fullmatch(results.parent.name)
        if m is None:
            continue
        block = f"{m['edits']} edits, {m['language']}"
        for line in results.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            key = (block, r["strategy"], m["group"])
            runs[key].setdefault(int(m["seed"]), []).append(r)
    return runs


def figures(records: list[dict]) -> tuple[float, float, float]:
    """(edits done, tolerant success, strict success) in percent."""
    edits = [e["passed"] for r in records for e in r["edits"]]
    return (
        100 * sum(edits) / max(len(edits), 1),
        100 * statistics.mean(r["success_tolerant"] for r in records),
        100 * statistics.mean(r["success_strict"] for r in records),
    )


def label(row: str, group: str) -> str:
    """A row's name: the strategy, marked when its group is the oracle's, one with loop
    settings of its own (``SETTINGS``) or another than loop_table.jobs' own (a run of another
    planner adapter, say: ``e3_train_s0_grpo``)."""
    if group == ORACLE:
        return f"*upper bound:* {row}, oracle planner, critic and grounder"
    if row == "roundtrip":
        return "*ceiling:* round trip of the ground truth"
    if group in SETTINGS and row == "agent":  # the settings are the loop's
        return f"{row}, {SETTINGS[group]}"
    return row if group in GROUPS else f"{row} ({group})"


def success(seeds: dict[int, list[dict]]) -> str:
    """A success cell: the seeds' mean in bold, then each seed's figures (and the number of
    cases when a seed has other than 10)."""
    each = [figures(seeds[s]) for s in sorted(seeds)]
    mean = [statistics.mean(f[i] for f in each) for i in range(3)]
    per = ", ".join("/".join(f"{v:.0f}" for v in f) for f in each)
    n = {len(rs) for rs in seeds.values()}
    size = f" (n {'/'.join(map(str, sorted(n)))})" if n != {10} else ""
    return f"**{mean[0]:.0f} / {mean[1]:.0f} / {mean[2]:.0f}** [{per}]{size}"


def behaviour(seeds: dict[int, list[dict]]) -> str:
    """A behaviour cell: mean editor calls; stop reasons over all seeds; mean share changed
    outside the edits; mean seconds per case."""
    records = [r for rs in seeds.values() for r in rs]
    stops = collections.Counter(r.get("stop_reason") or "-" for r in records)
    said = ", ".join(f"{k} {v}" for k, v in stops.most_common())
    calls = statistics.mean(r["steps"] for r in records)
    secs = statistics.mean(r["time_s"] for r in records)
    off = 100 * statistics.mean(r["changed_fraction"] for r in records)
    return f"{calls:.1f}; {said}; {off:.3f}%; {secs:.0f} s"


def table(
    runs: Runs,
    blocks: list[str],
    rows: list[tuple[str, str]],
    cell: Callable[[dict[int, list[dict]]], str],
    title: str,
) -> None:
    """Print one markdown table: a line per (row, group), a column per block."""
    print(f"{title}\n")
    print("| row | " + " | ".join(blocks) + " |")
    print("|---|" + "---|" * len(blocks))
    for row, group in rows:
        cells = [
            cell(runs[b, row, group]) if runs.get((b, row, group)) else "not run" for b in blocks
        ]
        print(f"| {label(row, group)} | " + " | ".join(cells) + " |")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the folder of run folders (loop_gpu.sh's res/)")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        p.error(f"folder {str(args.folder)!r} does not exist")
    runs = load(args.folder)
    if not runs:
        p.error(f"no e<edits>_<language>_s<seed>_<group>/results.jsonl under {args.folder}")
    blocks = sorted({b for b, _, _ in runs}, key=lambda b: (b.split()[2] != "train", b))
    rows = sorted(
        {(row, group) for _, row, group in runs},
        key=lambda rg: (rg[1] == ORACLE, rg[0] == "roundtrip", ORDER.index(rg[0]), rg[1]),
    )
    table(
        runs,
        blocks,
        rows,
        success,
        "edits done / tolerant / strict success, %: mean of the seeds [each seed's]",
    )
    table(
        runs,
        blocks,
        rows,
        behaviour,
        "mean editor calls; stop reasons (all seeds); % changed off the edits; s per case",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
