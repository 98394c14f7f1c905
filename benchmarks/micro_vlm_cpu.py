"""The shipped micro VLM on this machine's CPU: load time and seconds per critic, grounder
and planner call.

One critique = the real ``EditScoreCritic.critique`` of the ``micro-critic`` backend (its two
EditScore prompts, greedy, at most 160 new tokens each) on a 224 px test scene and its correct
edit, through the folder's ``editscore`` adapter when it has one, and again with the shared
weights (``adapter=None``); one grounding = ``QwenVLGrounder.ground`` of ``micro-grounder``
on the scene and one referring expression, through the folder's grounder adapter when it
has one, and again with the shared weights. Every row is measured in the same run, after one
warm-up call of each; one plan = ``MiraPlanner.next_action`` of ``micro-planner`` (the
shipped planner adapter switched on for the shipped model, greedy, its clause list then
MIRA's answer) on the scene's state after the first of two edits. The table gives the
median of ``--repeat`` calls.

    python benchmarks/micro_vlm_cpu.py --repeat 5 [--threads N] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="timed calls per row (default: 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("--model", default=None, help="a micro VLM folder (default: the shipped one)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be >= 1, got {args.repeat!r}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from agent.micro import micro_critic, micro_grounder, micro_planner
    from agent.microworld.formats import grounder_samples
    from agent.microworld.render import render
    from agent.microworld.splits import seeds
    from agent.microworld.truth import apply_edit, make_case
    from tools.errors import GroundingError

    case = make_case(seeds("test", 1)[0], n_edits=1, language="train")
    source = render(case.scene)
    edited = render(apply_edit(case.scene, case.edits[0]))
    text = case.atomic[0]
    phrase = next(r for r in grounder_samples([case.seed]) if r["ref_kind"] != "none")
    phrase = phrase["expression"]
    t = time.perf_counter()
    critic = micro_critic(model=args.model)
    critic.critique(source, edited, text)  # loads the model, warms up
    critic_shared = micro_critic(model=args.model, adapter=None)  # the shared weights
    grounder = micro_grounder(model=args.model)  # the same loaded model (its adapter, if any)
    shared = micro_grounder(model=args.model, adapter=None)  # the shared weights
    load = time.perf_counter() - t
    critic_shared.critique(source, edited, text)  # warm-up, outside the load time

    def ground(which: Any = grounder) -> None:
        try:
            which.ground(source, phrase)
        except GroundingError:  # "not found" is an answer too; its time counts
            pass

    ground()
    ground(shared)
    two = make_case(case.seed, n_edits=2, language="train")
    halfway = render(apply_edit(two.scene, two.edits[0]))
    planner = micro_planner(model=args.model)  # the same model, its adapter loaded now
    original = render(two.scene)
    planner.next_action(original, halfway, two.instruction)
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; load + first critique {load:.2f} s"
    )
    print("\n| call | s per call (median) | min | max |\n|---|---:|---:|---:|")
    rows = (
        ("critique (SC + PQ)", lambda: critic.critique(source, edited, text)),
        ("critique, shared weights", lambda: critic_shared.critique(source, edited, text)),
        ("ground", ground),
        ("ground, shared weights", lambda: ground(shared)),
        ("plan", lambda: planner.next_action(original, halfway, two.instruction)),
    )
    for name, call in rows:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
