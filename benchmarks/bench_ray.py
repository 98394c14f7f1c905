"""Micro-world benchmark throughput: one process vs Ray actors, measured in one run.

    python benchmarks/bench_ray.py --n 60 --workers 2

Runs the same ``mira-bench`` job (micro-world, noisy editor, oracle planner and critic, the
default strategies) twice into fresh folders: in this process, then with ``--ray`` on a new
local Ray cluster of ``--workers`` CPU slots (no dashboard, 127.0.0.1). Wall-clock time covers
the whole command: for Ray that includes starting the cluster and the actors, so it is the
time a user waits. Checks that both runs wrote the same records (wall-clock fields aside), then
prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def _records(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        (r["strategy"], r["id"]): {k: v for k, v in r.items() if k not in ("time_s", "finished_at")}
        for r in rows
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=60, help="micro-world cases (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="6 cases: check the script")
    args = p.parse_args()
    n = 6 if args.tiny else args.n

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from agent import bench

    job = ["--n", str(n), "-q"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the tables; compared below
            assert bench.main([*job, "--out", f"{tmp}/one"]) == 0
        results["one process"] = time.perf_counter() - t0

        import ray

        t0 = time.perf_counter()
        ray.init(
            num_cpus=args.workers,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        ray_job = [*job, "--out", f"{tmp}/ray", "--ray", "--ray-workers", str(args.workers)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert bench.main(ray_job) == 0
        results[f"Ray, {args.workers} workers"] = time.perf_counter() - t0
        ray.shutdown()
        same = _records(Path(tmp) / "one") == _records(Path(tmp) / "ray")
        runs = len(_records(Path(tmp) / "one"))

    base = results["one process"]
    print(
        f"\n{runs} runs ({n} cases x 3 strategies), {os.cpu_count()} CPU cores; "
        f"same records: {same}\n"
    )
    print("| mode | wall-clock s | runs / s | vs one process |")
    print("|---|---:|---:|---:|")
    for mode, seconds in results.items():
        print(f"| {mode} | {seconds:.1f} | {runs / seconds:.2f} | {base / seconds:.2f}x |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
