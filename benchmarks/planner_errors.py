"""Where does the learned planner go wrong? Each wrong answer, by the first part of its reasoning
that departs from the reference.

The planner (``micro_planner()``, the shipped adapter unless ``--planner-lora``) answers the
micro-world's planner states (validation seeds by default, train words, as ``mira-train
eval-vlm --roles planner`` draws them). Its answer is judged as eval-vlm judges it (the next
step executed on the state's scene; a stop against the reference's). For each wrong one, its
reasoning is compared with the reference's (``planner_samples(clauses=True)``), part by part in
the order it writes them:

- ``changed cells``: the cells it says differ between the original and the current image;
- ``clause cells``: the cells it gives some clause;
- ``marks``: which clauses it marks "done" (with the cells right);
- ``answer``: the reasoning is the reference's, the answer is not (or it is unreadable).

Rows per state class (next step, corrective step by mistake, stop).

    python benchmarks/planner_errors.py --seeds 60 --limit 160
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

PARTS = ("changed cells", "clause cells", "marks", "answer")


def reasoning_parts(text: str) -> dict[str, object] | None:
    """(changed cells, [clause cells], [done marks]) of a clause reasoning, or None when the
    text has no readable clause list."""
    from agent.microworld.formats import CELL_LISTS, CLAUSES, cells_said

    changed = cells_said(text, CELL_LISTS[1])
    found = re.search(rf"{CLAUSES}: (.*?)\.\s*(?:NEXT_EDITING_INSTRUCTION|<stop>|$)", text, re.S)
    if changed is None or found is None:
        return None
    cells, marks = [], []
    for item in found.group(1).split(" | "):
        m = re.search(r"\(([^()]*)\): (done|to do)$", item.strip())
        if m is None:
            return None
        cells.append(m.group(1))
        marks.append(m.group(2))
    return {"changed cells": changed, "clause cells": cells, "marks": marks}


def first_departure(said: str, reference: str) -> str:
    """The first part of ``said``'s reasoning that differs from ``reference``'s."""
    ours, ref = reasoning_parts(said), reasoning_parts(reference)
    if ours is None or ref is None:
        return "answer"
    for part in PARTS[:3]:
        if ours[part] != ref[part]:
            return part
    return "answer"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--seeds", type=int, default=60, help="scenes (default: 60)")
    p.add_argument("--limit", type=int, default=160, help="states (default: 160)")
    p.add_argument(
        "--planner-lora",
        default=None,
        help="an adapter folder (default: the shipped one); 'none': the shared weights' planner",
    )
    p.add_argument("--show", type=int, default=0, help="print this many wrong answers in full")
    p.add_argument(
        "--seed-offset", type=int, default=0, help="skip this many of the split's first seeds"
    )
    p.add_argument(
        "--planner-edits",
        default="1,4",
        metavar="FEWEST,MOST",
        help="the edit counts of the states' cases (default: 1,4; at most 5)",
    )
    args = p.parse_args(argv)
    if args.seeds < 1 or args.limit < 1:
        p.error(f"--seeds and --limit must be positive, got {args.seeds} and {args.limit}")
    from agent.microworld.splits import seeds as split_seeds

    try:  # refuses a negative offset too
        seeds = split_seeds(args.split, args.seeds, offset=args.seed_offset)
    except ValueError as e:
        p.error(f"--seeds {args.seeds} --seed-offset {args.seed_offset}: {e}")
    from agent.train.vlm import check_planner_edits

    try:
        edits = check_planner_edits(args.planner_edits.split(","))
    except ValueError as e:
        p.error(f"--planner-edits {args.planner_edits!r}: {e}")

    from agent.micro import micro_planner
    from agent.train.vlm_eval import makes_progress, planner_states, state_images
    from tools.errors import PlannerOutputError

    samples = planner_states(seeds, "train", args.limit, clauses=True, edits=edits)
    lora: str | bool = True if args.planner_lora is None else args.planner_lora
    planner = micro_planner(lora=False if lora == "none" else lora)
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    shown = 0
    for r in samples:
        original, current = state_images(r)
        want_stop = not r["answer"].startswith("NEXT_EDITING_INSTRUCTION")
        kind = "stop" if want_stop else (f"corrective ({r['mistake']})" if r["mistake"] else "next")
        try:
            d = planner.next_action(original, current, r["instruction"])
            raw, right = d.raw, d.stop == want_stop
            if right and not want_stop:
                right = makes_progress(d.instruction or "", r)
        except PlannerOutputError as exc:
            raw, right = str(exc), False
        table[kind]["states"] += 1
        if right:
            table[kind]["right"] += 1
            continue
        reference = r["messages"][1]["content"]
        reference = reference if isinstance(reference, str) else reference[0]["text"]
        table[kind][first_departure(raw, reference)] += 1
        if shown < args.show:
            shown += 1
            print(f"--- {r['id']} ({kind})\n  said: {raw}\n  want: {reference}\n")
    head = ["state", "states", "right", *PARTS]
    print(f"planner errors, {args.split} seeds ({args.seeds} scenes, {args.limit} states)")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    total: collections.Counter[str] = collections.Counter()
    for kind in sorted(table):
        row = table[kind]
        total.update(row)
        print(f"| {kind} | " + " | ".join(str(row[k]) for k in ("states", "right", *PARTS)) + " |")
    print("| all | " + " | ".join(str(total[k]) for k in ("states", "right", *PARTS)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
