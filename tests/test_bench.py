"""``mira-bench``: resume, reports, strategies not implemented yet, external datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent import bench
from agent.testing import make_test_image


def _count_runs(monkeypatch):
    calls = []
    real = bench._execute

    def counting(runner, strategy, sample, source):
        calls.append((strategy, sample.id))
        return real(runner, strategy, sample, source)

    monkeypatch.setattr(bench, "_execute", counting)
    return calls


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_resume_skips_finished_samples(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = _count_runs(monkeypatch)
    args = ["--out", str(out), "--strategy", "agent", "--seed", "3", "-q"]
    assert bench.main(["--n", "4", *args]) == 0
    first = _records(out)
    assert len(calls) == 4 and len(first) == 4
    assert bench.main(["--n", "8", *args]) == 0
    assert len(calls) == 8  # only the 4 new cases ran
    # cases are the benchmark split's seeds 0.. (ids mw-<seed>); --seed is the tool seed now
    assert calls[4:] == [("agent", f"mw-{i}") for i in range(4, 8)]
    second = _records(out)
    assert second[:4] == first and len(second) == 8
    assert bench.main(["--n", "8", *args]) == 0 and len(calls) == 8  # nothing left to do


def test_truncated_last_line_is_dropped_and_redone(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = _count_runs(monkeypatch)
    args = ["--n", "3", "--out", str(out), "--strategy", "single-shot", "-q"]
    assert bench.main(args) == 0
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:2]) + lines[2][:25])  # killed mid-write
    assert bench.main(args) == 0
    assert len(calls) == 4 and calls[-1] == ("single-shot", "mw-2")  # ids: mw-<benchmark seed>
    assert [r["id"] for r in _records(out)] == ["mw-0", "mw-1", "mw-2"]


def test_reports_table_and_html(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        bench.main(
            [
                "--n",
                "5",
                "--edits",
                "2",
                "--out",
                str(out),
                "--html-samples",
                "3",
                "--editor",
                "oracle",
                "--strategy",
                "single-shot,agent",
                "-q",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    assert "| single-shot | 5 | 100.0% |" in summary and "| agent | 5 | 100.0% |" in summary
    assert "mira-bench --n 5" in summary and "| single-shot | 5 |" in printed
    page = (out / "index.html").read_text()
    images = re.findall(r"src=[\"']([^\"']+)[\"']", page)
    assert len(images) == 3 * 4  # source, truth, two results
    assert all((out / src).is_file() for src in images)
    record = _records(out)[0]
    assert {"pf", "edits_passed", "consistent", "psnr", "success", "steps", "time_s"} <= set(record)


@pytest.mark.parametrize("strategy", ["mirage", "mira+mirage", "agent,mirage", "mirage,agent"])
def test_mirage_strategies_refused_on_the_microworld(tmp_path, capsys, strategy):
    assert bench.main(["--n", "1", "--out", str(tmp_path / "x"), "--strategy", strategy]) == 2
    assert "needs a FLUX diffusion editor" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_mirage_strategy_on_a_folder_with_the_tiny_preset(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "data"
    data.mkdir()
    make_test_image(64, 64).save(data / "a.png")
    (data / "a.txt").write_text("make the left side red")
    out = tmp_path / "out"
    assert (
        bench.main(
            [
                "--dataset",
                str(data),
                "--preset",
                "tiny",
                "--strategy",
                "mirage",
                "--max-steps",
                "1",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    (record,) = _records(out)
    assert record["strategy"] == "mirage" and record["stop_reason"] in (
        "planner_stop",
        "budget_exhausted",
    )
    # the regional row's edit steps are counted (it bypasses the editor-call budget wrapper)
    assert record["steps"] == sum(t["kind"] == "edit" for t in record["trace"])


def test_bad_options_exit_2(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path), "--strategy", "magic"]) == 2
    assert bench.main(["--out", str(tmp_path), "--dataset", str(tmp_path / "nope")]) == 2
    with pytest.raises(SystemExit):
        bench.main(["--edits", "7"])


def test_a_presets_loop_settings_do_not_reach_the_rows(tmp_path, monkeypatch):
    """A preset's loop settings (the micro preset's one shot first and critic's stop) are not
    taken by mira-bench: its rows have only what their own options say."""
    from agent.config import PRESETS

    extra = {"one_shot_first": True, "stop_when_satisfied": 10.0}
    monkeypatch.setitem(PRESETS, "dry-run", {**PRESETS["dry-run"], **extra})
    data = tmp_path / "data"
    data.mkdir()
    make_test_image(64, 48).save(data / "img0.png")
    (data / "img0.txt").write_text("make the left side red")
    base = ["--dataset", str(data), "--preset", "dry-run", "--out", str(tmp_path / "o")]
    runner = bench._Runner(bench.build_parser().parse_args(base), tmp_path / "r")
    assert (runner.config.one_shot_first, runner.config.stop_when_satisfied) == (False, None)
    own = [*base, "--one-shot-first", "--stop-when-satisfied", "9"]
    runner = bench._Runner(bench.build_parser().parse_args(own), tmp_path / "s")
    assert (runner.config.one_shot_first, runner.config.stop_when_satisfied) == (True, 9.0)


def test_folder_and_jsonl_datasets_run_with_a_preset(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        make_test_image(64, 48, seed=i).save(data / f"img{i}.png")
        (data / f"img{i}.txt").write_text("make the left side red")
    import numpy as np
    from PIL import Image

    mask = np.zeros((48, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(data / "img0.mask0.png")
    out = tmp_path / "folder"
    assert (
        bench.main(
            [
                "--dataset",
                str(data),
                "--preset",
                "dry-run",
                "--out",
                str(out),
                "--strategy",
                "single-shot,agent",
                "-q",
            ]
        )
        == 0
    )
    records = {(r["id"], r["strategy"]): r for r in _records(out)}
    assert len(records) == 4
    assert records[("img0", "single-shot")]["consistent"] is True  # the paint stays left
    assert "consistent" not in records[("img1", "agent")]  # no masks: nothing to compare
    (tmp_path / "set.jsonl").write_text(
        json.dumps(
            {
                "id": "a",
                "image": "data/img0.png",
                "instruction": "make the right side blue",
                "masks": ["data/img0.mask0.png"],
            }
        )
        + "\n"
    )
    out2 = tmp_path / "jsonl"
    assert (
        bench.main(
            [
                "--dataset",
                str(tmp_path / "set.jsonl"),
                "--strategy",
                "single-shot",
                "--out",
                str(out2),
                "-q",
            ]
        )
        == 0
    )
    (record,) = _records(out2)
    assert record["id"] == "a" and record["consistent"] is False  # painted outside the mask


@pytest.mark.slow
def test_console_script_runs(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "mira-bench"
    run = subprocess.run(
        [
            str(exe),
            "--n",
            "2",
            "--edits",
            "1",
            "--editor",
            "oracle",
            "--strategy",
            "agent",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "| agent |" in (tmp_path / "run" / "summary.md").read_text()


def _main_table(summary):
    """Row label -> line of the summary's first table (the one with the upper-bound column)."""
    return {
        line.split(" | ")[0][2:]: line
        for line in summary.splitlines()
        if line.startswith("| ") and line.endswith(("| yes |", "| no |"))
    }


