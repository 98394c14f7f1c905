"""The micro VLM's registry backends (agent/micro.py: micro-planner, micro-grounder,
micro-critic) and the micro-world bench running MIRAGE with them and the micro editor."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random micro VLM folder with a critic adapter (the shape a trained one has)."""
    from agent.train import vlm_model as M
    from agent.train.vlm import CRITIC_ADAPTER, SMOKE_SETTINGS, lora_config, save_folder

    tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
    vlm = M.build_model(M.SMOKE_MODEL, M.build_processor(tok))
    vlm.add_adapter(CRITIC_ADAPTER, lora_config(2))
    out = tmp_path_factory.mktemp("micro-vlm")
    return save_folder(vlm, out, settings=SMOKE_SETTINGS, done=["critic"], metrics={})


def test_the_shipped_folder_is_the_default_and_a_missing_one_is_named(tmp_path, monkeypatch):
    from agent.micro import MICRO_VLM, micro_vlm_folder

    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    assert micro_vlm_folder() == MICRO_VLM  # the shipped one
    with pytest.raises(FileNotFoundError, match="mira-train vlm") as info:
        micro_vlm_folder(tmp_path)
    assert str(tmp_path) in str(info.value) and str(MICRO_VLM) in str(info.value)
    monkeypatch.setenv("MIRA_MICRO_VLM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        micro_vlm_folder()


def test_backends_load_the_folder_through_the_real_classes(folder, monkeypatch):
    from agent.config import AgentConfig  # noqa: F401  (registers the project's backends)
    from agent.microworld.render import render
    from agent.microworld.truth import make_case
    from tools import registry
    from tools.contracts import Critique
    from tools.errors import GroundingError, PlannerOutputError
    from tools.vlm.critic import EditScoreCritic
    from tools.vlm.grounder import QwenVLGrounder
    from tools.vlm.planner import MiraPlanner

    monkeypatch.setenv("MIRA_MICRO_VLM", str(folder))
    planner = registry.build("planner", "micro-planner")
    grounder = registry.build("grounder", "micro-grounder")
    critic = registry.build("critic", "micro-critic", max_new_tokens=8)
    assert isinstance(planner, MiraPlanner) and planner.image_size == 224
    assert isinstance(grounder, QwenVLGrounder) and isinstance(critic, EditScoreCritic)
    assert critic.vlm is planner.vlm is grounder.vlm  # one model, loaded once
    assert critic.vlm.adapters == ["editscore"]
    case = make_case(200_000, n_edits=2)
    image = render(case.scene)
    result = critic.critique(image, image, case.instruction)
    assert isinstance(result, Critique)  # random weights: valid or not, never made up
    try:
        planner.next_action(image, image, case.instruction)
    except PlannerOutputError:
        pass
    try:
        grounder.ground(image, "the red circle")
    except GroundingError:
        pass


def test_shipped_weights_fit_the_repository_limits():
    """The shipped folder: at most 64 MB, no file over 15 MB (the weights in two shards)."""
    from agent.micro import MICRO_VLM

    files = [p for p in MICRO_VLM.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert max(p.stat().st_size for p in files) <= 15 * 2**20
    assert (MICRO_VLM / "model.safetensors.index.json").is_file()


def test_micro_planner_has_room_for_a_reasoned_answer_of_five_edits():
    """A reasoned planner answer (cell lists, then MIRA's answer: ``--planner-reasoning``) of a
    5-edit case fits the micro planner's new tokens in the shipped tokenizer, with the end of
    turn, so greedy decoding is never cut before the instruction."""
    from transformers import AutoTokenizer

    from agent.micro import MICRO_VLM, PLANNER_NEW_TOKENS, micro_planner
    from agent.microworld.formats import planner_samples
    from agent.train.grpo import GRPOSettings

    tok = AutoTokenizer.from_pretrained(MICRO_VLM)
    seeds = range(1_000_200, 1_000_220)
    answers = [
        r["messages"][1]["content"][0]["text"]
        for clauses in (False, True)
        for r in planner_samples(seeds, n_edits=5, reasoning=True, clauses=clauses)
    ]
    longest = max(len(tok(a)["input_ids"]) for a in answers)
    assert micro_planner().max_new_tokens == PLANNER_NEW_TOKENS >= longest + 1
    assert GRPOSettings().max_completion_length == PLANNER_NEW_TOKENS  # GRPO's rollouts too


def test_critic_without_an_adapter_answers_with_the_shared_weights(folder, tmp_path):
    """A folder whose critic was trained into the shared weights (no ``editscore`` folder, as
    the shipped model's) gives an ``EditScoreCritic`` with no adapter, and loads none."""
    import shutil

    from agent.micro import micro_critic
    from agent.microworld.render import render
    from agent.microworld.truth import make_case
    from tools.contracts import Critique

    base = tmp_path / "base"  # the fixture's folder without its adapter
    shutil.copytree(folder, base)
    shutil.rmtree(base / "editscore")
    critic = micro_critic(model=base, max_new_tokens=8)
    assert critic.adapter is None
    with pytest.raises(FileNotFoundError, match="adapter='editscore': the micro VLM at"):
        micro_critic(model=base, adapter="editscore")
    image = render(make_case(200_000, n_edits=1).scene)
    assert isinstance(critic.critique(image, image, "make the circle red"), Critique)
    assert critic.vlm.adapters == []


def test_has_critic_reads_the_adapter_or_the_role_shares(folder, tmp_path):
    """A folder learned the critic when it holds the ``editscore`` adapter or its last roles
    stage named the critic in ``role_shares`` (the shipped one); ``mira-train grpo --reward
    critic`` refuses any other."""
    import shutil

    from agent.micro import MICRO_VLM, has_critic

    assert has_critic(folder) and has_critic(MICRO_VLM)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / "editscore")
    assert not has_critic(bare) and not has_critic(tmp_path / "missing")
    manifest = json.loads((bare / "micro_vlm.json").read_text())
    manifest["settings"]["role_shares"] = {"critic": 6.0}
    for stages, learned in ((["vision", "language"], False), (["roles"], True)):
        manifest["settings"]["stages"] = stages  # the share counts only where roles ran
        (bare / "micro_vlm.json").write_text(json.dumps(manifest))
        assert has_critic(bare) is learned
    manifest["settings"]["role_shares"] = {"critic": 0.0}  # named, but left out
    (bare / "micro_vlm.json").write_text(json.dumps(manifest))
    assert not has_critic(bare)


def test_bench_runs_mirage_on_the_microworld_with_the_micro_models(folder, tmp_path, monkeypatch):
    from agent import bench

    monkeypatch.setenv("MIRA_MICRO_VLM", str(folder))
    out = tmp_path / "run"
    args = ["--n", "1", "--split", "test", "--edits", "2", "--strategy", "mirage"]
    args += ["--editor", "micro-editor", "--grounder", "micro-grounder"]
    args += ["--planner", "micro-planner", "--critic", "micro-critic", "--max-steps", "1"]
    assert bench.main([*args, "--out", str(out), "-q"]) == 0
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert record["strategy"] == "mirage"
    assert record["stop_reason"]  # random weights: parsing or grounding fails, typed


def test_bench_oracle_planner_and_critic_work_beside_the_micro_editor(tmp_path):
    """The upper-bound rows beside a learned editor: the world matches the editor's images to
    the case's states and the oracle critic judges by the tolerant rule, so the oracle agent
    carries on past its first edit (it stopped with ``no_progress`` before)."""
    from agent import bench

    out = tmp_path / "run"
    args = ["--n", "1", "--split", "test", "--edits", "2", "--strategy", "agent"]
    args += ["--editor", "micro-editor", "--planner", "oracle", "--critic", "oracle"]
    assert bench.main([*args, "--out", str(out), "-q"]) == 0
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert record["stop_reason"] == "planner_stop" and record["steps"] >= 2
    assert record["success_tolerant"]


def test_bench_counts_the_edit_steps_of_a_mirage_row(folder, tmp_path, monkeypatch):
    """MIRAGE rows edit through the pipeline itself, not the budget wrapper: their steps are
    the agent's edit steps (the wrapper's call count would say 0)."""
    import agent.factory
    from agent import bench

    class Agent:
        def __init__(self, store):
            self.store = store

        def invoke(self, state):
            steps = [{"kind": "edit", "accepted": k == 1, "step": k} for k in (1, 2)]
            return {"steps": steps, "stop_reason": "planner_stop", "result": state["image"]}

    monkeypatch.setenv("MIRA_MICRO_VLM", str(folder))
    monkeypatch.setattr(
        agent.factory, "create_edit_agent", lambda c, artifacts, **k: Agent(artifacts)
    )
    out = tmp_path / "run"
    args = ["--n", "1", "--split", "test", "--edits", "2", "--strategy", "mirage"]
    args += ["--editor", "micro-editor", "--grounder", "micro-grounder"]
    assert bench.main([*args, "--out", str(out), "-q"]) == 0
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert record["steps"] == 2 and record["accepted"] == 1


def test_grpo_critic_reward_uses_the_micro_critic_backend(folder, tmp_path, monkeypatch):
    """``mira-train grpo --reward critic`` on a micro VLM folder judges with the
    ``micro-critic`` backend on that folder (its editscore adapter here)."""
    import agent.micro
    from agent.train.cli import main

    built = []
    real = agent.micro.micro_critic

    def spy(**kwargs):
        built.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(agent.micro, "micro_critic", spy)
    args = ["grpo", "--model", str(folder), "--out", str(tmp_path), "--reward", "critic"]
    args += ["--exact-editor", "--steps", "1", "--group", "2", "--prompts-per-step", "1"]
    assert main([*args, "--max-completion-length", "4", "--train-seeds", "1"]) == 0
    assert built == [{"model": folder, "device": "cpu"}]  # the run's device
    summary = json.loads((tmp_path / "grpo.json").read_text())
    assert summary["reward"] == "critic_step_reward" and summary["steps"] == 1


def test_table_script_measures_the_shipped_folder_on_test_seeds(tmp_path):
    """benchmarks/micro_vlm_table.sh (the model card's table) asks ``mira-train eval-vlm`` for
    every role on the shipped folder, on test seeds, true and shuffled images, train and
    held-out language, writing one JSON table per command; the planner's row is the shipped
    planner adapter's unless PLANNER_LORA says otherwise."""
    import subprocess
    from pathlib import Path

    from agent.micro import MICRO_VLM

    root = Path(__file__).resolve().parents[1]
    fake = tmp_path / "mira-train"  # records its arguments instead of decoding
    fake.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\n')
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {"PATH": "/usr/bin:/bin", "MIRA_TRAIN": str(fake), "CALLS": str(calls)}
    env["OUT"] = str(tmp_path / "out")
    subprocess.run(["bash", "benchmarks/micro_vlm_table.sh"], cwd=root, env=env, check=True)
    lines = calls.read_text().splitlines()
    roles = [line.split("--roles ")[1].split()[0] for line in lines]
    assert sorted(",".join(roles).split(",")) == [
        "critic",
        "critic_stop",
        "grounder",
        "parser",
        "planner",
    ]
    for line in lines:
        assert line.startswith(f"eval-vlm --model {MICRO_VLM.relative_to(root)} --split test")
        assert f"--out {tmp_path / 'out'}/" in line
    assert all("heldout" in line for line in lines if "planner" not in line and "stop" not in line)
    planner = next(line for line in lines if "--roles planner" in line)
    assert "--planner-lora weights/micro-planner" in planner  # the shipped planner's row
    for extra in ({"PLANNER_LORA": ""}, {"MODEL": str(tmp_path)}):  # the shared weights' own
        calls.unlink()
        subprocess.run(
            ["bash", "benchmarks/micro_vlm_table.sh"], cwd=root, env={**env, **extra}, check=True
        )
        assert "--planner-lora" not in calls.read_text(), extra


def _benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks/ is no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_benchmark_prints_its_table(capsys, monkeypatch):
    """benchmarks/micro_vlm_cpu.py times the shipped model's critique and grounding (each
    through its adapter and with the shared weights) and planner calls and prints one table row
    each (figures: docs/benchmarks.md)."""
    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    module = _benchmark("micro_vlm_cpu")
    with pytest.raises(SystemExit):
        module.main(["--repeat", "0"])
    assert "--repeat must be >= 1, got 0" in capsys.readouterr().err
    assert module.main(["--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    names = [r.split(" | ")[0] for r in rows[1:]]
    assert names == [
        "| critique (SC + PQ)",
        "| critique, shared weights",
        "| ground",
        "| ground, shared weights",
        "| plan",
    ]
    for row in rows[1:]:  # median, min, max of one call: the same number
        assert len(set(row.strip("| ").split(" | ")[1:])) == 1


def test_bench_planner_lora_reaches_the_micro_planner(folder, tmp_path, monkeypatch, capsys):
    """``mira-bench --planner-lora`` switches a GRPO adapter on for the micro planner, and is
    refused, naming both options, beside any other planner."""
    from agent import bench

    monkeypatch.setenv("MIRA_MICRO_VLM", str(folder))
    lora = tmp_path / "mira-planner"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")  # the planner loads it on first use
    args = ["--n", "1", "--split", "test", "--edits", "2", "--strategy", "agent"]
    args += ["--editor", "oracle", "--critic", "oracle", "--planner-lora", str(lora)]
    parsed = bench.build_parser().parse_args([*args, "--planner", "micro-planner"])
    runner = bench._Runner(parsed, tmp_path / "run")
    assert runner.planner.adapter == "mira-planner"
    plain = bench.build_parser().parse_args(["--planner", "micro-planner"])
    assert bench._Runner(plain, tmp_path / "plain").planner.adapter is None
    assert bench.main([*args, "--planner", "oracle", "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--planner-lora" in err and "--planner 'oracle'" in err
    other = ["--dataset", str(tmp_path), "--planner-lora", str(lora), "--out", str(tmp_path / "d")]
    assert bench.main(other) == 2
    assert f"--dataset {str(tmp_path)!r} takes its planner from --preset" in capsys.readouterr().err


def test_bench_records_the_planner_adapter_it_runs(folder, tmp_path, monkeypatch):
    """``mira-bench --planner micro-planner`` names in its options the adapter it runs with:
    the shipped planner adapter on the shipped micro VLM, "none" (the shared weights' own
    planner) on another folder or when asked."""
    import argparse

    from agent import bench
    from agent.micro import MICRO_PLANNER

    def resolved(given=None):
        args = argparse.Namespace(planner_lora=given)
        bench._resolve_planner_lora(args)
        return args.planner_lora

    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    assert resolved() == str(MICRO_PLANNER)
    assert resolved("none") == "none" and resolved("x/y") == "x/y"
    monkeypatch.setenv("MIRA_MICRO_VLM", str(folder))
    assert resolved() == "none"
    args = ["--n", "1", "--split", "test", "--edits", "2", "--strategy", "agent"]
    args += ["--editor", "oracle", "--critic", "oracle", "--planner", "micro-planner"]
    off = bench.build_parser().parse_args([*args, "--planner-lora", "none"])
    assert bench._Runner(off, tmp_path / "off").planner.adapter is None
    monkeypatch.setenv("MIRA_MICRO_VLM", str(tmp_path / "missing"))
    with pytest.raises(bench._Refused, match="no micro VLM at"):
        resolved()


def test_micro_backends_and_eval_load_on_the_device_asked(folder, monkeypatch):
    """``device=`` of the micro planner, grounder and critic (a GRPO run's critic on the GPU) and of
    ``evaluate_vlm`` reaches the model loader; cpu by default."""
    import tools.vlm._qwen as Q
    from agent.micro import micro_critic, micro_grounder, micro_planner
    from agent.train.vlm_eval import evaluate_vlm
    from tools.models import LoadOptions

    seen, real_shared, real_load = [], Q.load_qwen_vl, Q._load
    on_cpu = LoadOptions(device="cpu", dtype="float32")

    def shared(model, *, options=None, **k):
        seen.append(options.device)
        return real_shared(model, options=on_cpu, **k)  # this machine has no GPU

    def load(path, proc, options, **k):
        seen.append(options.device)
        return real_load(path, proc, on_cpu.resolved(), **k)

    monkeypatch.setattr(Q, "load_qwen_vl", shared)
    assert micro_critic(model=folder, device="cuda:1").vlm is not None
    assert micro_planner(model=folder, device="cuda:1").vlm is not None
    assert micro_planner(model=folder).vlm is not None
    assert micro_grounder(model=folder, device="cuda:2").vlm is not None
    assert seen == ["cuda:1", "cuda:1", "cpu", "cuda:2"]
    seen.clear()
    monkeypatch.setattr(Q, "_load", load)
    kw = {"split": "validation", "seeds": 1, "limit": 1, "roles": ["grounder"]}
    table = evaluate_vlm(folder, languages=("train",), device="cuda", **kw)
    assert seen == ["cuda"] and table["device"] == "cuda"


def test_bench_roundtrip_row_is_the_ceiling_and_is_refused_without_an_autoencoder(tmp_path, capsys):
    """``--strategy roundtrip``: the micro editor's autoencoder round trip of the ground truth,
    scored as any row and marked an upper bound; refused, naming the editor, where there is no
    autoencoder."""
    from agent import bench

    out = tmp_path / "run"
    args = ["--n", "1", "--split", "test", "--edits", "2", "--planner", "oracle"]
    args += ["--critic", "noisy", "--critic-error", "0.1,0.2"]
    run = [*args, "--editor", "micro-editor", "--strategy", "single-shot,roundtrip"]
    assert bench.main([*run, "--out", str(out), "-q"]) == 0
    records = {
        r["strategy"]: r
        for r in (json.loads(x) for x in (out / "results.jsonl").read_text().splitlines())
    }
    assert set(records) == {"single-shot", "roundtrip"}  # one row each: neither has a critic
    ceiling = records["roundtrip"]
    assert ceiling["stop_reason"] == "roundtrip" and ceiling["steps"] == 0
    assert ceiling["success_tolerant"] and ceiling["edits_passed"] == 1.0
    assert ceiling["changed_fraction"] < 0.01  # the truth, through the autoencoder
    row = next(x for x in (out / "summary.md").read_text().splitlines() if "| roundtrip |" in x)
    assert row.rstrip().endswith("| yes |")
    # a canvas whose sides are no multiple of the autoencoder's 16 px comes back at its size
    small = tmp_path / "small"
    assert bench.main([*run, "--size", "100", "--out", str(small), "-q"]) == 0
    (row,) = [
        json.loads(x)
        for x in (small / "results.jsonl").read_text().splitlines()
        if '"roundtrip"' in x
    ]
    assert row["stop_reason"] == "roundtrip"
    capsys.readouterr()
    refused = [*args, "--editor", "oracle", "--strategy", "roundtrip", "--out", str(tmp_path / "o")]
    assert bench.main([*refused, "-q"]) == 2
    err = capsys.readouterr().err
    assert "--strategy 'roundtrip'" in err and "--editor 'oracle'" in err


def test_planner_repeats_asks_again_on_the_run_image_and_the_exact_render(
    tmp_path, capsys, monkeypatch
):
    """benchmarks/planner_repeats.py reads a mira-bench folder, and for each run that ended on
    a repeated accepted edit asks the shipped planner on the run's last image and on the
    world's exact render of the edits the scorer found made; here the two images are the same,
    so the two answers are too."""
    from agent.microworld.edits import apply_edits
    from agent.microworld.render import render
    from agent.microworld.truth import make_case

    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    module = _benchmark("planner_repeats")
    with pytest.raises(SystemExit):
        module.main([str(tmp_path)])
    assert "has no results.jsonl" in capsys.readouterr().err

    case = make_case(200000, n_edits=2, size=224, language="train")
    first = case.atomic[0]
    run = {
        "id": "mw-200000",
        "seed": 200000,
        "n_edits": 2,
        "language": "train",
        "edits": [{"index": 0, "passed": True}, {"index": 1, "passed": False}],
        "trace": [
            {"kind": "edit", "accepted": True, "instruction": first, "reason": "accepted"},
            {
                "kind": "stop",
                "accepted": False,
                "instruction": None,
                "reason": f"the planner repeated an accepted edit: {first!r}",
            },
        ],
    }
    other = {**run, "id": "mw-200001", "trace": run["trace"][:1]}  # no repeat: not asked
    (tmp_path / "results.jsonl").write_text(json.dumps(run) + "\n" + json.dumps(other) + "\n")
    (tmp_path / "images" / "mw-200000").mkdir(parents=True)
    render(apply_edits(case.scene, [case.edits[0]])).save(tmp_path / "images/mw-200000/agent.png")
    assert module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| mw-")]
    assert len(rows) == 1 and rows[0].startswith("| mw-200000 | 0 | ")
    cells = rows[0].strip("| ").split(" | ")
    assert cells[2] == cells[4] and cells[3] == cells[5] and cells[3] in ("yes", "no")
    assert "1 of 1 runs: the same verdict on both images" in out


def test_planner_errors_names_where_a_wrong_answer_departs(capsys, monkeypatch):
    """benchmarks/planner_errors.py: a wrong answer is counted under the first part of its
    reasoning that differs from the reference (changed cells, a clause's cells, the marks),
    else under the answer; its table covers every state asked, right or not."""
    module = _benchmark("planner_errors")
    ref = (
        "Changed cells: r0c1. Clauses: make the star red (r0c1): done | remove the cross "
        "(r1c2): to do. NEXT_EDITING_INSTRUCTION: remove the cross"
    )
    assert module.reasoning_parts(ref) == {
        "changed cells": ["r0c1"],
        "clause cells": ["r0c1", "r1c2"],
        "marks": ["done", "to do"],
    }
    said = {
        "changed cells": ref.replace("Changed cells: r0c1.", "Changed cells: r0c1, r2c2."),
        "clause cells": ref.replace("(r1c2)", "(r1c3)"),
        "marks": ref.replace("(r1c2): to do", "(r1c2): done"),
        "answer": ref.replace("INSTRUCTION: remove the cross", "INSTRUCTION: remove the star"),
    }
    for part, text in said.items():
        assert text != ref and module.first_departure(text, ref) == part, part
    assert module.first_departure("<stop>", ref) == "answer"  # no reasoning to compare
    assert module.first_departure(ref.replace(": done", ": maybe"), ref) == "answer"

    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    with pytest.raises(SystemExit):
        module.main(["--limit", "0"])
    assert "--seeds and --limit must be positive" in capsys.readouterr().err
    assert module.main(["--seeds", "1", "--limit", "3"]) == 0  # the shipped planner
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    counts = {r[0]: [int(c) for c in r[1:]] for r in rows[1:] if r[1].isdigit()}
    states, right, *parts = counts.pop("all")
    assert states == 3 and right + sum(parts) == 3
    modes = ("wrong", "bleed", "partial", "noop")  # planner_samples' mistakes
    assert set(counts) <= {"next", "stop"} | {f"corrective ({m})" for m in modes}
    for col in range(6):  # the class rows add up to the "all" row
        assert sum(c[col] for c in counts.values()) == [states, right, *parts][col]
    # --planner-edits and --seed-offset choose the states' cases
    from agent.train import vlm_eval

    asked = []
    monkeypatch.setattr(
        vlm_eval, "planner_states", lambda seeds, *a, **k: asked.append((seeds, k)) or []
    )
    assert module.main(["--seeds", "2", "--seed-offset", "60", "--planner-edits", "5,5"]) == 0
    assert asked[-1][0] == range(100_060, 100_062) and asked[-1][1]["edits"] == (5, 5)
    assert module.main(["--seeds", "2"]) == 0 and asked[-1][1]["edits"] == (1, 4)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        module.main(["--planner-edits", "3,2"])
    assert "--planner-edits '3,2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--seed-offset", "99999"])
    assert "--seeds 60 --seed-offset 99999: split 'validation' has" in capsys.readouterr().err


@pytest.fixture(scope="module")
def grounder_folder(tmp_path_factory):
    """A tiny random micro VLM folder with a ``grounder`` adapter and no critic adapter."""
    from agent.train import vlm_model as M
    from agent.train.vlm import GROUNDER_ADAPTER, SMOKE_SETTINGS, lora_config, save_folder

    tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
    vlm = M.build_model(M.SMOKE_MODEL, M.build_processor(tok))
    out = tmp_path_factory.mktemp("micro-vlm-grounder")
    save_folder(vlm, out, settings=SMOKE_SETTINGS, done=["roles"], metrics={})
    vlm.add_adapter(GROUNDER_ADAPTER, lora_config(2))
    vlm.model.save_pretrained(out / GROUNDER_ADAPTER, adapter_name=GROUNDER_ADAPTER)
    return out


def test_micro_grounder_switches_the_folders_grounder_adapter_on(grounder_folder, folder):
    """A folder with a ``grounder`` adapter: ``micro-grounder`` grounds through it (and only it:
    the critic and planner are not switched to it), ``adapter=None`` asks the shared weights,
    another name is refused naming it; a folder without one grounds with the shared weights."""
    from agent.micro import GROUNDER_ADAPTER, grounder_adapter, micro_critic, micro_grounder
    from agent.microworld.render import render
    from agent.microworld.truth import make_case
    from tools.errors import GroundingError

    assert GROUNDER_ADAPTER == "grounder" and grounder_adapter(grounder_folder) == "grounder"
    assert grounder_adapter(folder) is None
    image = render(make_case(200_000, n_edits=1).scene)
    for kw, want in (({}, "grounder"), ({"adapter": None}, None)):
        grounder = micro_grounder(model=grounder_folder, max_new_tokens=4, **kw)
        assert grounder.adapter == want
        asked, real = [], grounder.vlm.generate

        def generate(*a, real=real, asked=asked, **k):
            asked.append(k.get("adapter"))
            return real(*a, **k)

        grounder.vlm.generate = generate
        try:
            grounder.ground(image, "the red circle")
        except GroundingError:
            pass
        del grounder.vlm.generate
        assert asked and set(asked) == {want}  # each try (a retry too)
        assert "grounder" in grounder.vlm.adapters  # loaded once on the shared model
    critic = micro_critic(model=grounder_folder, max_new_tokens=4)
    asked, real = [], critic.vlm.generate

    def critic_generate(*a, real=real, **k):
        asked.append(k.get("adapter"))
        return real(*a, **k)

    critic.vlm.generate = critic_generate
    critic.critique(image, image, "make the circle red")
    del critic.vlm.generate
    assert asked and set(asked) == {None}  # the critic answers without the grounder's adapter
    with pytest.raises(FileNotFoundError, match="adapter='other': the micro VLM at"):
        micro_grounder(model=grounder_folder, adapter="other")
    assert micro_grounder(model=folder).adapter is None


def test_eval_vlm_grounder_rows_use_the_grounder_adapter(grounder_folder, monkeypatch, capsys):
    """``evaluate_vlm``'s grounder rows go through the folder's grounder adapter, as
    ``micro-grounder`` does, or the base with ``grounder_in_base``; the table says which. The
    CLI refuses ``--grounder-in-base`` without the grounder among the roles."""
    from agent.train import vlm_eval
    from agent.train.cli import main

    used = []
    real = vlm_eval._grounder

    def spy(vlm, seeds, language, limit, adapter=None):
        used.append(adapter)
        return real(vlm, seeds, language, 1, adapter=adapter)

    monkeypatch.setitem(vlm_eval.ROLES, "grounder", spy)
    monkeypatch.setattr(vlm_eval, "_grounder", spy)
    kw = {"split": "validation", "seeds": 1, "limit": 1, "roles": ["grounder"]}
    table = vlm_eval.evaluate_vlm(grounder_folder, languages=("train",), **kw)
    assert table["grounder_adapter"] == "grounder" and used == ["grounder"]
    table = vlm_eval.evaluate_vlm(
        grounder_folder, languages=("train",), grounder_in_base=True, **kw
    )
    assert table["grounder_adapter"] is None and used == ["grounder", None]
    args = ["eval-vlm", "--model", str(grounder_folder), "--roles", "parser"]
    assert main([*args, "--grounder-in-base"]) == 2
    assert "--grounder-in-base needs the grounder" in capsys.readouterr().err


def test_the_grounder_adapter_is_used_only_on_the_weights_it_was_cut_against(
    grounder_folder, tmp_path
):
    """A ``grounder`` adapter whose ``extract_lora.json`` names other base weights (the folder
    trained again since the cut) is not switched on; ``load_folder`` loads it only when asked
    (evaluation), so training and ``merge-lora`` still start from the base alone."""
    import shutil

    from agent.micro import grounder_adapter, micro_grounder, weights_digest
    from agent.train.vlm import load_folder

    moved = tmp_path / "moved"
    shutil.copytree(grounder_folder, moved)
    report = moved / "grounder" / "extract_lora.json"
    report.write_text(json.dumps({"base_digest": "0" * 64}))
    assert grounder_adapter(moved) is None and micro_grounder(model=moved).adapter is None
    report.write_text(json.dumps({"base_digest": weights_digest(moved)}))
    assert grounder_adapter(moved) == "grounder"
    assert load_folder(moved)[0].adapters == []
    assert load_folder(moved, grounder=True)[0].adapters == ["grounder"]
