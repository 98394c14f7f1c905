"""``mira-bench --ray``: a local Ray cluster on CPU (2 workers, no dashboard, 127.0.0.1 only)
gives the same records as one process, also when an actor is killed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial

import pytest

ray = pytest.importorskip("ray")

from agent import bench  # noqa: E402
from agent.distributed import run_bench_ray  # noqa: E402

pytestmark = pytest.mark.slow

ARGS = ["--n", "6", "--edits", "2", "--size", "96", "--budget", "4", "--seed", "1", "-q"]
VOLATILE = ("time_s", "finished_at")  # wall-clock fields


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _keyed(records: list[dict]) -> dict[tuple[str, str], dict]:
    keyed = {
        (r["strategy"], r["id"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in records
    }
    assert len(keyed) == len(records)  # no run written twice
    return keyed


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-process run's records."""
    out = tmp_path_factory.mktemp("single")
    assert bench.main([*ARGS, "--out", str(out)]) == 0
    return _keyed(_records(out))


def test_ray_run_equals_the_single_process_run(cluster, single, tmp_path):
    out = tmp_path / "ray"
    assert bench.main([*ARGS, "--out", str(out), "--ray", "--ray-workers", "2"]) == 0
    assert _keyed(_records(out)) == single
    assert len(single) == 6 * 3  # single-shot, best-of-n, agent
    assert (out / "summary.md").is_file() and (out / "images" / "mw-0" / "agent.png").is_file()


def test_a_killed_actor_loses_and_duplicates_nothing(cluster, single, tmp_path, capsys):
    args = bench.build_parser().parse_args([*ARGS, "--out", str(tmp_path)])
    samples = list(bench.microworld_samples(6, n_edits=2, size=96))
    rows = bench.rows_of(["single-shot", "best-of-n", "agent"], args.critic, [0.1])
    labels = [r.label for r in rows]
    killed = []

    def kill_one(record, actors):
        if not killed:  # once, after the first record: the other actor is mid-case
            killed.append(record["id"])
            for actor in actors:
                ray.kill(actor, no_restart=True)
                break

    records = run_bench_ray(
        samples,
        labels,
        tmp_path,
        partial(bench._Runner, args, tmp_path, rows),
        workers=2,
        on_result=kill_one,
    )
    assert killed and "a Ray worker died" in capsys.readouterr().err
    assert _keyed(_records(tmp_path)) == single
    # returned in the single-process order
    assert [(r["id"], r["strategy"]) for r in records] == [
        (s.id, st) for s in samples for st in labels
    ]


def test_ray_resumes_the_same_file(cluster, single, tmp_path):
    assert bench.main([*ARGS[:1], "3", *ARGS[2:], "--out", str(tmp_path)]) == 0  # 3 cases here
    before = _records(tmp_path)
    assert bench.main([*ARGS, "--out", str(tmp_path), "--ray", "--ray-workers", "2"]) == 0
    after = _records(tmp_path)
    assert len(before) == 9 and after[:9] == before  # the 9 done runs kept, not run again
    assert _keyed(after) == single


def test_without_ray_nothing_imports_it(tmp_path):
    code = (
        "import sys; from agent import bench; "
        f"args = ['--n', '1', '--strategy', 'agent', '-q', '--out', {str(tmp_path)!r}]; "
        "assert bench.main(args) == 0; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_ray_workers_needs_ray(tmp_path, capsys):
    assert bench.main(["--n", "1", "--out", str(tmp_path), "--ray-workers", "2"]) == 2
    assert "--ray-workers must be >= 1 and go with --ray, got 2" in capsys.readouterr().err


def _folder(root, n: int = 3):
    from agent.testing import make_test_image

    root.mkdir()
    for i in range(n):
        make_test_image(48 + 8 * i, 48).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text("make the left side red, then the right side blue")
    return root


def test_batch_folder_on_ray_equals_one_process(cluster, tmp_path):
    from agent.batch import main

    folder = _folder(tmp_path / "in")
    assert main([str(folder), "--out", str(tmp_path / "one"), "-q"]) == 0
    assert main([str(folder), "--out", str(tmp_path / "ray"), "-q", "--ray"]) == 0
    for i in range(3):
        one = (tmp_path / "one" / f"img{i}.png").read_bytes()
        assert one == (tmp_path / "ray" / f"img{i}.png").read_bytes()
    assert _keyed(_records(tmp_path / "one")) == _keyed(_records(tmp_path / "ray"))
    assert len(_records(tmp_path / "ray")) == 3
