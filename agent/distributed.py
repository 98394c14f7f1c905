"""Benchmarks and batch edits spread over a Ray cluster (``mira-bench --ray``, ``mira-batch
--ray``).

One actor per GPU (or per CPU slot when the cluster has no GPU) builds the bench runner once,
so each loads its models once, and runs one case at a time; the driver hands out the cases,
writes each record to the same resumable ``results.jsonl`` as a single-process run (it is the
only writer) and saves the images the actor sends back. When an actor dies (a lost node, an
out-of-memory kill), the case it was running goes back to the queue and a fresh actor takes its
place: every case is written exactly once. A case that raises stops the job, as in one process.

Ray is an optional extra (``pip install 'mira-agent[ray]'``), imported on first use.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.bench import (
    PROG,
    RESULTS,
    Sample,
    _case,
    _progress,
    _records_of,
    _save_images,
    _todo,
)

__all__ = ["run_bench_ray", "connect"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--ray needs Ray: pip install 'mira-agent[ray]'") from exc
    return ray


def connect(address: str | None) -> Any:
    """Ray, connected: to ``address`` (``"auto"``, ``"ray://host:10001"``, ...), or to a new
    local cluster on this machine when None. A running connection of this process is reused."""
    ray = _ray()
    if not ray.is_initialized():
        if address is None:
            ray.init(include_dashboard=False, logging_level="ERROR")
        else:
            ray.init(address=address, logging_level="ERROR")
    return ray


class _Worker:
    """A Ray actor's state: the bench runner, built once from its factory."""

    def __init__(self, make_runner: Callable[[], Any]) -> None:
        self.runner = make_runner()

    def run(self, strategy: str, sample: Sample) -> tuple[dict[str, Any], dict[str, Any]]:
        record, images = _case(self.runner, strategy, sample)
        encoded: dict[str, Any] = {}
        for name, image in images.items():  # PNG bytes: the driver may be on another node
            if isinstance(image, str):  # the trajectory page (HTML text) travels as it is
                encoded[name] = image
                continue
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            encoded[name] = buf.getvalue()
        return record, encoded


def run_bench_ray(
    samples: Sequence[Sample],
    strategies: Sequence[str],
    out: Path,
    make_runner: Callable[[], Any],
    *,
    address: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
    on_result: Callable[[dict[str, Any], list[Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """``agent.bench.run_bench`` over Ray actors; returns the records of ``samples`` in the
    order of a single-process run (samples, then strategies).

    ``make_runner`` (picklable, no arguments) builds a runner in each actor. ``workers``: the
    number of actors (default: the cluster's GPUs, else its CPUs), each holding one GPU, else
    one CPU. ``on_result(record, actors)`` is called after each record is written (a hook for
    progress reporting and tests; ``actors`` are the live actor handles).
    """
    from PIL import Image

    ray = connect(address)
    from ray.exceptions import RayActorError

    # 1. what is left, and the actors
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    todo = _todo(samples, strategies, path, quiet)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if workers is None:
        workers = gpus or cpus
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    actor_class = (
        ray.remote(num_gpus=1, num_cpus=0)(_Worker) if gpus else ray.remote(num_cpus=1)(_Worker)
    )
    run_id = uuid.uuid4().hex[:8]
    started = 0

    def new_actor() -> Any:
        nonlocal started
        started += 1
        return actor_class.options(name=f"mira-bench-{run_id}-{started}").remote(make_runner)

    actors = [new_actor() for _ in range(min(workers, max(1, len(todo))))]
    replacements = len(actors)  # as many fresh actors as the job started with, then give up

    # 2. hand out cases, one at a time per actor; write each record as it comes back
    pending: deque[tuple[str, Sample]] = deque(todo)
    inflight: dict[Any, tuple[Any, tuple[str, Sample]]] = {}
    written: set[tuple[str, str]] = set()

    def submit(actor: Any) -> None:
        if pending:
            task = pending.popleft()
            inflight[actor.run.remote(*task)] = (actor, task)

    for actor in actors:
        submit(actor)
    with open(path, "a") as f, _progress(len(todo), quiet) as bar:
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, task = inflight.pop(ref)
            try:
                record, images = ray.get(ref)
            except RayActorError:
                # the actor is gone: its case goes back to the queue, a fresh actor takes over
                pending.appendleft(task)
                actors = [a for a in actors if a is not actor]
                if replacements > 0:
                    replacements -= 1
                    actors.append(new_actor())
                if not quiet:
                    print(
                        f"{PROG}: a Ray worker died; {task[0]} {task[1].id} requeued",
                        file=sys.stderr,
                    )
                if not actors:
                    raise RuntimeError(
                        f"every Ray worker died; {len(pending)} run(s) not done "
                        f"(rerun the same command to resume)"
                    ) from None
                idle = [a for a in actors if all(a is not b for b, _ in inflight.values())]
                for a in idle:
                    submit(a)
                continue
            key = (record["strategy"], record["id"])
            if key not in written:  # a case is handed out once at a time: never twice
                written.add(key)
                _save_images(
                    out,
                    record,
                    {
                        name: data if isinstance(data, str) else Image.open(io.BytesIO(data))
                        for name, data in images.items()
                    },
                )
                f.write(json.dumps(record) + "\n")
                f.flush()
                bar.set_postfix_str(f"{record['strategy']} {record['id']}", refresh=False)
                bar.update(1)
                if on_result is not None:
                    on_result(record, list(actors))
            submit(actor)
    for actor in actors:
        ray.kill(actor)

    # 3. the records, in the single-process order
    by_key = {(r["strategy"], r["id"]): r for r in _records_of(samples, strategies, path)}
    return [by_key[(st, s.id)] for s in samples for st in strategies if (st, s.id) in by_key]
