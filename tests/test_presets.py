"""Presets: `tiny` runs every real backend class offline (noise, wiring only); the real presets
fail with the missing-model error when weights are absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from agent import AgentConfig, create_edit_agent  # noqa: E402
from agent.cli import main  # noqa: E402
from agent.testing import make_test_image  # noqa: E402
from tools.models import ModelNotFoundError  # noqa: E402

REAL = ["flux2-klein", "kontext", "qwen-edit", "ip2p"]


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "in.png"
    make_test_image(64, 64).save(path)
    return path


def test_tiny_preset_runs_every_node_with_real_backend_classes(tmp_path, picture):
    agent = create_edit_agent(
        AgentConfig(preset="tiny", max_steps=1, max_retries_per_step=0), artifacts=tmp_path / "art"
    )
    out = agent.invoke({"image": str(picture), "instruction": "make the left side red"})
    (edit,) = [s for s in out["steps"] if s["kind"] == "edit"]
    assert edit["tool"] == "flux2-klein-tiny" and edit["output"]["width"] == 64
    # random weights: the EditScore critic's text is unreadable, so the edit is rejected,
    # never scored with a made-up number
    assert edit["scores"]["step"]["valid"] is False and not edit["accepted"]
    assert out["result"] == out["steps"][0]["input"]


@pytest.mark.parametrize("strategy", ["mirage", "mira+mirage"])
def test_tiny_preset_with_mirage_strategies(tmp_path, picture, strategy):
    agent = create_edit_agent(
        AgentConfig(preset="tiny", strategy=strategy, max_steps=1), artifacts=tmp_path / "art"
    )
    out = agent.invoke({"image": str(picture), "instruction": "make the left side red"})
    # the tiny VLM cannot split the instruction: a recoverable error the trace shows, no edit
    assert out["steps"][0]["kind"] == "tool_error"
    assert "could not split" in out["steps"][0]["reason"]
    assert out["stop_reason"] in ("planner_stop", "budget_exhausted")


@pytest.mark.parametrize("preset", REAL)
def test_real_presets_name_the_missing_model(tmp_path, preset):
    with pytest.raises(ModelNotFoundError) as info:
        create_edit_agent(AgentConfig(preset=preset), artifacts=tmp_path)
    message = str(info.value).lower()
    assert "never download" in message and "mira" in message  # the planner is resolved first


def test_backend_options_reach_the_factory(tmp_path):
    cfg = AgentConfig(
        preset="flux2-klein", backend_options={"mira-7b": {"checkpoint": str(tmp_path / "nope")}}
    )
    with pytest.raises(ModelNotFoundError, match="nope"):
        create_edit_agent(cfg, artifacts=tmp_path)


def test_cli_real_preset_refused_with_the_missing_model(picture, tmp_path, capsys):
    code = main(
        [str(picture), "make it red", "--preset", "flux2-klein", "--out", str(tmp_path / "o.png")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "never download" in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_cli_tiny_preset_end_to_end(picture, tmp_path):
    exe = Path(sys.executable).parent / "mira-edit"
    out = tmp_path / "o.png"
    run = subprocess.run(
        [
            str(exe),
            str(picture),
            "make the left side red",
            "--preset",
            "tiny",
            "--max-steps",
            "1",
            "--out",
            str(out),
            "--artifacts",
            str(tmp_path / "art"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "tiny random weights" in run.stderr
    trace = json.loads(out.with_suffix(".trace.json").read_text())
    assert out.exists() and any(s["kind"] == "edit" for s in trace["steps"])


def test_cli_backend_option(picture, tmp_path, capsys):
    code = main(
        [
            str(picture),
            "make it red",
            "--preset",
            "flux2-klein",
            "--out",
            str(tmp_path / "o.png"),
            "--backend-option",
            f"mira-7b.checkpoint={tmp_path / 'mira'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "mira") in err
    code = main([str(picture), "make it red", "--backend-option", "nodot"])
    assert code == 2 and "--backend-option" in capsys.readouterr().err
