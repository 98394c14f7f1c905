"""``mira-edit``: outputs, refusals, progress and the dry-run notice.

Most tests call ``agent.cli.main`` in-process; one runs the installed console script the way
``make demo`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _badfiles import png_with_size
from PIL import Image

from agent import FatalToolError
from agent.cli import main
from agent.testing import ScriptedCritic, make_test_image

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "examples" / "shapes.png"
DEMO_INSTRUCTION = "make the left side red, then make the right side blue"
STEP_NAME = r"step\d{2}_try\d+_(accepted|rejected)\.png"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run in tmp_path/work with the default artifact store under tmp_path/cache."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return work


@pytest.fixture
def picture(_isolated) -> Path:
    path = _isolated / "pic.png"
    make_test_image(64, 48).save(path)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def accepted(trace: dict) -> list[str]:
    return [
        s["args"]["instruction"] for s in trace["steps"] if s["kind"] == "edit" and s["accepted"]
    ]


def use_critic(monkeypatch, critic) -> None:
    """Make the dry-run preset's critic name build ``critic`` (the CLI builds by name)."""
    from tools import registry

    monkeypatch.setitem(registry._entries["critic"], "pixel-change", lambda: critic)


# -- the console script, as `make demo` runs it -------------------------------------------------
@pytest.mark.slow
def test_console_script_runs_the_demo(tmp_path):
    script = Path(sys.executable).parent / "mira-edit"
    assert script.exists(), f"console script missing: {script} (pip install -e .)"
    before = SHAPES.read_bytes()
    mtime = SHAPES.stat().st_mtime_ns
    out = tmp_path / "outputs" / "shapes_edited.png"  # the folder does not exist yet
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            str(script),
            "examples/shapes.png",
            DEMO_INSTRUCTION,
            "--preset",
            "dry-run",
            "--out",
            str(out),
            "--force",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test doubles" in proc.stderr and "not models" in proc.stderr
    assert "Traceback" not in proc.stderr

    with Image.open(SHAPES) as src, Image.open(out) as result:
        assert result.format == "PNG"
        assert result.size == src.size

    trace = json.loads(out.with_name("shapes_edited.trace.json").read_text())
    assert trace["stop_reason"] == "planner_stop"
    assert accepted(trace) == ["make the left side red", "make the right side blue"]
    assert trace["accepted_edits"] == 2
    assert trace["instruction"] == DEMO_INSTRUCTION
    assert Path(trace["input"]) == SHAPES
    assert trace["config"]["preset"] == "dry-run"

    steps_dir = tmp_path / "outputs" / "shapes_edited_steps"
    names = sorted(p.name for p in steps_dir.iterdir())
    assert names == ["step01_try1_accepted.png", "step02_try1_accepted.png"]
    # the last accepted intermediate is the result
    assert (steps_dir / names[-1]).read_bytes() == out.read_bytes()

    assert "planner_stop" in proc.stdout and str(out) in proc.stdout
    assert SHAPES.read_bytes() == before and SHAPES.stat().st_mtime_ns == mtime


# -- outputs ----------------------------------------------------------------------------------
def test_default_out_trace_and_steps(picture, capsys):
    before = picture.read_bytes()
    assert (
        main([str(picture), "make the top green and make the bottom yellow", "--preset", "dry-run"])
        == 0
    )
    out = Path("pic_edited.png")
    with Image.open(out) as result:
        assert result.size == (64, 48) and result.mode == "RGB"
    trace = json.loads(Path("pic_edited.trace.json").read_text())
    assert trace["stop_reason"] == "planner_stop"
    assert accepted(trace) == ["make the top green", "make the bottom yellow"]
    assert trace["result"]["width"] == 64
    for step in trace["steps"]:  # every step with an output names its file, which exists
        if step["output"] is not None:
            assert (out.parent / step["output_file"]).read_bytes() == Path(
                step["output"]["uri"].removeprefix("file://")
            ).read_bytes()
    assert sorted(p.name for p in Path("pic_edited_steps").iterdir()) == [
        "step01_try1_accepted.png",
        "step02_try1_accepted.png",
    ]
    assert picture.read_bytes() == before

    captured = capsys.readouterr()
    assert "dry-run" in captured.err and "test doubles" in captured.err
    assert "painted" in captured.err and "not models" in captured.err
    assert "step 1 try 1: accepted" in captured.err
    assert "stop reason: planner_stop" in captured.out
    assert "accepted edits: 2" in captured.out
    assert "pic_edited.png" in captured.out and "pic_edited.trace.json" in captured.out


