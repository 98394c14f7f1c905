"""The GRPO runs' table: per run, steps and seconds per step, the mean reward per block of
steps, the largest KL, the share of groups whose answers all got one reward, the sampling
entropy; and, for a run rewarded by a critic, the critic's SC beside the exact SC of the same
images (reward hacking: how often the critic calls a request done that is not).

Reads ``grpo.json`` of each run folder (``mira-train grpo --out``). The share of tied groups
and the entropy are in its history since the fourteenth session; for older runs they are read
from the run's training log beside the folder (``<run>.train.log``, as
``benchmarks/grpo_gpu.sh`` writes it), TRL's logged lines, up to the last saved step.

    python benchmarks/grpo_table.py .micro/s14/grpo/res/critic .micro/s14/grpo/res/critic_t15
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
from pathlib import Path

from agent.train.grpo import StepReward

DONE_SC = StepReward.DONE_SC  # the SC from which the request counts done


def _from_log(folder: Path, steps: int) -> list[dict]:
    """TRL's per-step lines of ``<folder>.train.log`` (string values made floats), at most
    ``steps`` of them."""
    log = folder.parent / f"{folder.name}.train.log"
    if not log.is_file():
        return []
    rows = []
    for line in log.read_text().splitlines():
        if line.startswith("{'loss'") and "'reward'" in line:
            rows.append({k: float(v) for k, v in ast.literal_eval(line).items()})
    return rows[:steps]


def run_row(folder: Path, block: int) -> dict:
    """One run's figures (``block``: steps per reward mean)."""
    summary = json.loads((folder / "grpo.json").read_text())
    history = summary["history"]
    extra = history if history and "entropy" in history[0] else _from_log(folder, len(history))
    rewards = [h["reward"] for h in history]
    blocks = [statistics.fmean(rewards[i : i + block]) for i in range(0, len(rewards), block)]
    settings = summary["settings"]
    return {
        "run": folder.name,
        "reward": settings["reward"],
        "temperature": settings["temperature"],
        "steps": summary["steps"],
        "s_per_step": summary["seconds"] / summary["steps"] if summary["steps"] else None,
        "blocks": blocks,
        "kl_max": max((h["kl"] for h in history), default=None),
        "tied": statistics.fmean(h["frac_reward_zero_std"] for h in extra) if extra else None,
        "entropy": statistics.fmean(h["entropy"] for h in extra) if extra else None,
        "sc_pairs": summary.get("sc_pairs", []),
    }


def hacking(pairs: list) -> dict | None:
    """The critic's SC against the exact SC of the same images (pairs the critic judged)."""
    judged = [(c, e) for c, e in pairs if c is not None]
    if len(judged) < 2:
        return None
    critic, exact = zip(*judged, strict=True)
    done = [(c, e) for c, e in judged if c >= DONE_SC]
    wrong = sum(e < DONE_SC for _, e in done)
    try:
        correlation: float | None = statistics.correlation(critic, exact)
    except statistics.StatisticsError:  # one side constant: no correlation
        correlation = None
    return {
        "judged": len(judged),
        "critic_mean": statistics.fmean(critic),
        "exact_mean": statistics.fmean(exact),
        "correlation": correlation,
        "done": len(done),
        "not_done": wrong,
    }


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with grpo.json)")
    parser.add_argument("--block", type=int, default=25, help="steps per reward mean (25)")
    args = parser.parse_args(argv)
    if args.block < 1:
        parser.error(f"--block must be >= 1, got {args.block}")
    for folder in args.runs:
        if not (folder / "grpo.json").is_file():
            parser.error(f"{str(folder)!r} holds no grpo.json")
    rows = [run_row(folder, args.block) for folder in args.runs]
    print(
        f"| run | reward | temperature | steps | s per step | reward per {args.block} steps "
        "| largest KL | groups with one reward | entropy |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        blocks = " / ".join(f"{b:.1f}" for b in r["blocks"])
        tied = "-" if r["tied"] is None else f"{r['tied']:.0%}"
        print(
            f"| {r['run']} | {r['reward']} | {r['temperature']} | {r['steps']} | "
            f"{_f(r['s_per_step'], 1)} | {blocks} | {_f(r['kl_max'], 4)} | {tied} | "
            f"{_f(r['entropy'], 3)} |"
        )
    judged = [(r["run"], hacking(r["sc_pairs"])) for r in rows]
    judged = [(run, h) for run, h in judged if h is not None]
    if judged:
        print()
        print(
            "| run | judged samples | mean SC, critic / exact | correlation | critic says done "
            f"(SC >= {DONE_SC:g}) | of those, not done (exact SC < {DONE_SC:g}) |"
        )
        print("|---|---:|---|---:|---:|---:|")
        for run, h in judged:
            share = h["not_done"] / h["done"] if h["done"] else 0.0
            print(
                f"| {run} | {h['judged']} | {h['critic_mean']:.2f} / {h['exact_mean']:.2f} | "
                f"{_f(h['correlation'], 2)} | {h['done']} | {h['not_done']} ({share:.0%}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
