"""Does the learned planner repeat an accepted edit because the micro editor made the image?

For each run of a ``mira-bench --strategy agent`` folder that ended on ``no_progress`` because
the planner asked again for an edit the loop had accepted, the planner (``micro_planner()``, the
shipped adapter unless ``--planner-lora none``) is asked once more for the next step on two
images of the same state: the run's last accepted image (the micro editor's output) and the
micro-world's exact render of the edits the scorer found made on it. The table gives both
answers and whether each repeats an accepted edit; the planner decodes greedily, so with the
adapter the run used, the answer on its image is the one the loop got (up to float rounding on
another machine).

    python benchmarks/planner_repeats.py .micro/loop/s12_test_e3_train_r64f \
        --planner-lora .micro/s12/planner_c5_r64f   # the twelfth session's adapter
    python benchmarks/planner_repeats.py .micro/loop/s11_test_e3_train_r64 \
        --planner-lora .micro/s11/planner_r64     # the adapter that run used
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

REPEAT = "the planner repeated an accepted edit"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a mira-bench --out folder (results.jsonl, images/)")
    p.add_argument(
        "--planner-lora",
        default=None,
        help="an adapter folder (default: the shipped one); 'none': the shared weights' planner",
    )
    args = p.parse_args(argv)
    results = args.run / "results.jsonl"
    if not results.is_file():
        p.error(f"run {str(args.run)!r} has no results.jsonl")
    from PIL import Image

    from agent.micro import micro_planner
    from agent.microworld.edits import apply_edits
    from agent.microworld.render import render
    from agent.microworld.truth import make_case

    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    repeats = [
        r for r in records if any(REPEAT in (s.get("reason") or "") for s in r.get("trace", []))
    ]
    if not repeats:
        print(f"no run of {args.run} ended on a repeated accepted edit")
        return 0
    lora: str | bool = True if args.planner_lora is None else args.planner_lora
    planner = micro_planner(lora=False if lora == "none" else lora)
    rows = []
    for r in repeats:
        case = make_case(r["seed"], n_edits=r["n_edits"], size=224, language=r["language"])
        accepted = [s["instruction"] for s in r["trace"] if s["kind"] == "edit" and s["accepted"]]
        done = [e["index"] for e in r["edits"] if e["passed"]]
        original = render(case.scene)
        editor = Image.open(args.run / "images" / r["id"] / "agent.png").convert("RGB")
        exact = render(apply_edits(case.scene, [case.edits[i] for i in done]))
        row = [r["id"], ",".join(map(str, done)) or "-"]
        for image in (editor, exact):
            d = planner.next_action(original, image, case.instruction)
            said = "<stop>" if d.stop else (d.instruction or "")
            row += [said, "yes" if said in accepted else "no"]
        rows.append(row)
    head = ["case", "edits made", "on editor image", "repeats", "on exact render", "repeats"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    same = sum(row[3] == row[5] for row in rows)
    print(f"\n{same} of {len(rows)} runs: the same verdict on both images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
