"""MIRA stage 2 (agent/train/grpo.py): GRPO with TRL and a peft LoRA on a micro planner,
rewarded by executing each sampled step; the same code path on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from agent.train import grpo as G  # noqa: E402

SEED = 1_000_003  # a train seed whose case has at least two edits (checked below)


def ReadingEditor(states):
    """The project's exact executor, knowing the current image of every state of ``SEED``."""
    return G.reading_editor(G.planner_prompts([SEED]))


def _images(state):
    """(original, current) of a planner sample."""
    return [c["image"] for c in state["messages"][0]["content"] if c["type"] == "image"]


@pytest.fixture(scope="module")
def states():
    from agent.microworld import formats

    return list(formats.planner_samples([SEED]))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random micro VLM saved as a folder (the shape a trained one has)."""
    from agent.train import vlm_model as M
    from agent.train.vlm import SMOKE_SETTINGS, save_folder

    tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
    vlm = M.build_model(M.SMOKE_MODEL, M.build_processor(tok))
    return save_folder(
        vlm, tmp_path_factory.mktemp("base"), settings=SMOKE_SETTINGS, done=[], metrics={}
    )


def test_defaults_are_mira_stage_2_and_bad_settings_are_named():
    s = G.GRPOSettings()
    assert (s.steps, s.group, s.lr, s.beta, s.lambda_sc, s.lambda_pq) == (
        200,
        5,
        5e-6,
        0.04,
        2.0,
        0.5,
    )
    for change, word in (
        ({"group": 1}, "group"),
        ({"lr": 0.0}, "lr"),
        ({"beta": -1.0}, "beta"),
        ({"reward": "pixels"}, "reward"),
        ({"steps": 0}, "steps"),
        ({"seconds": 0.0}, "seconds"),
    ):
        with pytest.raises(ValueError, match=word):
            G.settings_for(**change)


def test_inputs_are_the_planner_states_with_both_images(states):
    inputs = G.planner_prompts([SEED])
    assert len(inputs) == len(states)
    first = inputs[0]
    assert [c["type"] for c in first["prompt"][0]["content"]].count("image") == 2
    assert all("image" not in c for c in first["prompt"][0]["content"] if c["type"] == "image")
    original, current = first["images"]
    assert original.tobytes() == _images(states[0])[0].tobytes()
    assert current.tobytes() == _images(states[0])[1].tobytes()
    case = json.loads(first["case"])
    assert case["seed"] == SEED and case["instruction"] == states[0]["instruction"]


def _call(reward, states, answers):
    inputs = G.planner_prompts([SEED])
    # matched by the sample's id (many states share an answer, so it does not identify one)
    by_id = {json.loads(i["case"])["id"]: i for i in inputs}
    rows = [(by_id[s["id"]], a) for s, a in zip(states, answers, strict=True)]
    return reward(
        prompts=[r["prompt"] for r, _ in rows],
        completions=[[{"role": "assistant", "content": a}] for _, a in rows],
        images=[r["images"] for r, _ in rows],
        case=[r["case"] for r, _ in rows],
    )


def test_exact_reward_ranks_progress_over_stop_over_garbage(states):
    from agent.prompts import STOP_TOKEN

    clean = next(s for s in states if s["mistake"] is None and not s["state"])
    final = next(s for s in states if s["answer"] == STOP_TOKEN)
    assert max(len(s["state"]) for s in states) >= 2  # the case has at least two edits
    editor = ReadingEditor(states)
    reward = G.StepReward(editor, source="exact")
    step, stop, garbage = _call(
        reward, [clean] * 3, [clean["answer"], STOP_TOKEN, "\x00\x01 ~~ \x02"]
    )
    assert step > stop > garbage == 0.0  # progress beats stopping early; unparseable is minimum
    assert [d["decision"] for d in reward.last] == ["step", "stop", "unparseable"]
    assert editor.calls == 1  # only the step ran the editor
    (done,) = _call(reward, [final], [STOP_TOKEN])
    assert done == 2.0 * 10 + 0.5 * 10  # every edit done, nothing else changed: the maximum
    assert done > step


def test_step_cost_and_early_stop_penalty_rank_stops_and_steps(states):
    """Once every edit is done, MIRA's reward scores a step that changes nothing as a stop;
    ``step_cost`` takes from steps only, so stopping wins there; ``early_stop_penalty`` takes
    from stops before the request is done only; bad values are named."""
    from agent.prompts import STOP_TOKEN

    final = next(s for s in states if s["answer"] == STOP_TOKEN)
    clean = next(s for s in states if s["mistake"] is None and not s["state"])
    redo = clean["answer"]  # the first edit again, on the image where it is done
    mira = G.StepReward(ReadingEditor(states), source="exact")
    assert _call(mira, [final] * 2, [redo, STOP_TOKEN]) == [25.0, 25.0]
    costly = G.StepReward(ReadingEditor(states), source="exact", step_cost=1.5)
    assert _call(costly, [final] * 2, [redo, STOP_TOKEN]) == [23.5, 25.0]
    step, stop = _call(costly, [clean] * 2, [clean["answer"], STOP_TOKEN])
    assert step > stop  # progress still beats stopping early
    # a stop before the request is done loses early_stop_penalty; a done stop does not
    wary = G.StepReward(ReadingEditor(states), source="exact", early_stop_penalty=4.0)
    assert _call(wary, [clean], [STOP_TOKEN]) == [max(0.0, stop - 4.0)]
    assert _call(wary, [final], [STOP_TOKEN]) == [25.0]
    assert _call(wary, [clean], [clean["answer"]]) == [step + 1.5]  # steps keep their reward
    # both never go below the minimum
    assert _call(
        G.StepReward(ReadingEditor(states), source="exact", early_stop_penalty=10),
        [clean],
        [STOP_TOKEN],
    ) == [0.0]
    huge = G.StepReward(ReadingEditor(states), source="exact", step_cost=100)
    assert _call(huge, [clean], [clean["answer"]]) == [0.0]

    class Critic:  # judges every image with SC = sc, PQ = 10
        def __init__(self, sc):
            self.sc = sc

        def critique(self, source, edited, instruction):
            from tools.contracts import Critique

            return Critique(prompt_following=10, consistency=self.sc, naturalness=10, artifacts=10)

    # "done" starts at SC 9 (DONE_SC): a stop judged 9 keeps its reward, one judged 8 does not
    for sc, expected in ((9, 2.0 * 9 + 5.0), (8, 2.0 * 8 + 5.0 - 3.0)):
        judged = G.StepReward(ReadingEditor(states), critic=Critic(sc), early_stop_penalty=3.0)
        assert _call(judged, [clean], [STOP_TOKEN]) == [expected]
    with pytest.raises(ValueError, match="step_cost must be >= 0, got -1"):
        G.StepReward(ReadingEditor(states), source="exact", step_cost=-1)
    with pytest.raises(ValueError, match="step_cost must be >= 0, got nan"):
        G.settings_for(step_cost=float("nan"))
    with pytest.raises(ValueError, match="early_stop_penalty must be >= 0, got -2"):
        G.StepReward(ReadingEditor(states), source="exact", early_stop_penalty=-2)


def test_critic_reward_uses_the_critique_and_an_invalid_one_gets_the_minimum(states):
    from tools.contracts import Critique

    class FakeCritic:
        def __init__(self, critique):
            self.critique_ = critique
            self.seen = []

        def critique(self, source, edited, instruction):
            self.seen.append(instruction)
            return self.critique_

    clean = next(s for s in states if s["mistake"] is None and not s["state"])
    good = Critique(prompt_following=8, consistency=6, naturalness=9, artifacts=7)
    critic = FakeCritic(good)
    (r,) = _call(G.StepReward(ReadingEditor(states), critic=critic), [clean], [clean["answer"]])
    assert r == pytest.approx(2.0 * 6 + 0.5 * 7)  # SC = min(PF, Cons), PQ = min(N, A)
    assert critic.seen == [clean["instruction"]]  # judged against the FULL instruction
    bad = FakeCritic(Critique.invalid("no json"))
    (r,) = _call(G.StepReward(ReadingEditor(states), critic=bad), [clean], [clean["answer"]])
    assert r == 0.0
    with pytest.raises(ValueError, match="critic"):
        G.StepReward(ReadingEditor(states), source="critic")


def test_positions_in_trl_forward_equal_the_training_positions(base):
    """TRL feeds the processor's ``mm_token_type_ids`` to every forward; with them transformers'
    own multimodal RoPE positions equal ``rope_positions`` (what SFT trained with) on a
    left-padded batch of prompts of different lengths."""
    import torch
    from trl.data_utils import prepare_multimodal_messages

    from agent.train.vlm import load_folder, with_positions

    vlm = load_folder(base)[0]
    inputs = G.planner_prompts([1_000_000])[:1] + G.planner_prompts([1_000_001])[:1]
    vlm.processor.tokenizer.padding_side = "left"
    batch = vlm.processor.apply_chat_template(
        conversation=[prepare_multimodal_messages(x["prompt"], images=x["images"]) for x in inputs],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        padding=True,
        return_tensors="pt",
    )
    mask = batch["attention_mask"].bool()
    assert not mask.all()  # the two prompts differ in length: one is padded
    model = vlm.model.eval()
    with torch.no_grad():
        theirs = model(**dict(batch)).logits
        ours = model(**with_positions(vlm, dict(batch), "cpu")).logits
    assert torch.equal(theirs[mask], ours[mask])


def test_grpo_trains_a_lora_that_mira_planner_loads(base, tmp_path, states):
    """A few GRPO steps on a random micro VLM; the adapter changes the policy and
    ``MiraPlanner.from_pretrained(base, lora=...)`` loads it with no special case."""
    import torch
    from safetensors.torch import load_file

    from tools.vlm.planner import MiraPlanner

    def length_reward(prompts, completions, **_):  # always varies: every group has a gradient
        return [float(len(c[0]["content"])) for c in completions]

    settings = G.settings_for(
        steps=3, group=2, prompts_per_step=1, lr=5e-2, max_completion_length=6, lora_r=2
    )
    summary = G.train_grpo(
        base,
        tmp_path / "out",
        reward=length_reward,
        settings=settings,
        inputs=G.planner_prompts([SEED]),
    )
    assert summary["steps"] == 3
    assert [h["step"] for h in summary["history"]] == [1, 2, 3]
    assert all(
        {"reward", "reward_std", "kl", "frac_reward_zero_std", "entropy"} <= set(h)
        for h in summary["history"]
    )
    assert json.loads((tmp_path / "out" / "grpo.json").read_text())["steps"] == 3
    saved = load_file(tmp_path / "out" / "mira-planner" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())
    assert not any("visual" in k for k in saved)  # the language model only

    planner = MiraPlanner.from_pretrained(
        str(base), lora=str(tmp_path / "out" / "mira-planner"), image_size=None
    )
    vlm = planner.vlm
    original, current = _images(states[0])
    chat = planner.messages(original, current, states[0]["instruction"])
    inputs = vlm.processor.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        vlm._set_state(planner.adapter)
        tuned = vlm.model(**dict(inputs)).logits
        vlm._set_state(None)
        plain = vlm.model(**dict(inputs)).logits
    assert not torch.allclose(tuned, plain)

    from agent.micro import micro_planner

    backend = micro_planner(model=base, lora=tmp_path / "out" / "mira-planner")
    assert backend.adapter == "mira-planner" and "mira-planner" in backend.vlm.adapters
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        micro_planner(model=base, lora=tmp_path)


class Forced(G.StepReward):
    """A StepReward whose even-numbered answers are replaced by the reference answer: a random
    policy rarely writes a parseable step, and the test must see the editor and the judge run
    inside TRL's loop."""

    seen: list = []

    def __call__(self, prompts, completions, *, case, **kwargs):
        completions = [
            [{"role": "assistant", "content": json.loads(c)["reference"]}] if i % 2 == 0 else x
            for i, (x, c) in enumerate(zip(completions, case, strict=True))
        ]
        rewards = super().__call__(prompts, completions, case=case, **kwargs)
        Forced.seen.extend(self.last)
        return rewards