def test_rejected_tries_are_written_too(picture, monkeypatch):
    # step 1: try 1 scores 2 (rejected), try 2 scores 8 and 8 (accepted); step 2: 8, 8.
    use_critic(monkeypatch, ScriptedCritic([2, 8, 8, 8, 8]))
    assert (
        main(
            [
                str(picture),
                "make the left side red, then make the right side blue",
                "--preset",
                "dry-run",
                "--out",
                "res/out.png",
                "--seed",
                "7",
                "--max-steps",
                "3",
                "-q",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in Path("res/out_steps").iterdir())
    assert names == [
        "step01_try1_rejected.png",
        "step01_try2_accepted.png",
        "step02_try1_accepted.png",
    ]
    trace = json.loads(Path("res/out.trace.json").read_text())
    assert trace["config"]["seed"] == 7 and trace["config"]["max_steps"] == 3
    assert [s["output_file"] for s in trace["steps"] if s["kind"] == "edit"] == [
        f"out_steps/{n}" for n in names
    ]


def test_quiet_keeps_the_dry_run_notice_and_summary(picture, capsys):
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "test doubles" in captured.err
    assert "step 1" not in captured.err  # no per-step lines, no bar
    assert "stop reason: planner_stop" in captured.out


def test_artifacts_option_sets_the_store(picture, tmp_path):
    store = tmp_path / "store"
    assert (
        main(
            [
                str(picture),
                "make the left side red",
                "--preset",
                "dry-run",
                "--artifacts",
                str(store),
                "-q",
            ]
        )
        == 0
    )
    trace = json.loads(Path("pic_edited.trace.json").read_text())
    assert trace["artifacts_dir"] == str(store.resolve())
    assert Path(trace["result"]["uri"].removeprefix("file://")).is_relative_to(store.resolve())
    assert not (tmp_path / "cache").exists()


def test_force_overwrites_and_clears_old_step_images(picture):
    Path("pic_edited.png").write_bytes(b"old result")
    Path("pic_edited.trace.json").write_text("{}")
    steps = Path("pic_edited_steps")
    steps.mkdir()
    (steps / "step09_try2_rejected.png").write_bytes(b"stale")
    (steps / "notes.txt").write_text("mine")
    assert (
        main([str(picture), "make the left side red", "--preset", "dry-run", "--force", "-q"]) == 0
    )
    with Image.open("pic_edited.png") as result:
        assert result.size == (64, 48)
    assert json.loads(Path("pic_edited.trace.json").read_text())["stop_reason"] == "planner_stop"
    assert sorted(p.name for p in steps.iterdir()) == ["notes.txt", "step01_try1_accepted.png"]


def test_fatal_editor_error_exits_1_with_outputs(picture, monkeypatch, capsys):
    from tools import registry

    class Broken:
        def edit(self, image, instruction, **kw):
            raise FatalToolError("out of memory", tool="broken")

    monkeypatch.setitem(registry._entries["editor"], "paint", Broken)
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 1
    trace = json.loads(Path("pic_edited.trace.json").read_text())
    assert trace["stop_reason"] == "error"
    assert "out of memory" in trace["stop_detail"]
    assert (
        Path("pic_edited.png").read_bytes()
        == Path(trace["source"]["uri"].removeprefix("file://")).read_bytes()
    )
    assert "stop reason: error" in capsys.readouterr().out


def test_tool_error_escaping_the_graph_is_one_line_exit_1(picture, tmp_path, monkeypatch, capsys):
    use_critic(monkeypatch, ScriptedCritic([FatalToolError("critic model missing", tool="critic")]))
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 1
    # Today the graph lets a critic's FatalToolError escape (the CLI reports it in one line);
    # once verify turns it into stop_reason='error', the summary names it instead.
    captured = capsys.readouterr()
    assert "critic model missing" in captured.out + captured.err
    assert "Traceback" not in captured.err


# -- refusals: exit 2, one line naming the problem, nothing written ----------------------------
def _refused(argv, tmp_path, capsys, *needles):
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "error:" in err and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert snapshot(tmp_path) == before
    return lines[-1]


def test_refuses_out_equal_to_input(picture, tmp_path, capsys):
    for out in (str(picture), "pic.png", "./sub/../pic.png"):
        Path("sub").mkdir(exist_ok=True)
        _refused(
            [str(picture), "make it red", "--out", out, "--force"],
            tmp_path,
            capsys,
            "is the input image",
        )


def test_refuses_out_that_is_a_link_to_the_input(picture, tmp_path, capsys):
    Path("link.png").symlink_to(picture)
    _refused(
        [str(picture), "make it red", "--out", "link.png", "--force"],
        tmp_path,
        capsys,
        "is the input image",
    )


def test_refuses_existing_out_without_force(picture, tmp_path, capsys):
    Path("pic_edited.png").write_bytes(b"keep me")
    _refused([str(picture), "make it red"], tmp_path, capsys, "pic_edited.png", "--force")
    Path("pic_edited.png").unlink()
    Path("pic_edited.trace.json").write_text("{}")
    _refused([str(picture), "make it red"], tmp_path, capsys, "pic_edited.trace.json")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--max-steps", "0", "--max-steps 0"),
        ("--max-steps", "101", "--max-steps 101"),
        ("--seed", "-1", "--seed -1"),
    ],
)
def test_refuses_bad_config_values(picture, tmp_path, capsys, option, value, needle):
    line = _refused([str(picture), "make it red", option, value], tmp_path, capsys, needle)
    assert "greater than" in line or "less than" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-steps", "two"],
        ["--preset", "diffusers"],
        ["--strategy", "regional"],
    ],
)
def test_argparse_refusals(picture, tmp_path, capsys, argv):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(picture), "make it red", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_one_shot_first_and_the_critics_stop_options(monkeypatch, capsys):
    """--one-shot-first / --no-one-shot-first and --stop-when-satisfied SCORE|off reach the
    config; left out, the preset's settings stay (the micro preset's are on); a score outside
    0-10 or a word other than 'off' is refused by argparse, naming the option."""
    from agent import cli

    seen, real = [], cli.AgentConfig
    parsed = [
        cli.build_parser().parse_args(["pic.png", "make it red", *argv])
        for argv in (
            [],
            ["--no-one-shot-first", "--stop-when-satisfied", "off"],
            ["--preset", "dry-run", "--one-shot-first", "--stop-when-satisfied", "9.5"],
            ["--artifacts", "off"],  # 'off' means None for --stop-when-satisfied only
        )
    ]

    class Stop(Exception):
        pass

    def config(**options):
        seen.append(real(**options))
        raise Stop

    monkeypatch.setattr(cli, "AgentConfig", config)
    for args in parsed:
        with pytest.raises(Stop):
            cli._run(args)
    got = [(c.preset, c.one_shot_first, c.stop_when_satisfied) for c in seen]
    assert got[:3] == [("micro", True, 10.0), ("micro", False, None), ("dry-run", True, 9.5)]
    assert str(seen[3].artifacts_dir) == "off"
    monkeypatch.undo()
    for bad in ("11", "-1", "never", "nan"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["p.png", "x", "--stop-when-satisfied", bad])
        err = capsys.readouterr().err
        assert f"--stop-when-satisfied: expected a score from 0 to 10 or 'off', got '{bad}'" in err


