"""The shipped micro editor edits micro-world scenes correctly: checked against exact ground
truth on fixed test-seed cases (seeds never trained on), through the registry backend, the
CLI and the README's demo command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from agent.micro import MICRO_EDITOR, micro_editor, micro_editor_meta  # noqa: E402
from agent.microworld.render import render  # noqa: E402
from agent.microworld.scoring import score_case, score_edits  # noqa: E402
from agent.microworld.splits import split_of  # noqa: E402
from agent.microworld.truth import make_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The README's demo: its scene is test seed 201005 (two edits, train-split language).
DEMO_SEED = 201005
#: Single edits of test seeds, one per edit type, that the shipped model gets right.
ATOMIC_SEEDS = (201005, 201002, 201011)


@pytest.fixture(scope="module")
def editor():  # type: ignore[no-untyped-def]
    return micro_editor()


def test_shipped_weights_fit_the_repository_limits() -> None:
    files = [p for p in MICRO_EDITOR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert max(p.stat().st_size for p in files) <= 15 * 2**20
    meta = micro_editor_meta()
    assert meta["num_inference_steps"] >= 1 and meta["call_kwargs"]["max_sequence_length"] > 0


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        micro_editor(model=tmp_path)


@pytest.mark.parametrize("seed", ATOMIC_SEEDS)
def test_single_edits_on_test_cases_match_ground_truth(editor, seed: int) -> None:  # type: ignore[no-untyped-def]
    from agent.microworld.edits import apply_edit
    from agent.microworld.truth import object_truth

    assert split_of(seed) == "test"
    case = make_case(seed, n_edits=2, language="train")
    edit, text = case.edits[0], case.atomic[0]
    source = render(case.scene)
    out = editor.edit(source, text, seed=0)
    box, _ = object_truth(case.scene, edit)
    score = score_edits(source, out, render(apply_edit(case.scene, edit)), [box], kinds=[edit.kind])
    assert score.edits_passed == 1.0, (seed, text, score)
    assert score.success_tolerant, (seed, text, score)
    # the input image is never modified
    assert np.array_equal(np.asarray(source), np.asarray(render(case.scene)))


def _mira_edit(example: Path, instruction: str, out: Path, *options: str) -> dict:
    """Run mira-edit as `make demo` does (no --preset); its trace."""
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mira-edit"),
            str(example),
            instruction,
            "--out",
            str(out),
            "--quiet",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained only on the micro-world" in proc.stderr  # the preset's notice, even -q
    trace = json.loads(out.with_suffix(".trace.json").read_text())
    assert trace["config"]["preset"] == "micro"
    assert (trace["config"]["planner"], trace["config"]["critic"], trace["config"]["grounder"]) == (
        "micro-planner",
        "micro-critic",
        "micro-grounder",
    )
    return trace


def test_the_readme_demo_edits_the_example_correctly(tmp_path: Path) -> None:
    """`make demo`'s command (mira-edit with no --preset: the micro models): the example is the
    test case's scene, and the result is right. The micro preset starts from one shot: the
    micro editor makes the whole instruction in one call, the micro VLM's critic accepts it and
    scores the whole instruction 10, which ends the run (no planner call)."""
    case = make_case(DEMO_SEED, n_edits=2, language="train")
    example = ROOT / "examples" / "micro_scene.png"
    from PIL import Image

    assert np.array_equal(
        np.asarray(Image.open(example).convert("RGB")), np.asarray(render(case.scene))
    )
    makefile = (ROOT / "Makefile").read_text()
    # the demo names no preset: it runs mira-edit's default, the micro models
    assert case.instruction.split()[0] in makefile and "--preset" not in makefile
    out = tmp_path / "edited.png"
    trace = _mira_edit(example, case.instruction, out)
    assert (trace["config"]["one_shot_first"], trace["config"]["stop_when_satisfied"]) == (
        True,
        10.0,
    )
    assert trace["stop_reason"] == "critic_satisfied"
    (edit,) = [s for s in trace["steps"] if s["kind"] == "edit"]
    assert edit["accepted"] and edit["planner"]["one_shot_first"]
    assert edit["args"]["instruction"] == case.instruction
    assert edit["scores"]["step"]["valid"] and edit["scores"]["progress"]["overall"] == 10.0
    score = score_case(case, Image.open(out).convert("RGB"))
    assert all(e.passed for e in score.edits), score
    assert score.success_tolerant, score


def test_the_demo_with_the_planner_choosing_every_edit(tmp_path: Path) -> None:
    """The same example with the micro preset's one shot and critic's stop off (`mira-edit
    --no-one-shot-first --stop-when-satisfied off`): the learned planner (the micro VLM with
    the planner adapter) chose both edits and the stop, the micro VLM's critic judged each edit
    (both accepted, and the whole instruction's progress rose from the first edit to the
    second), and the result is right."""
    case = make_case(DEMO_SEED, n_edits=2, language="train")
    from PIL import Image

    out = tmp_path / "edited.png"
    example = ROOT / "examples" / "micro_scene.png"
    options = ("--no-one-shot-first", "--stop-when-satisfied", "off")
    trace = _mira_edit(example, case.instruction, out, *options)
    assert (trace["config"]["one_shot_first"], trace["config"]["stop_when_satisfied"]) == (
        False,
        None,
    )
    assert trace["stop_reason"] == "planner_stop"
    edits = [s for s in trace["steps"] if s["kind"] == "edit"]
    assert [s["accepted"] for s in edits] == [True, True]
    # the learned planner chose each edit and the stop, in MIRA's answer format
    assert all("NEXT_EDITING_INSTRUCTION: " in s["planner"]["raw"] for s in edits)
    assert trace["steps"][-1]["planner"]["raw"].endswith("<stop>")
    assert all(s["scores"]["step"]["valid"] for s in edits)
    progress = [s["scores"]["progress"]["overall"] for s in edits]
    assert progress[0] < progress[1], progress
    score = score_case(case, Image.open(out).convert("RGB"))
    assert all(e.passed for e in score.edits), score
    assert score.success_tolerant, score


def test_demo_benchmark_times_the_demo_in_both_modes(capsys) -> None:
    """benchmarks/demo_cpu.py runs `make demo`'s command (read from the Makefile) with the
    micro preset's loop and with the plain planner loop, and prints a row for each with its
    wall time, editor calls and stop reason (figures: docs/benchmarks.md). Here on the dry-run
    preset, which is quick."""
    import importlib.util

    path = ROOT / "benchmarks" / "demo_cpu.py"
    spec = importlib.util.spec_from_file_location("demo_cpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image, instruction = module.demo_command()
    assert instruction == make_case(DEMO_SEED, n_edits=2, language="train").instruction
    assert Path(image) == ROOT / "examples" / "micro_scene.png"
    with pytest.raises(SystemExit):
        module.main(["--repeat", "0"])
    assert "--repeat must be >= 1, got 0" in capsys.readouterr().err
    assert module.main(["--repeat", "2", "--preset", "dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    rows = [line.strip("| ").split(" | ") for line in lines[1:]]  # below the header
    assert [r[0] for r in rows] == [name for name, _ in module.MODES]
    for name, median, low, high, calls, stop in rows:
        assert 0 < float(low) <= float(median) <= float(high), name
        assert int(calls) >= 1 and stop in ("planner_stop", "critic_satisfied", "no_progress")