def test_step_reward_executes_and_judges_inside_trl(base, tmp_path, states):
    editor = ReadingEditor(states)
    reward = Forced(editor, source="exact")
    settings = G.settings_for(steps=2, group=2, prompts_per_step=1, max_completion_length=4)
    summary = G.train_grpo(
        base, tmp_path, reward=reward, settings=settings, inputs=G.planner_prompts([SEED])
    )
    assert summary["steps"] == 2 and summary["trl"]["loss_type"] == "grpo"
    assert editor.calls >= 1  # every step's reference answer ran through the editor
    decisions = {d["decision"] for d in reward.last}
    assert decisions & {"step", "stop"}
    judged = [d for d in reward.last if d["decision"] in ("step", "stop")]
    assert all(d["reward"] == 2.0 * d["sc_pq"][0] + 0.5 * d["sc_pq"][1] for d in judged)


def test_a_failed_run_keeps_the_steps_it_finished(base, tmp_path, monkeypatch):
    calls, saves, real_save = [], [], G._save

    def save(trainer, out, summary):  # every save holds the metrics of every step it counts
        saves.append((summary["steps"], len(summary["history"]), summary["stopped"]))
        real_save(trainer, out, summary)

    monkeypatch.setattr(G, "_save", save)

    def failing(prompts, completions, **_):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the editor machine went away")
        return [float(len(c[0]["content"])) for c in completions]

    settings = G.settings_for(
        steps=5, group=2, prompts_per_step=1, max_completion_length=4, lora_r=2, save_every=1
    )
    with pytest.raises(RuntimeError, match="went away"):
        G.train_grpo(
            base, tmp_path, reward=failing, settings=settings, inputs=G.planner_prompts([SEED])[:4]
        )
    summary = json.loads((tmp_path / "grpo.json").read_text())
    assert summary["steps"] == 2 and summary["stopped"].startswith("error: RuntimeError")
    assert [s[:2] for s in saves] == [(1, 1), (2, 2), (2, 2)]  # steps 1, 2, then the error's
    assert [s[2] for s in saves[:2]] == ["running", "running"]
    assert not summary["schedule_complete"]
    assert (tmp_path / "mira-planner" / "adapter_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wall_clock_budget_stops_training(base, tmp_path, monkeypatch):
    def zero(prompts, completions, **_):
        return [0.0] * len(completions)

    settings = G.settings_for(
        steps=50, group=2, prompts_per_step=1, max_completion_length=4, lora_r=2, seconds=0.01
    )
    from trl.trainer.grpo_trainer import GRPOTrainer

    train, saved_inside = GRPOTrainer.train, []

    def train_then_look(self, *args, **kwargs):  # what is on disk when the trainer returns
        result = train(self, *args, **kwargs)
        file = tmp_path / "grpo.json"
        saved_inside.append(json.loads(file.read_text()) if file.is_file() else None)
        return result

    monkeypatch.setattr(GRPOTrainer, "train", train_then_look)
    summary = G.train_grpo(
        base, tmp_path, reward=zero, settings=settings, inputs=G.planner_prompts([SEED])[:2]
    )
    assert summary["steps"] == 1 and summary["stopped"] == "seconds"
    assert not summary["schedule_complete"]
    # the stop saved its step before the trainer wound down (a run that hangs there keeps it)
    assert saved_inside[0] is not None
    assert saved_inside[0]["steps"] == 1 and saved_inside[0]["stopped"] == "seconds"
    assert len(saved_inside[0]["history"]) == 1  # with the step's own metrics


def test_cli_checks_its_arguments(base, tmp_path, capsys):
    from agent.train.cli import main

    assert main(["grpo", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["grpo", "--model", str(base), "--out", str(tmp_path), "--group", "1"]) == 2
    assert "group must be >= 2" in capsys.readouterr().err
    assert main(["grpo", "--model", str(base), "--out", str(tmp_path)]) == 2  # no critic learned
    assert "editscore" in capsys.readouterr().err
    bad = ["--editor-backend", "nope"]
    assert main(["grpo", "--model", str(base), "--out", str(tmp_path), *bad]) == 2
    assert "'nope' is not one of" in capsys.readouterr().err


def test_cli_runs_the_exact_reward_with_the_micro_editor(base, tmp_path):
    from agent.train.cli import main

    rc = main(
        [
            "grpo",
            "--model",
            str(base),
            "--out",
            str(tmp_path),
            "--reward",
            "exact",
            "--steps",
            "1",
            "--group",
            "2",
            "--prompts-per-step",
            "1",
            "--max-completion-length",
            "4",
            "--train-seeds",
            "1",
            "--editor-steps",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads(Path(tmp_path, "grpo.json").read_text())
    assert summary["reward"] == "exact_step_reward" and summary["steps"] == 1


def test_real_scale_path_runs_on_tiny_random_backends(base, tmp_path, monkeypatch):
    """The real-scale wiring (a registry editor and critic instead of the micro ones; here
    FLUX.1-Kontext and EditScore on tiny random weights) through the same CLI path; reference
    answers forced in, so the editor and the critic run inside TRL's loop."""
    from agent.train.cli import main

    monkeypatch.setattr(G, "StepReward", Forced)
    Forced.seen = []
    args = ["grpo", "--model", str(base), "--out", str(tmp_path), "--steps", "1"]
    args += ["--group", "2", "--prompts-per-step", "1", "--max-completion-length", "4"]
    args += ["--train-seeds", "1", "--editor-backend", "kontext-tiny"]
    args += ["--critic-backend", "editscore-tiny", "--editor-steps", "1"]
    assert main(args) == 0
    summary = json.loads(Path(tmp_path, "grpo.json").read_text())
    assert summary["reward"] == "critic_step_reward" and summary["steps"] == 1
    assert (tmp_path / "mira-planner" / "adapter_config.json").is_file()
    # the forced step ran Kontext, then the random critic answered (a verdict or none)
    assert any(d["decision"] == "step" and "sc_pq" in d for d in Forced.seen)
    # grpo.json keeps the critic's SC beside the exact SC of every judged image
    judged = [d for d in Forced.seen if "sc_pq" in d]
    assert len(summary["sc_pairs"]) == len(judged)
    assert [p[0] for p in summary["sc_pairs"]] == [
        None if d["sc_pq"] is None else d["sc_pq"][0] for d in judged
    ]


def test_editor_errors_mismatched_cases_and_the_exact_metric_beside_a_critic(states):
    from tools.contracts import Critique
    from tools.errors import RecoverableToolError

    clean = next(s for s in states if s["mistake"] is None and not s["state"])

    class Refusing:
        def edit(self, image, instruction, seed=None):
            raise RecoverableToolError("no such object", tool="test")

    class Critic:
        def critique(self, source, edited, instruction):
            return Critique(prompt_following=5, consistency=5, naturalness=5, artifacts=5)

    reward = G.StepReward(Refusing(), source="exact")
    assert _call(reward, [clean], [clean["answer"]]) == [0.0]
    assert (
        reward.last[0]["decision"] == "editor_error" and "no such object" in reward.last[0]["error"]
    )

    logged = {}
    reward = G.StepReward(ReadingEditor(states), critic=Critic())
    inputs = G.planner_prompts([SEED])
    row = next(i for i in inputs if json.loads(i["case"])["id"] == clean["id"])
    reward(
        prompts=[row["prompt"]],
        completions=[clean["answer"]],
        images=[row["images"]],
        case=[row["case"]],
        log_metric=lambda name, value: logged.update({name: value}),
    )
    assert 0 < logged["exact_sc"] <= 10  # the step makes progress: the exact score says so
    # and the sample's pair: the critic's SC (5 of its critique) beside the exact one
    assert reward.sc_pairs == [[5.0, logged["exact_sc"]]]

    wrong = dict(json.loads(row["case"]), n_edits=[5, 5])
    with pytest.raises(ValueError, match="is not the input's"):
        G.exact_sc(row["images"][1], wrong)


def test_reading_editor_executes_words_exactly_and_knows_its_images(states):
    from agent.microworld.edits import apply_edit
    from agent.microworld.reader import read_edit
    from agent.microworld.render import render
    from agent.microworld.scene import Scene
    from tools.errors import FatalToolError

    editor = ReadingEditor(states)
    clean = next(s for s in states if s["mistake"] is None and not s["state"])
    original, current = _images(clean)
    scene = Scene.model_validate(clean["scene"])
    words = clean["answer"].removeprefix("NEXT_EDITING_INSTRUCTION: ")
    out = editor.edit(current, words)
    assert out.tobytes() == render(apply_edit(scene, read_edit(words, scene))).tobytes()
    assert editor.edit(current, "sing a song").tobytes() == current.tobytes()  # unread: no-op
    again = editor.edit(out, words)  # an image it rendered is known too
    assert again.size == out.size
    with pytest.raises(FatalToolError, match="not one the reading editor"):
        editor.edit(render(scene).rotate(90), words)


def test_cli_exact_editor_runs_without_an_editor_model(base, tmp_path, monkeypatch, capsys):
    from agent.train.cli import main

    args = ["grpo", "--model", str(base), "--out", str(tmp_path), "--reward", "exact"]
    assert main([*args, "--exact-editor", "--editor-backend", "kontext-tiny"]) == 2
    assert "--exact-editor replaces" in capsys.readouterr().err
    monkeypatch.setattr(G, "StepReward", Forced)
    Forced.seen = []
    args += ["--exact-editor", "--steps", "1", "--group", "2", "--prompts-per-step", "1"]
    assert main([*args, "--max-completion-length", "4", "--train-seeds", "2"]) == 0
    steps = [d for d in Forced.seen if d["decision"] == "step"]
    assert steps and all(d["reward"] > 0 for d in steps)  # executed and judged, exactly


def test_a_stalled_step_writes_every_threads_stack(base, tmp_path, capfd):
    """A step slower than ``stall_seconds`` writes the stacks to stderr, naming the function it
    is stuck in; the watchdog thread is gone once the run ends."""
    import threading
    import time

    def slow(prompts, completions, **_):
        time.sleep(1.5)
        return [0.0] * len(completions)

    settings = G.settings_for(
        steps=1, group=2, prompts_per_step=1, max_completion_length=4, lora_r=2, stall_seconds=0.5
    )
    G.train_grpo(
        base, tmp_path, reward=slow, settings=settings, inputs=G.planner_prompts([SEED])[:2]
    )
    err = capfd.readouterr().err
    assert "Timeout (0.5 s)" in err and "in slow" in err
    assert "mira-grpo-watchdog" not in {t.name for t in threading.enumerate()}
    time.sleep(0.7)
    assert "Timeout" not in capfd.readouterr().err  # closed at the end
    with pytest.raises(ValueError, match="stall_seconds must be > 0 or None, got 0"):
        G.settings_for(stall_seconds=0)
    with pytest.raises(
        ValueError, match=r"stall_seconds must be at most \d+ \(None: no watchdog\), got inf"
    ):
        G.settings_for(stall_seconds=float("inf"))


def test_cli_stall_seconds_and_step_cost_reach_the_run(base, tmp_path, monkeypatch):
    from agent.train.cli import main

    seen = []
    monkeypatch.setattr(G, "train_grpo", lambda model, out, **k: seen.append(k["settings"]))
    args = ["grpo", "--model", str(base), "--out", str(tmp_path), "--reward", "exact"]
    args += ["--exact-editor", "--train-seeds", "1"]
    for value, expected in (("0", None), ("5", 5.0)):
        assert main([*args, "--stall-seconds", value]) == 0
        assert seen[-1].stall_seconds == expected
    assert main(args) == 0 and seen[-1].stall_seconds == 300.0 and seen[-1].step_cost == 0.0
    assert seen[-1].temperature == 1.0
    assert main([*args, "--temperature", "1.5"]) == 0 and seen[-1].temperature == 1.5
    rewards = []
    monkeypatch.setattr(G, "train_grpo", lambda model, out, **k: rewards.append(k["reward"]))
    assert main([*args, "--step-cost", "1.5", "--early-stop-penalty", "8"]) == 0
    assert (rewards[-1].step_cost, rewards[-1].early_stop_penalty) == (1.5, 8.0)


def test_planner_edits_set_the_cases_the_states_come_from(base, tmp_path, monkeypatch, capsys):
    """``planner_edits`` (``--planner-edits``) names the edit counts of the cases GRPO's planner
    states come from (1-4 by default, as the SFT pool's); the exact reward rebuilds each
    state's case from it; a count outside 1-5 is refused by name."""
    from agent.microworld.truth import make_case
    from agent.train.cli import main

    five = G.planner_prompts([SEED], edits=(5, 5))
    cases = [json.loads(i["case"]) for i in five]
    assert cases and {tuple(c["n_edits"]) for c in cases} == {(5, 5)}
    assert {c["instruction"] for c in cases} == {make_case(SEED, n_edits=(5, 5)).instruction}
    default = json.loads(G.planner_prompts([SEED])[0]["case"])
    assert default["n_edits"] == [1, 4] and default["instruction"] != cases[0]["instruction"]
    # the exact reward reads the case back (a wrong count would fail its instruction check)
    original = five[0]["images"][0]
    assert 0.0 <= G.exact_sc(original, cases[0]) <= 10.0
    with pytest.raises(ValueError, match="planner_edits must"):
        G.settings_for(planner_edits=(1, 6))
    # the CLI
    seen = []
    monkeypatch.setattr(G, "train_grpo", lambda model, out, **k: seen.append(k))
    args = ["grpo", "--model", str(base), "--out", str(tmp_path), "--reward", "exact"]
    args += ["--exact-editor", "--train-seeds", "1"]
    assert main(args) == 0 and seen[-1]["settings"].planner_edits == (1, 4)
    assert main([*args, "--planner-edits", "2,5"]) == 0
    assert seen[-1]["settings"].planner_edits == (2, 5)
    assert {tuple(json.loads(i["case"])["n_edits"]) for i in seen[-1]["inputs"]} == {(2, 5)}
    assert main([*args, "--planner-edits", "0,5"]) == 2
    assert "--planner-edits: '0,5'" in capsys.readouterr().err


def test_gpu_job_script_trains_evaluates_and_packs(base, tmp_path):
    """benchmarks/grpo_gpu.sh on CPU: one run and one adapter trained before, each evaluated
    beside the SFT planner, all packed into grpo.tar with a summary line per run."""
    import os
    import subprocess
    import sys
    import tarfile

    root = Path(__file__).resolve().parents[1]
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    before = tmp_path / "before"
    G.train_grpo(
        base,
        before,
        reward=lambda prompts, completions, **_: [0.0] * len(completions),
        settings=G.settings_for(steps=1, group=2, prompts_per_step=1, max_completion_length=4),
        inputs=G.planner_prompts([SEED])[:2],
    )
    env = dict(
        os.environ,
        OUT=str(out),
        WORK=str(work),
        PYTHON=sys.executable,
        WHEELS=str(tmp_path / "no-wheels"),
        MODEL=str(base),
        DEVICE="cpu",
        RUNS="tiny: --reward exact --exact-editor --steps 1 --group 2 --prompts-per-step 1 "
        "--max-completion-length 4 --train-seeds 1",
        ADAPTERS=f"before={before / 'mira-planner'}",
        EVALS="val: --split validation --seeds 1 --limit 1 --roles planner --languages train",
    )
    subprocess.run(
        ["bash", "benchmarks/grpo_gpu.sh"], cwd=root, env=env, check=True, capture_output=True
    )
    with tarfile.open(out / "grpo.tar") as tar:
        names = set(tar.getnames())
    assert {"res/tiny/grpo.json", "res/tiny/mira-planner/adapter_config.json"} <= names
    assert {"res/val_sft.json", "res/val_tiny.json", "res/val_before.json"} <= names
    summary = (out / "summary.txt").read_text()
    assert "tiny: 1 steps in" in summary and "(steps)" in summary
    assert all(f'{tag} {{"train"' in summary for tag in ("val_sft", "val_tiny", "val_before"))
    assert all(f"{tag}: exit status 0" in summary for tag in ("tiny", "val_sft", "val_before"))
    # a missing adapter is named and fails the call; a run spec without its name is refused
    env.update(RUNS="", ADAPTERS=f"gone={tmp_path / 'gone'}")
    done = subprocess.run(
        ["bash", "benchmarks/grpo_gpu.sh"], cwd=root, env=env, text=True, capture_output=True
    )
    assert done.returncode == 1 and f"val_gone: no adapter at {tmp_path / 'gone'}" in done.stdout
    env.update(RUNS="--reward exact")
    done = subprocess.run(
        ["bash", "benchmarks/grpo_gpu.sh"], cwd=root, env=env, text=True, capture_output=True
    )
    assert done.returncode == 2 and "is not 'name: mira-train grpo arguments'" in done.stderr
    # a run from --adapter is not evaluated on MODEL (its LoRA belongs to MODEL + the adapter)
    env.update(RUNS=f"a: --reward exact --adapter {before / 'mira-planner'}")
    done = subprocess.run(
        ["bash", "benchmarks/grpo_gpu.sh"], cwd=root, env=env, text=True, capture_output=True
    )
    assert done.returncode == 2 and "a run with --adapter cannot be evaluated" in done.stderr
    assert not (work / "res" / "a").exists()  # refused before anything ran


def test_grpo_starts_from_a_planner_adapter_merged_into_the_model(base, tmp_path, monkeypatch):
    """``adapter``: the policy GRPO loads is ``model`` with that LoRA merged (what ``mira-train
    merge-lora`` writes), and ``grpo.json`` names both; a folder with no adapter is refused."""
    import torch
    from peft import get_peft_model

    from agent.train.lora_extract import merge_lora
    from agent.train.vlm import load_folder, lora_config
    from tools.vlm import _qwen

    plain = load_folder(base)[0].model
    before = {n: p.detach().clone() for n, p in plain.named_parameters()}
    tuned = get_peft_model(plain, lora_config(2))
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    tuned.save_pretrained(tmp_path / "adapter")
    reference = load_folder(merge_lora(base, tmp_path / "adapter", tmp_path / "ref"))[0].model
    expected = dict(reference.named_parameters())

    loaded = {}
    real = _qwen._load

    def spy(path, *args, **kwargs):
        vlm = real(path, *args, **kwargs)
        loaded.update({n: p.detach().clone() for n, p in vlm.model.named_parameters()})
        return vlm

    monkeypatch.setattr(_qwen, "_load", spy)
    settings = G.settings_for(
        steps=1, group=2, prompts_per_step=1, max_completion_length=4, lora_r=2
    )

    def zero(prompts, completions, **_):
        return [0.0] * len(completions)

    inputs = G.planner_prompts([SEED])[:1]
    summary = G.train_grpo(
        base,
        tmp_path / "out",
        reward=zero,
        settings=settings,
        inputs=inputs,
        adapter=tmp_path / "adapter",
    )
    assert loaded.keys() == expected.keys()
    assert any(not torch.equal(loaded[n], before[n]) for n in loaded)  # the adapter changed it
    assert all(torch.allclose(loaded[n], expected[n]) for n in loaded)
    assert (summary["model"], summary["adapter"]) == (str(base), str(tmp_path / "adapter"))
    saved = json.loads((tmp_path / "out" / "grpo.json").read_text())
    assert saved["adapter"] == str(tmp_path / "adapter")
    with pytest.raises(ValueError, match="is no LoRA folder"):
        G.train_grpo(
            base, tmp_path / "o2", reward=zero, settings=settings, inputs=inputs, adapter=base
        )


def test_cli_adapter_reaches_the_run_and_the_critic_stays_the_models(
    base, tmp_path, monkeypatch, capsys
):
    import agent.micro
    from agent.train.cli import main

    args = ["grpo", "--model", str(base), "--out", str(tmp_path / "o"), "--exact-editor"]
    args += ["--train-seeds", "1"]
    assert main([*args, "--reward", "exact", "--adapter", str(tmp_path)]) == 2
    assert f"--adapter {str(tmp_path)!r} holds no adapter_config.json" in capsys.readouterr().err
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "adapter_config.json").write_text("{}")
    assert main([*args, "--reward", "exact", "--adapter", str(tmp_path / "ad")]) == 2
    assert "holds no adapter_model.safetensors" in capsys.readouterr().err
    (tmp_path / "ad" / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")  # a model folder, not a micro VLM's
    other = ["grpo", "--model", str(tmp_path / "plain"), "--out", str(tmp_path / "o")]
    assert main([*other, "--reward", "exact", "--adapter", str(tmp_path / "ad")]) == 2
    assert "--model (a micro VLM folder" in capsys.readouterr().err
    seen, critics = [], []
    monkeypatch.setattr(G, "train_grpo", lambda model, out, **k: seen.append((model, k)))
    monkeypatch.setattr(agent.micro, "has_critic", lambda model: True)
    monkeypatch.setattr(
        agent.micro, "micro_critic", lambda model, device: critics.append(model) or object()
    )
    assert main([*args, "--reward", "critic", "--adapter", str(tmp_path / "ad")]) == 0
    assert seen[-1][0] == base and seen[-1][1]["adapter"] == tmp_path / "ad"
    assert critics == [base]  # judged by the model's own critic, not the merged planner's
    assert main([*args, "--reward", "exact"]) == 0 and seen[-1][1]["adapter"] is None


def test_budget_counts_from_the_commands_start(base, tmp_path, monkeypatch):
    """``seconds`` counts from ``clock_start`` (the CLI passes its own start), so the setup
    before training spends the budget: a budget already spent stops after the first step."""
    import time

    from agent.train.cli import main

    def zero(prompts, completions, **_):
        return [0.0] * len(completions)

    settings = G.settings_for(
        steps=50, group=2, prompts_per_step=1, max_completion_length=4, lora_r=2, seconds=60.0
    )
    summary = G.train_grpo(
        base,
        tmp_path / "a",
        reward=zero,
        settings=settings,
        inputs=G.planner_prompts([SEED])[:2],
        clock_start=time.monotonic() - 61,
    )
    assert summary["steps"] == 1 and summary["stopped"] == "seconds"
    seen = []

    def record(model, out, **k):
        seen.append((k["clock_start"], time.monotonic()))

    def slow_editor(inputs):  # the CLI's setup before training: 0.3 s of it
        time.sleep(0.3)
        return real_editor(inputs)

    real_editor = G.reading_editor
    monkeypatch.setattr(G, "train_grpo", record)
    monkeypatch.setattr(G, "reading_editor", slow_editor)
    before = time.monotonic()
    args = ["grpo", "--model", str(base), "--out", str(tmp_path / "o"), "--reward", "exact"]
    assert main([*args, "--exact-editor", "--train-seeds", "1", "--seconds", "9"]) == 0
    clock_start, called = seen[0]
    assert before <= clock_start and called - clock_start >= 0.3  # the setup is on the clock
