"""Parallel runs: one compiled agent serves several threads at once.

The graph, its components (stateless SplitPlanner, PaintEditor, PixelChangeCritic) and the
artifact store are shared. Each run gets its own image (distinct size and seed) and its own
instruction; the editor holds every run's first edit at a barrier until all runs are inside
it, so the runs really overlap. Each output must be exactly what the same input gives when
run alone.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent import AgentConfig, create_edit_agent
from agent.testing import PaintEditor, PixelChangeCritic, SplitPlanner, make_test_image

#: (width, height, seed, instruction, its parts). Regions of one run cover < 95 % of the
#: image, so the pixel-change critic's full-instruction (regression) check accepts each step.
RUNS = [
    (
        64,
        48,
        0,
        "make the left side red and make the top blue",
        ["make the left side red", "make the top blue"],
    ),
    (
        80,
        60,
        1,
        "make the right side green, then make the bottom purple",
        ["make the right side green", "make the bottom purple"],
    ),
    (
        96,
        72,
        2,
        "make the center yellow and make the top orange",
        ["make the center yellow", "make the top orange"],
    ),
    (
        50,
        70,
        3,
        "make the bottom cyan; make the left side pink",
        ["make the bottom cyan", "make the left side pink"],
    ),
]


class OverlapEditor:
    """PaintEditor that, while ``barrier`` is set, holds the first edit of each run (one run
    per image size) until every run has reached it, and sleeps a little on every call. It
    records how many edits were in flight at once."""

    def __init__(self) -> None:
        self.inner = PaintEditor()
        self.barrier: threading.Barrier | None = None
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._seen: set[tuple[int, int]] = set()
        self._active = 0
        self.max_active = 0
        self.calls: list[tuple[tuple[int, int], str]] = []

    def arm(self, parties: int, delay_s: float = 0.01) -> None:
        self.barrier = threading.Barrier(parties)
        self.delay_s = delay_s
        self._seen.clear()
        self.max_active = 0

    def disarm(self) -> None:
        self.barrier = None
        self.delay_s = 0.0

    def edit(self, image, instruction, **kwargs):
        with self._lock:
            self.calls.append((image.size, instruction))
            first = image.size not in self._seen
            self._seen.add(image.size)
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            if self.barrier is not None and first:
                self.barrier.wait(timeout=30)
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.inner.edit(image, instruction, **kwargs)
        finally:
            with self._lock:
                self._active -= 1


def _inputs(tmp_path: Path) -> list[dict[str, str]]:
    inputs = []
    for width, height, seed, instruction, _ in RUNS:
        path = tmp_path / f"in-{width}x{height}-{seed}.png"
        make_test_image(width, height, seed=seed).save(path)
        inputs.append({"image": str(path), "instruction": instruction})
    return inputs


def _checkpointer(kind: str, tmp_path: Path) -> tuple[Any, sqlite3.Connection | None]:
    if kind == "none":
        return None, None
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver(), None
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(tmp_path / "cp.db"), check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit (WAL mode): faster tests
    return SqliteSaver(conn), conn


def _check_own(out: dict[str, Any], run: tuple) -> None:
    """The output belongs to its own input: size, instruction parts, trace."""
    width, height, _, instruction, parts = run
    assert out["stop_reason"] == "planner_stop", out["steps"]
    assert (out["result"]["width"], out["result"]["height"]) == (width, height)
    edits = [s for s in out["steps"] if s["kind"] == "edit"]
    assert [s["args"]["instruction"] for s in edits if s["accepted"]] == parts
    for s in out["steps"]:
        if s["args"]:
            assert s["args"]["instruction"] in parts
        if s["planner"] and s["planner"]["action"]["instruction"] is not None:
            assert s["planner"]["action"]["instruction"] in parts
        for ref in (s["input"], s["output"]):
            if ref is not None:
                assert (ref["width"], ref["height"]) == (width, height)
    assert [s["kind"] for s in out["steps"]] == ["edit"] * len(parts) + ["stop"]


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("saver", ["none", "memory", "sqlite"])
def test_parallel_runs_match_sequential_runs(tmp_path: Path, saver: str, workers: int) -> None:
    runs, inputs = RUNS[:workers], _inputs(tmp_path)[:workers]
    checkpointer, conn = _checkpointer(saver, tmp_path)
    editor = OverlapEditor()
    agent = create_edit_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        editors={"paint": editor},
        critic=PixelChangeCritic(),
        checkpointer=checkpointer,
        artifacts=tmp_path / "art",
    )

    def config(i: int, tag: str) -> dict[str, Any] | None:
        return None if checkpointer is None else {"configurable": {"thread_id": f"{tag}-{i}"}}

    # Sequential reference: same agent, one run after the other.
    sequential = [agent.invoke(inp, config(i, "seq")) for i, inp in enumerate(inputs)]
    for out, run in zip(sequential, runs):
        _check_own(out, run)

    editor.arm(parties=workers)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(agent.invoke, inp, config(i, "par")) for i, inp in enumerate(inputs)]
        parallel = [f.result(timeout=60) for f in futures]  # re-raises any run's exception
    elapsed = time.perf_counter() - t0
    editor.disarm()

    assert editor.max_active == workers  # every run was inside the editor at once
    for out, seq, run in zip(parallel, sequential, runs):
        _check_own(out, run)
        assert out["result"] == seq["result"]
        assert [s["output"] for s in out["steps"]] == [s["output"] for s in seq["steps"]]
        assert [s["scores"] for s in out["steps"]] == [s["scores"] for s in seq["steps"]]
        assert out["scores"] == seq["scores"]
    assert len({out["result"]["sha256"] for out in parallel}) == workers

    if checkpointer is not None:
        # Each thread's checkpointed state is its own run's, not a neighbour's.
        for i, (out, run) in enumerate(zip(parallel, runs)):
            values = agent.get_state(config(i, "par")).values
            assert values["result"] == out["result"]
            assert values["instruction"] == run[3]
            assert [h["instruction"] for h in values["history"]] == run[4]
            assert values["source"]["width"] == run[0]
    if conn is not None:
        conn.close()
    print(f"\n{workers} parallel runs ({saver} checkpointer): {elapsed:.2f} s")


def test_parallel_resume_of_crashed_threads(tmp_path: Path) -> None:
    """Several threads crash mid-run at once and are resumed at once; each finishes with
    exactly the output of an uninterrupted run."""
    from langgraph.checkpoint.memory import InMemorySaver

    class CrashSecondEdit(OverlapEditor):
        def __init__(self) -> None:
            super().__init__()
            self.crashed: set[tuple[int, int]] = set()

        def edit(self, image, instruction, **kwargs):
            with self._lock:
                crash = (
                    image.size not in self.crashed
                    and sum(1 for size, _ in self.calls if size == image.size) == 1
                )
                if crash:
                    self.crashed.add(image.size)
                    self.calls.append((image.size, instruction))
            if crash:
                raise RuntimeError(f"crash on the second edit of {image.size}")
            return super().edit(image, instruction, **kwargs)

    inputs = _inputs(tmp_path)
    reference = create_edit_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        editors=PaintEditor(),
        critic=PixelChangeCritic(),
        artifacts=tmp_path / "art",
    )
    expected = [reference.invoke(inp) for inp in inputs]

    editor = CrashSecondEdit()
    agent = create_edit_agent(
        AgentConfig(),
        planner=SplitPlanner(),
        editors={"paint": editor},
        critic=PixelChangeCritic(),
        checkpointer=InMemorySaver(),
        artifacts=tmp_path / "art",
    )
    configs = [{"configurable": {"thread_id": f"crash-{i}"}} for i in range(len(inputs))]
    editor.arm(parties=len(inputs))
    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        futures = [pool.submit(agent.invoke, inp, cfg) for inp, cfg in zip(inputs, configs)]
        for f in futures:
            with pytest.raises(RuntimeError, match="crash on the second edit"):
                f.result(timeout=60)
    editor.disarm()
    for cfg, run in zip(configs, RUNS):
        snapshot = agent.get_state(cfg)
        assert snapshot.next == ("act",)
        assert snapshot.values["pending"]["instruction"] == run[4][1]

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        resumed = list(pool.map(lambda cfg: agent.invoke(None, cfg), configs))
    for out, exp, run in zip(resumed, expected, RUNS):
        _check_own(out, run)
        assert out["result"] == exp["result"]
        # Per run: first edit once, second edit twice (the crash and its re-run), nothing else.
        size = (run[0], run[1])
        assert [instr for s, instr in editor.calls if s == size] == [
            run[4][0],
            run[4][1],
            run[4][1],
        ]