def test_protocol_rows_share_the_editor_budget_and_keep_traces(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = _count_runs(monkeypatch)
    assert (
        bench.main(
            [
                "--n",
                "4",
                "--budget",
                "3",
                "--critic",
                "noisy",
                "--critic-error",
                "0,0.2",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    labels = {label for label, _ in calls}
    assert labels == {
        "single-shot",
        "best-of-n (critic error 0)",
        "best-of-n (critic error 0.2)",
        "agent (critic error 0)",
        "agent (critic error 0.2)",
    }
    records = _records(out)
    for r in records:
        assert r["seed"] in range(0, 100_000)  # benchmark seeds by default
        if r["strategy"].startswith("best-of-n"):
            assert r["steps"] == 3 and len(r["trace"]) == 3 and r["stop_reason"] == "best_of_n"
            assert r["trace"][r["picked"]]["overall"] == max(t["overall"] for t in r["trace"])
        elif r["strategy"].startswith("agent"):
            assert (
                1 <= r["steps"] <= 3
                and r["trace"]
                and r["trace"][-1]["kind"] in ("stop", "edit", "tool_error")
            )
        else:
            assert r["steps"] == 1
    assert any(r["stop_reason"] == "editor_budget" for r in records)  # 3 calls < 3 edits + retries
    summary = (out / "summary.md").read_text()
    # the oracle planner makes every agent row an upper bound; single-shot and best-of-n on
    # the noisy editor use no oracle unless the critic is exact
    rows = _main_table(summary)
    assert rows["agent (critic error 0.2)"].endswith("| yes |")
    assert rows["single-shot"].endswith("| no |")
    assert rows["best-of-n (critic error 0.2)"].endswith("| no |")
    assert rows["best-of-n (critic error 0)"].endswith("| yes |")
    out2 = tmp_path / "heuristic"
    assert (
        bench.main(
            [
                "--n",
                "2",
                "--budget",
                "3",
                "--critic",
                "noisy",
                "--critic-error",
                "0,0.2",
                "--planner",
                "heuristic",
                "--strategy",
                "agent",
                "--out",
                str(out2),
                "-q",
            ]
        )
        == 0
    )
    rows = _main_table((out2 / "summary.md").read_text())
    # a noisy critic at error 0 is the oracle critic (an upper bound); at 0.2 nothing is oracle
    assert rows["agent (critic error 0)"].endswith("| yes |")
    assert rows["agent (critic error 0.2)"].endswith("| no |")


def test_best_of_n_picks_what_the_critic_prefers(tmp_path):
    out = tmp_path / "run"
    assert (
        bench.main(
            [
                "--n",
                "10",
                "--budget",
                "4",
                "--strategy",
                "single-shot,best-of-n",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    by = {(r["strategy"], r["id"]): r for r in _records(out)}
    ids = {i for _, i in by}
    best = sum(by[("best-of-n", i)]["success"] for i in ids)
    single = sum(by[("single-shot", i)]["success"] for i in ids)
    assert best > single  # the oracle critic picks a right try when one exists
    for i in ids:  # never worse than its first try, which is the single shot
        assert by[("best-of-n", i)]["success"] >= by[("single-shot", i)]["success"]
    # the summary says how the critic chose: ties (the first try kept) and other picks
    picks = [r for _, r in by.items() if r["strategy"] == "best-of-n"]
    tied = sum(len({t["overall"] for t in r["trace"]}) == 1 for r in picks)
    other = sum(r["picked"] != 0 for r in picks)
    assert other >= best - single > 0
    summary = (out / "summary.md").read_text()
    assert "Best-of-N, how the critic chose:" in summary
    assert f"| best-of-n | 10 | {tied} | {other} |" in summary
    assert "| single-shot | 10 |" not in summary.split("how the critic chose")[1]


def test_components_are_swappable_and_bad_names_are_refused(tmp_path, capsys):
    out = tmp_path / "h"
    assert (
        bench.main(
            [
                "--n",
                "3",
                "--edits",
                "2",
                "--planner",
                "heuristic",
                "--strategy",
                "agent",
                "--language",
                "heldout",
                "--split",
                "test",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    records = _records(out)
    assert all(200_000 <= r["seed"] < 300_000 and r["language"] == "heldout" for r in records)
    assert all(r["trace"] for r in records)
    out2 = tmp_path / "reg"
    assert (
        bench.main(
            [
                "--n",
                "2",
                "--critic",
                "pixel-change",
                "--strategy",
                "best-of-n",
                "--budget",
                "2",
                "--out",
                str(out2),
                "-q",
            ]
        )
        == 0
    )
    assert bench.main(["--n", "1", "--critic", "no-such-critic", "--out", str(tmp_path / "x")]) == 2
    assert "--critic 'no-such-critic'" in capsys.readouterr().err
    assert bench.main(["--n", "1", "--critic-error", "2", "--out", str(tmp_path / "y")]) == 2
    assert bench.main(["--n", "1", "--budget", "0", "--out", str(tmp_path / "z")]) == 2
    with pytest.raises(SystemExit):
        bench.main(["--split", "train"])  # the benchmark never runs on training seeds


# -- issue 15: a resumed run has the same options; option errors are one line -------------------
def test_resume_with_other_options_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = _count_runs(monkeypatch)
    args = ["--n", "2", "--out", str(out), "--strategy", "agent", "-q"]
    assert bench.main([*args, "--seed", "3"]) == 0
    assert json.loads((out / "options.json").read_text())["seed"] == 3
    before = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert bench.main([*args, "--seed", "4", "--p-wrong", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--seed 3 (now 4)" in err and "--p-wrong 0.15 (now 0.5)" in err
    assert (out / "results.jsonl").read_bytes() == before and len(calls) == 2
    assert bench.main([*args, "--seed", "3", "--html-samples", "1"]) == 0  # neutral options


def test_results_without_options_are_not_resumed(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.jsonl").write_text('{"id": "mw-0"}\n')
    assert bench.main(["--n", "1", "--out", str(out), "-q"]) == 2
    assert "options.json" in capsys.readouterr().err


def test_max_steps_0_is_one_line_naming_the_option(tmp_path, capsys):
    assert bench.main(["--n", "1", "--max-steps", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-steps 0" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "options.json").exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--editor", "paint", "--grounder", "side"], "--editor 'paint' has none"),
        (["--editor", "micro-editor", "--grounder", "oracle"], "--grounder 'oracle' has none"),
    ],
)
def test_mirage_on_the_microworld_refuses_an_editor_or_grounder_it_cannot_use(
    tmp_path, capsys, extra, named
):
    pytest.importorskip("torch")
    out = tmp_path / "x"
    args = ["--n", "1", "--strategy", "mirage", "--out", str(out), *extra]
    assert bench.main(args) == 2
    assert named in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


def test_device_reaches_the_learned_backends_and_is_checked(tmp_path, capsys):
    """``mira-bench --device`` reaches every learned backend of a micro-world run (editor,
    planner, grounder, critic) and no oracle tool; it is recorded, so a run is not resumed on
    another device; a bad value, a backend without a device option and a folder dataset are
    refused, one line each."""
    from tools import registry

    seen: dict[str, list[dict]] = {"editor": [], "planner": [], "grounder": [], "critic": []}

    def recording(role):
        def factory(**options):
            seen[role].append(options)
            return registry.build("critic", "pixel-change") if role == "critic" else object()

        return factory

    for role in seen:
        registry.register(role, "test-placed", recording(role), replace=True)
    names = ["--editor", "test-placed", "--planner", "test-placed", "--grounder", "test-placed"]
    parsed = bench.build_parser().parse_args(
        [*names, "--critic", "test-placed", "--device", "cuda:1"]
    )
    runner = bench._Runner(parsed, tmp_path / "r", bench.rows_of(["agent"], "test-placed", [0.1]))
    assert runner.editor is not None and all(v == [{"device": "cuda:1"}] for v in seen.values())
    for v in seen.values():
        v.clear()
    bench._Runner(bench.build_parser().parse_args(names), tmp_path / "s")
    assert seen["editor"] == seen["planner"] == seen["grounder"] == [{}]  # each its own default
    oracle = bench.build_parser().parse_args(["--editor", "oracle", "--device", "cuda"])
    assert bench._Runner(oracle, tmp_path / "o").placement == {"device": "cuda"}  # not passed

    base = ["--n", "1", "--strategy", "best-of-n", "--budget", "2", "--critic", "test-placed"]
    assert bench.main([*base, "--device", "cuda:1", "--out", str(tmp_path / "a"), "-q"]) == 0
    options = json.loads((tmp_path / "a" / "options.json").read_text())
    assert options["device"] == "cuda:1"
    capsys.readouterr()
    assert bench.main([*base, "--out", str(tmp_path / "a"), "-q"]) == 2  # resumed elsewhere
    assert "--device 'cuda:1' (now None)" in capsys.readouterr().err
    # a run made before --device existed (no such key) still resumes without it
    assert bench.main([*base, "--out", str(tmp_path / "b"), "-q"]) == 0
    options = json.loads((tmp_path / "b" / "options.json").read_text())
    del options["device"]
    (tmp_path / "b" / "options.json").write_text(json.dumps(options))
    assert bench.main([*base, "--n", "2", "--out", str(tmp_path / "b"), "-q"]) == 0
    capsys.readouterr()
    assert bench.main([*base, "--device", "gpu", "--out", str(tmp_path / "c")]) == 2
    assert "--device must be cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    no_device = ["--critic", "pixel-change", "--device", "cpu", "--out", str(tmp_path / "d")]
    assert bench.main([*base[:-2], *no_device]) == 2
    assert "--device 'cpu': --critic 'pixel-change' takes none" in capsys.readouterr().err
    folder = tmp_path / "ds"
    folder.mkdir()
    make_test_image().save(folder / "a.png")
    (folder / "a.txt").write_text("make it red")
    other = ["--dataset", str(folder), "--device", "cuda", "--out", str(tmp_path / "e")]
    assert bench.main(other) == 2
    assert "--device places the micro-world's learned backends" in capsys.readouterr().err


def test_loop_gpu_script_runs_packs_and_resumes(tmp_path):
    """benchmarks/loop_gpu.sh on CPU: runs at once, packed into loop.tar with a summary line
    each; given that tar back (RESUME) with more cases asked, a run goes on from the cases it
    finished; a run that fails fails the call."""
    import os
    import subprocess
    import sys
    import tarfile

    root = Path(__file__).resolve().parents[1]
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    jobs = tmp_path / "jobs"
    common = "--split test --edits 2 --budget 2 --editor noisy --critic oracle --planner oracle"
    jobs.write_text(
        f"# a comment\na: --n 1 {common} --strategy single-shot\n\n"
        f"b: --n 2 {common} --strategy best-of-n,agent\n"
    )
    env = dict(os.environ, OUT=str(out), WORK=str(work), PYTHON=sys.executable, JOBS=str(jobs))
    env.update(DEVICE="cpu", LIMIT="300", PARALLEL="2")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "benchmarks/loop_gpu.sh"], cwd=root, env=env, text=True, capture_output=True
        )

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    assert "a exit 0, records 1" in summary and "b exit 0, records 4" in summary
    with tarfile.open(out / "loop.tar") as tar:
        names = set(tar.getnames())
    assert {"res/a/results.jsonl", "res/a/options.json", "res/b/summary.md", "res/b.log"} <= names
    with tarfile.open(out / "loop.tar") as tar:
        assert json.load(tar.extractfile("res/a/options.json"))["device"] == "cpu"  # DEVICE
    # resumed with one case more: the two finished ones are not run again (a mark put on a
    # finished record survives)
    unpacked = tmp_path / "before"
    with tarfile.open(out / "loop.tar") as tar:
        tar.extractall(unpacked, filter="data")
    results = unpacked / "res" / "b" / "results.jsonl"
    first, *rest = results.read_text().splitlines()
    results.write_text("\n".join([first.replace("{", '{"mark": 1, ', 1), *rest]) + "\n")
    with tarfile.open(tmp_path / "before.tar", "w") as tar:
        tar.add(unpacked / "res", arcname="res")
    jobs.write_text(jobs.read_text().replace("b: --n 2", "b: --n 3"))
    env["RESUME"] = str(tmp_path / "before.tar")
    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "b exit 0, records 6" in (out / "summary.txt").read_text()
    with tarfile.open(out / "loop.tar") as tar:
        lines = tar.extractfile("res/b/results.jsonl").read().decode().splitlines()
    assert json.loads(lines[0])["mark"] == 1 and len(lines) == 6
    # a run whose options mira-bench refuses fails the call, named in the summary
    jobs.write_text(f"c: --n 1 {common} --strategy magic\n")
    done = run()
    assert done.returncode == 1 and "c exit 2, records 0" in (out / "summary.txt").read_text()
    # past the deadline a run is not started: reported with 124, not a failure
    jobs.write_text(f"d: --n 1 {common} --strategy single-shot\n")
    env.update(LIMIT="0", RESUME="")
    done = run()
    assert "d exit 124 (not started), records 0" in (out / "summary.txt").read_text()
    assert done.returncode == 1 and "packing loop.tar failed" in done.stdout  # nothing to pack


def test_loop_table_gives_each_seed_and_their_mean(tmp_path, capsys):
    """benchmarks/loop_table.py reads the runs of loop_table.jobs (e<edits>_<language>_s<seed>_
    <group>) and prints per block and row each seed's edits done / tolerant / strict success,
    as each run's own summary gives them, and their mean; the oracle group's rows are upper
    bounds."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "loop_table.py"
    spec = importlib.util.spec_from_file_location("loop_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main([str(tmp_path)])
    assert "no e<edits>_<language>_s<seed>_<group>/results.jsonl" in capsys.readouterr().err

    common = ["--n", "3", "--split", "test", "--edits", "2", "--budget", "2", "--critic", "oracle"]
    own = {}
    for seed in (0, 1):
        out = tmp_path / f"e2_train_s{seed}_base"
        args = [*common, "--seed", str(seed), "--strategy", "single-shot", "--out", str(out)]
        assert bench.main([*args, "--p-noop", "0.5", "-q"]) == 0
        row = next(
            x
            for x in (out / "summary.md").read_text().splitlines()
            if x.startswith("| single-shot |")
        )
        cells = row.strip("| ").split(" | ")
        own[seed] = [float(cells[i].rstrip("%")) for i in (2, 7, 6)]  # done, tolerant, strict
    oracle = tmp_path / "e2_train_s0_oracle"
    assert bench.main([*common, "--strategy", "agent", "--out", str(oracle), "-q"]) == 0
    (tmp_path / "not-a-run").mkdir()  # other folders are skipped
    other = tmp_path / "e2_train_s0_grpo"  # a group of its own: named in its rows
    other.mkdir()
    (other / "results.jsonl").write_bytes((oracle / "results.jsonl").read_bytes())
    preset = tmp_path / "e2_train_s0_preset"  # the micro preset's loop settings: named as such
    preset.mkdir()
    (preset / "results.jsonl").write_bytes(
        (oracle / "results.jsonl").read_bytes()
        + (tmp_path / "e2_train_s0_base" / "results.jsonl").read_bytes()
    )
    capsys.readouterr()
    assert module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| single-shot |"))
    each = ", ".join("/".join(f"{v:.0f}" for v in own[s]) for s in (0, 1))
    mean = " / ".join(f"{(own[0][i] + own[1][i]) / 2:.0f}" for i in range(3))
    assert f"**{mean}** [{each}]" in line, line
    assert "| *upper bound:* agent, oracle planner, critic and grounder |" in out
    assert "| agent (grpo) |" in out
    assert "| agent, one shot first + the critic's stop (the `micro` preset) |" in out
    assert "| single-shot (preset) |" in out  # a row the loop settings do not change
    # the second table: mean editor calls; stop reasons over the seeds' 6 runs; off-target share
    behaviour = [x for x in out.splitlines() if x.startswith("| single-shot |")][1]
    records = [r for s in (0, 1) for r in _records(tmp_path / f"e2_train_s{s}_base")]
    off = 100 * sum(r["changed_fraction"] for r in records) / 6
    assert behaviour.startswith(f"| single-shot | 1.0; single_shot 6; {off:.3f}%; "), behaviour


def test_device_site_packs_wheels_without_the_pipelines_a_bench_never_imports(tmp_path):
    """benchmarks/device_site.py unpacks wheels into one .tar.xz and leaves out diffusers'
    pipelines but FLUX.2's and its modular pipelines, keeping their folders' own modules."""
    import importlib.util
    import tarfile
    import zipfile

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "device_site.py"
    spec = importlib.util.spec_from_file_location("device_site", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    files = {
        "diffusers/__init__.py": "",
        "diffusers/pipelines/pipeline_utils.py": "",
        "diffusers/pipelines/flux2/pipeline_flux2_klein.py": "",
        "diffusers/pipelines/stable_diffusion/pipeline.py": "",
        "diffusers/modular_pipelines/modular_pipeline.py": "",
        "diffusers/modular_pipelines/wan/blocks.py": "",
        "diffusers-0.42.1.dist-info/METADATA": "Name: diffusers",
    }
    with zipfile.ZipFile(wheels / "diffusers-0.42.1-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    with zipfile.ZipFile(wheels / "tenacity-9.2.1-py3-none-any.whl", "w") as z:
        z.writestr("tenacity/__init__.py", "")
    out = tmp_path / "site.tar.xz"
    with pytest.raises(SystemExit):
        module.main([str(tmp_path / "site.zip"), "--wheels", str(wheels)])
    assert module.main([str(out), "--wheels", str(wheels)]) == 0
    with tarfile.open(out) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    kept = {n for n in files if "stable_diffusion" not in n and "wan" not in n}
    assert names == kept | {"tenacity/__init__.py"}


def test_grpo_table_reads_runs_old_and_new_and_measures_the_critics_hacking(tmp_path, capsys):
    """benchmarks/grpo_table.py: reward means per block of steps, largest KL, tied groups and
    entropy from grpo.json's history (or, for runs saved before they were logged, from the
    training log beside the folder, up to the saved step); the critic's SC against the exact
    SC of the same images."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "grpo_table.py"
    spec = importlib.util.spec_from_file_location("grpo_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from agent.train.grpo import StepReward

    assert module.DONE_SC == StepReward.DONE_SC

    def run(name, history, pairs, reward="critic"):
        folder = tmp_path / name
        folder.mkdir()
        summary = {
            "settings": {"reward": reward, "temperature": 1.5},
            "steps": len(history),
            "seconds": 6.0 * len(history),
            "history": history,
            "sc_pairs": pairs,
        }
        (folder / "grpo.json").write_text(json.dumps(summary))
        return folder

    new = [
        {
            "step": i + 1,
            "reward": float(i),
            "kl": 0.01 * i,
            "frac_reward_zero_std": 0.5,
            "entropy": 0.2,
        }
        for i in range(4)
    ]
    # critic 10 and 9 where the truth is 9 and 3; 2 where it is 1; a critique with no verdict
    pairs = [[10.0, 9.0], [9.0, 3.0], [2.0, 1.0], [None, 5.0]]
    a = run("a", new, pairs)
    old = [{"step": i + 1, "reward": 10.0 + i, "kl": 0.002} for i in range(3)]
    b = run("b", old, [], reward="exact")
    lines = [
        "{'loss': '0.1', 'reward': '%d', 'frac_reward_zero_std': '%s', 'entropy': '%s'}" % t
        for t in ((10, "0.25", "0.1"), (11, "0.75", "0.3"), (12, "0.5", "0.2"), (13, "1", "9"))
    ]
    (tmp_path / "b.train.log").write_text("noise\n" + "\n".join(lines) + "\n")
    assert module.main([str(a), str(b), "--block", "2"]) == 0
    out = capsys.readouterr().out
    assert "| a | critic | 1.5 | 4 | 6.0 | 0.5 / 2.5 | 0.0300 | 50% | 0.200 |" in out
    # the log's fourth step came after the last save: left out (mean of 0.25, 0.75, 0.5)
    assert "| b | exact | 1.5 | 3 | 6.0 | 10.5 / 12.0 | 0.0020 | 50% | 0.200 |" in out
    assert "| a | 3 | 7.00 / 4.33 |" in out and "| 2 | 1 (50%) |" in out
    assert out.count("| b |") == 1  # no critic: no hacking row
    c = run("c", new, [[9.0, 9.0], [9.0, 4.0]])  # a critic with one verdict: no correlation
    assert module.main([str(c)]) == 0
    assert "| c | 2 | 9.00 / 6.50 | - | 2 | 1 (50%) |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main([str(tmp_path)])
    assert "holds no grpo.json" in capsys.readouterr().err


def test_one_shot_first_starts_the_agent_from_the_whole_instruction(tmp_path, monkeypatch):
    out, plain = tmp_path / "one_shot", tmp_path / "plain"
    args = ["--n", "3", "--edits", "3", "--strategy", "agent", "--budget", "6", "-q"]
    assert bench.main([*args, "--out", str(plain)]) == 0
    assert bench.main([*args, "--out", str(out), "--one-shot-first"]) == 0
    assert json.loads((out / "options.json").read_text())["one_shot_first"] is True
    for one_shot, planned in zip(_records(out), _records(plain), strict=True):
        first = next(t for t in one_shot["trace"] if t["kind"] == "edit")
        assert first["instruction"] == one_shot["instruction"]  # the whole instruction
        # the oracle planner's first edit is one clause of it
        planned_first = next(t for t in planned["trace"] if t["kind"] == "edit")
        assert planned_first["instruction"] != planned["instruction"]
    # runs made before the option existed (no key in options.json) still resume
    options = json.loads((plain / "options.json").read_text())
    options.pop("one_shot_first")
    (plain / "options.json").write_text(json.dumps(options))
    calls = _count_runs(monkeypatch)
    assert bench.main([*args, "--out", str(plain)]) == 0 and calls == []


def test_stop_when_satisfied_ends_the_agent_on_the_critics_word(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--n",
        "4",
        "--edits",
        "3",
        "--strategy",
        "agent",
        "--budget",
        "6",
        "--editor",
        "oracle",
        "-q",
    ]
    assert (
        bench.main([*args, "--out", str(out), "--one-shot-first", "--stop-when-satisfied", "10"])
        == 0
    )
    records = _records(out)
    satisfied = [r for r in records if r["stop_reason"] == "critic_satisfied"]
    assert satisfied  # the oracle critic scores a finished one-shot edit 10
    for r in satisfied:  # the run ends on the accepted edit that satisfied the critic
        assert r["trace"][-1]["kind"] == "edit" and r["trace"][-1]["accepted"]
    for r in records:  # a one shot scored 10 (its step is the whole instruction) ends the run
        if r["trace"][0]["accepted"] and r["trace"][0]["overall"] >= 10:
            assert r["stop_reason"] == "critic_satisfied" and len(r["trace"]) == 1
    assert any(len(r["trace"]) == 1 for r in satisfied)
    assert json.loads((out / "options.json").read_text())["stop_when_satisfied"] == 10
    capsys.readouterr()
    assert bench.main([*args, "--out", str(tmp_path / "bad"), "--stop-when-satisfied", "11"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stop-when-satisfied 11" in err
    for option in (["--one-shot-first"], ["--stop-when-satisfied", "9"]):
        out3 = tmp_path / "no_loop"
        assert (
            bench.main(["--n", "1", "--strategy", "single-shot", "--out", str(out3), *option]) == 2
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{option[0]} sets the loop" in err
        assert not (out3 / "options.json").exists()