def test_the_default_preset_is_micro():
    from agent.cli import build_parser

    args = build_parser().parse_args(["pic.png", "make it red"])
    assert args.preset == "micro"


@pytest.mark.parametrize(
    "error",
    [
        ImportError("the diffusers editors need torch: pip install 'mira-agent[models]'"),
        FileNotFoundError("no micro VLM at '/gone' (no micro_vlm.json)"),
    ],
)
def test_default_preset_without_its_packages_or_weights_is_refused_in_one_line(
    picture, tmp_path, capsys, monkeypatch, error
):
    """mira-edit with no --preset builds the micro models: a package not installed or a shipped
    folder missing is one line naming the preset and the cause, exit 2, nothing written."""
    from tools import registry

    def missing(**options):
        raise error

    monkeypatch.setitem(registry._entries["editor"], "micro-editor", missing)
    line = _refused([str(picture), "make it red"], tmp_path, capsys, "--preset micro", str(error))
    assert "--preset dry-run" in line


def test_default_preset_without_diffusers_is_refused_in_one_line_when_the_editor_loads(
    tmp_path, capsys, monkeypatch
):
    """The micro backends import their packages on first use, inside the run: a plain install
    without diffusers (sys.modules[...] = None makes its import fail as a missing package does)
    is still one line naming the package and the install, exit 2, no output written."""
    import shutil

    pytest.importorskip("transformers")
    example = Path(__file__).resolve().parents[1] / "examples" / "micro_scene.png"
    shutil.copy(example, "scene.png")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    before = snapshot(Path.cwd())  # the outputs' folder (the image store caches the input)
    assert main(["scene.png", "make the red heart blue", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("mira-edit: error: --preset micro: ImportError:"), err[-1]
    assert "mira-agent[models]" in err[-1] and "--preset dry-run" in err[-1]
    assert snapshot(Path.cwd()) == before


@pytest.mark.parametrize("instruction", ["", "   "])
def test_refuses_empty_instruction(picture, tmp_path, capsys, instruction):
    _refused([str(picture), instruction], tmp_path, capsys, "instruction is empty")


def test_refuses_a_file_that_is_not_an_image(tmp_path, capsys):
    Path("notes.png").write_text("not a picture")
    _refused(["notes.png", "make it red"], tmp_path, capsys, "notes.png", "not an image")


def test_refuses_a_missing_image(tmp_path, capsys):
    _refused(["nowhere.png", "make it red"], tmp_path, capsys, "not found", "nowhere.png")


def test_refuses_out_without_png_suffix(picture, tmp_path, capsys):
    _refused([str(picture), "make it red", "--out", "x.jpg"], tmp_path, capsys, ".png")


def test_refuses_out_that_is_a_directory(picture, tmp_path, capsys):
    Path("dir.png").mkdir()
    _refused(
        [str(picture), "make it red", "--out", "dir.png", "--force"], tmp_path, capsys, "directory"
    )


def test_refuses_outputs_that_would_clobber_the_input(tmp_path, capsys):
    steps = Path("res_steps")
    steps.mkdir()
    make_test_image(32, 32).save(steps / "step01_try1_accepted.png")
    _refused(
        [str(steps / "step01_try1_accepted.png"), "make it red", "--out", "res.png", "--force"],
        tmp_path,
        capsys,
        "overwrite the input",
    )


# -- import cost ------------------------------------------------------------------------------
def test_import_cli_is_light():
    code = (
        "import sys, json, agent.cli; print(json.dumps(sorted(m for m in ('langgraph', "
        "'tqdm', 'PIL', 'numpy', 'torch', 'langchain_core') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--preset",
        "--strategy",
        "--out",
        "--max-steps",
        "--seed",
        "--artifacts",
        "--one-shot-first",
        "--stop-when-satisfied",
        "--force",
        "--quiet",
        "dry-run",
    ):
        assert option in text


def test_strategy_the_preset_cannot_run_is_refused(picture, tmp_path, capsys):
    before = snapshot(tmp_path)
    assert (
        main(
            [str(picture), "make it red", "--preset", "dry-run", "--strategy", "mirage"]
            + ["--out", str(tmp_path / "o.png")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--strategy mirage" in err and "grounder's VLM" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


# -- issue 15: the input gate and the store folder through the CLI ------------------------------
def test_refuses_a_decompression_bomb_in_one_line(tmp_path, capsys):
    bomb = tmp_path / "work" / "bomb.png"
    bomb.write_bytes(png_with_size(40_000, 40_000))
    _refused([str(bomb), "make it red"], tmp_path, capsys, "max_input_pixels", repr(str(bomb)))


def test_refuses_an_artifacts_folder_it_cannot_write(picture, tmp_path, monkeypatch, capsys):
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(
        os, "access", lambda p, m, **k: False if Path(p) == locked else real_access(p, m, **k)
    )
    _refused(
        [str(picture), "make it red", "--artifacts", str(locked)],
        tmp_path,
        capsys,
        "--artifacts",
        "not writable",
    )


def test_animation_note_is_in_the_trace(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save("anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert (
        main(
            [
                "anim.gif",
                "make the left side red",
                "--preset",
                "dry-run",
                "--quiet",
                "--max-steps",
                "1",
            ]
        )
        == 0
    )
    trace = json.loads(Path("anim_edited.trace.json").read_text())
    assert "first frame" in trace["input_note"]


# -- issue 15: outputs reserved before any work, published all together -------------------------
def _outputs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "pic.png")


def test_unwritable_out_folder_is_refused_before_any_model_work(
    picture, tmp_path, monkeypatch, capsys
):
    import agent._outputs

    critic = ScriptedCritic([])
    use_critic(monkeypatch, critic)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(agent._outputs.tempfile, "mkdtemp", denied)
    line = _refused(
        [str(picture), "make the left side red", "--out", "res/out.png"],
        tmp_path,
        capsys,
        "--out",
        "Permission denied",
        repr(str(Path("res").resolve())),
    )
    assert "cannot write in" in line
    assert critic.calls == []


def test_a_write_failure_at_the_end_leaves_nothing_and_names_the_path(picture, monkeypatch, capsys):
    import agent.cli
    from tools._io import write_atomic

    def full_disk(path, data):
        if Path(path).name == "result.png":
            raise OSError(28, "No space left on device", str(path))
        write_atomic(path, data)

    monkeypatch.setattr(agent.cli, "write_atomic", full_disk)
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "result.png" in err and "Traceback" not in err
    assert _outputs_in(picture.parent) == []  # no step images, no trace, no staging folder


def test_force_never_writes_through_a_symlinked_steps_folder(picture, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "step01_try1_accepted.png").write_bytes(b"not yours")
    Path("pic_edited_steps").symlink_to(outside)
    assert (
        main([str(picture), "make the left side red", "--preset", "dry-run", "--force", "-q"]) == 0
    )
    assert (outside / "step01_try1_accepted.png").read_bytes() == b"not yours"
    steps = Path("pic_edited_steps")
    assert steps.is_dir() and not steps.is_symlink()
    assert [p.name for p in steps.iterdir()] == ["step01_try1_accepted.png"]


def test_an_interrupt_during_publication_keeps_every_output(picture, monkeypatch, capsys):
    import signal

    import agent._outputs

    real_rename_all = agent._outputs._rename_all

    sent = []

    def interrupted(*args):
        sent.append(True)
        os.kill(os.getpid(), signal.SIGINT)  # held back until all outputs are in place
        os.kill(os.getpid(), signal.SIGTERM)
        real_rename_all(*args)

    monkeypatch.setattr(agent._outputs, "_rename_all", interrupted)
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 0
    assert sent == [True]  # the signals came in the middle of publication
    assert _outputs_in(picture.parent) == [
        "pic_edited.png",
        "pic_edited.trace.json",
        "pic_edited_steps",
    ]
    assert "interrupted" not in capsys.readouterr().err


def test_an_interrupt_before_publication_leaves_nothing(picture, monkeypatch, capsys):
    import agent.cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(agent.cli, "publish", interrupt)
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _outputs_in(picture.parent) == []


def test_a_killed_publication_is_finished_by_the_next_run(picture):
    from agent._outputs import stage

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    out = Path("pic_edited.png").resolve()
    marked = stage(out)
    marked = marked.rename(marked.with_name(f".pic_edited.mira-{pid}-abc"))
    (marked / "steps" / "step01_try1_accepted.png").write_bytes(b"staged step")
    (marked / "trace.json").write_text("{}")
    (marked / "result.png").write_bytes(b"staged result")
    (marked / "PUBLISH").write_text("")
    Path("pic_edited_steps").mkdir()  # the kill came after the steps folder was moved in
    (marked / "steps").rename(Path("pic_edited_steps.new"))
    Path("pic_edited_steps").rmdir()
    Path("pic_edited_steps.new").rename("pic_edited_steps")
    unmarked = out.parent / f".pic_edited.mira-{pid}-xyz"
    unmarked.mkdir()
    (unmarked / "result.png").write_bytes(b"half")
    # the next run finishes the marked publication, drops the unmarked one, then refuses
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 2
    assert Path("pic_edited.png").read_bytes() == b"staged result"
    assert Path("pic_edited.trace.json").read_text() == "{}"
    assert _outputs_in(picture.parent) == [
        "pic_edited.png",
        "pic_edited.trace.json",
        "pic_edited_steps",
    ]


# -- issue 15: terminal output escapes control characters ---------------------------------------
def test_control_characters_never_reach_the_terminal_raw(picture, capsys):
    evil = "make the left side red\x1b[2J\x1b]0;pwned\x07 \u202eright\x9b"
    assert main([str(picture), evil, "--preset", "dry-run"]) == 0
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert not any(c in stream for c in "\x1b\x07\u202e\x9b"), stream
    assert "\\x1b[2J" in captured.out and "\\u202e" in captured.out
    trace = json.loads(Path("pic_edited.trace.json").read_text())
    assert "\x1b[2J" in trace["instruction"]  # the data itself is kept as given


def test_control_characters_in_an_error_are_escaped(picture, tmp_path, monkeypatch, capsys):
    line = _refused(["pic\x1b[31m.png", "make it red"], tmp_path, capsys, "not found")
    assert "\x1b" not in line
    boom = FatalToolError("critic \x1b[31mmissing\x1b]0;pwned\x07", tool="critic")
    use_critic(monkeypatch, ScriptedCritic([boom]))
    assert main([str(picture), "make the left side red", "--preset", "dry-run", "-q"]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.err + captured.out and "\x07" not in captured.err
    assert "critic \\x1b[31mmissing" in captured.err + captured.out
