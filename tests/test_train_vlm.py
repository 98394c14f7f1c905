"""The micro VLM's training code on CPU: model/tokenizer/processor build, labels of the vision
probe, mRoPE positions shared by training and decoding, and a smoke run whose saved folder loads
through the project's real classes."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from agent.microworld.formats import VERDICT  # noqa: E402
from agent.train import vlm as V  # noqa: E402
from agent.train import vlm_model as M  # noqa: E402


def _in_fresh_process(code: str) -> None:
    """Run ``code`` in a new interpreter. The code forks worker processes, and forking from
    the test process can deadlock the child: earlier tests leave threads there (Ray's gRPC
    client), and a lock one of them held at the fork stays locked in the child forever."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, check=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_vlm():
    tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
    return M.build_model(M.SMOKE_MODEL, M.build_processor(tok))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm") / "micro-vlm"
    settings = V.settings_for("smoke", seconds=4.0)
    metrics = V.train_vlm(out, settings=settings)
    return out, metrics


def test_gpu_model_fits_the_budget():
    """The GPU configuration's bf16 weights stay at most ~20 MB."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    class Tok:  # only the ids the config needs
        def convert_tokens_to_ids(self, t):
            return M.SPECIALS.index(t)

    import torch

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(M.model_config(M.GPU_MODEL, Tok()))
    n = sum(p.numel() for p in model.parameters())
    assert 5e6 < n and 2 * n <= 20.5e6


def test_tokenizer_and_processor(smoke_vlm):
    tok = smoke_vlm.processor.tokenizer
    assert len(tok) <= M.SMOKE_MODEL.vocab_size
    text = 'Locate every "the red circle" in the image'
    assert tok.decode(tok(text)["input_ids"]) == text
    from PIL import Image

    frame = smoke_vlm.image_frame(Image.new("RGB", (224, 224)))
    assert frame == (224, 224)  # Qwen2.5-VL pixel boxes are source pixels
    enc = smoke_vlm.processor.image_processor(images=[Image.new("RGB", (224, 224))])
    assert [int(v) for v in enc["image_grid_thw"][0]] == [1, 16, 16]  # 64 merged tokens


def test_cell_tokens_and_labels():
    from agent.microworld.truth import draw_case

    tokens = V.cell_tokens()
    assert len(tokens) == 21 and len(set(tokens)) == 21 and max(tokens) < 64
    scene = draw_case(1_000_000, n_edits=1)[0]
    labels = V.cell_labels(scene)
    filled = [i for i, c in enumerate(labels["category"]) if c]
    assert len(filled) == len(scene.objects)
    obj = scene.objects[0]
    i = obj.row * 7 + obj.col
    assert V._vocab()["colour"][labels["colour"][i]] == obj.colour
    assert V._changed(scene, scene) == [0] * 21
    moved = scene.without(obj.id)
    assert V._changed(scene, moved)[i] == 1 and sum(V._changed(scene, moved)) == 1


def test_shuffled_is_a_derangement():
    for n in range(2, 9):
        order = V.shuffled(n, random.Random(n))
        assert sorted(order) == list(range(n)) and all(o != i for i, o in enumerate(order))
    assert V.shuffled(1) == [0]


def test_training_positions_equal_decode_positions(smoke_vlm):
    """Training passes ``rope_positions`` to every forward; they are the fast decoder's prefill
    positions, and the model's own computation (``generate``'s path) gives the same logits."""
    import torch

    from agent.microworld.formats import grounder_samples
    from tools.vlm._decode import _prompt_positions

    samples = list(V._role_samples(smoke_vlm, "grounder", [1_000_001], "train"))[:2]
    batch = V.encode(smoke_vlm, samples)
    again = _prompt_positions(smoke_vlm.model, batch, batch["attention_mask"])
    assert torch.equal(batch["position_ids"], again)
    # the image tokens get 2-D positions (rows differ), not a running count
    pos = batch["position_ids"][:, 0]
    assert not torch.equal(pos[1], pos[2]) or not torch.equal(pos[0], pos[1])
    args = {k: v for k, v in batch.items() if k not in ("labels", "position_ids")}
    with torch.no_grad():
        own = smoke_vlm.model(**args).logits
        ours = smoke_vlm.model(**args, position_ids=batch["position_ids"]).logits
    mask = batch["attention_mask"].bool()
    assert torch.allclose(own[mask], ours[mask], atol=1e-5)
    del grounder_samples


def test_greedy_generate_equals_fast_decoder(smoke_vlm):
    """Both decoding paths of ``QwenVL.generate`` give the same greedy tokens."""
    from agent.microworld.formats import parse_samples

    prompt = next(V._role_samples(smoke_vlm, "parser", [1_000_002], "train"))[0]
    slow = smoke_vlm.generate([prompt], max_new_tokens=6, fast=False)
    fast = smoke_vlm.generate([prompt], max_new_tokens=6, fast=True, compile=False)
    assert slow == fast
    del parse_samples


def test_encode_labels_only_the_answer(smoke_vlm):
    samples = list(V._role_samples(smoke_vlm, "parser", [1_000_003], "train"))[:1]
    batch = V.encode(smoke_vlm, samples)
    tok = smoke_vlm.processor.tokenizer
    kept = batch["labels"][0][batch["labels"][0] != -100]
    assert tok.decode(kept) == samples[0][1] + "<|im_end|>"


def test_role_prompts_are_the_classes_own(smoke_vlm):
    """Critic samples are rendered in EditScoreCritic's Qwen2.5-VL format; grounder samples in
    QwenVLGrounder's prompt with pixel boxes."""
    critic = list(V._role_samples(smoke_vlm, "critic", [1_000_004], "train"))
    from tools.vlm._qwen import RawPrompt

    assert all(isinstance(p, RawPrompt) for p, _ in critic)
    assert critic[0][0].text.count("<img1>:") == 1 and "<img2>:" in critic[0][0].text
    grounder = list(V._role_samples(smoke_vlm, "grounder", [1_000_004], "train"))
    text = grounder[0][0][0]["content"][1]["text"]
    assert text.startswith("Locate every")
    answer = json.loads(grounder[0][1])
    assert answer == [] or max(answer[0]["bbox_2d"]) <= 224


def test_smoke_run_reports_true_and_shuffled(trained):
    _, metrics = trained
    for split in ("validation", "test"):
        probe = metrics["vision"][f"probe_{split}"]
        for key in ("category", "colour", "pattern", "changed"):
            for name in (key, "changed_cells" if key == "changed" else f"{key}_objects"):
                assert 0 <= probe["true"][name] <= 1 and 0 <= probe["shuffled"][name] <= 1
    for stage, roles in (("language", ["describe"]), ("roles", ["grounder", "parser", "planner"])):
        for lang in ("train", "heldout"):
            for role in roles:
                row = metrics[stage]["validation"][lang][role]
                assert row["samples"] > 0
                assert {"true_loss", "shuffled_loss", "true_acc", "shuffled_acc"} <= set(row)
    assert metrics["text_only_baselines"]["critic_always_reject"] == 0.73


def test_saved_folder_loads_through_the_real_classes(trained):
    """The folder loads with no special case through load_qwen_vl, and one call of each class
    comes back well-formed or as the class's typed error."""
    from PIL import Image

    from agent.microworld.render import render
    from agent.microworld.truth import draw_case
    from tools.contracts import Critique, Grounding
    from tools.errors import GroundingError, PlannerOutputError
    from tools.mirage.parse import RegionParseError, VLMInstructionParser
    from tools.vlm._qwen import load_qwen_vl
    from tools.vlm.critic import EditScoreCritic
    from tools.vlm.grounder import QwenVLGrounder
    from tools.vlm.planner import MiraPlanner

    out, _ = trained
    assert (out / "config.json").is_file() and (out / "editscore" / "adapter_config.json").is_file()
    vlm = load_qwen_vl(out)
    vlm.load_adapter("editscore", out / "editscore")
    image = render(draw_case(200_000, n_edits=1)[0])
    try:
        g = QwenVLGrounder(vlm, max_new_tokens=16, retries=0).ground(image, "the red circle")
        assert isinstance(g, Grounding)
    except GroundingError:
        pass
    crit = EditScoreCritic(vlm, max_new_tokens=16, retries=0).critique(image, image, "make it red")
    assert isinstance(crit, Critique)
    assert vlm.active_adapter() == "editscore"
    try:
        pairs = VLMInstructionParser(vlm, max_new_tokens=16, retries=0).parse(image, "make it red")
        assert isinstance(pairs, list)
    except RegionParseError:
        pass
    assert vlm.active_adapter() is None  # the parser ran on the base weights
    planner = MiraPlanner.from_pretrained(out, max_new_tokens=8, image_size=224)
    try:
        planner.next_action(image, Image.new("RGB", (224, 224)), "make the circle red")
    except PlannerOutputError:
        pass


def test_resume_from_folder_skips_nothing_and_keeps_weights(trained, tmp_path):
    import torch

    out, _ = trained
    vlm, done, _ = V.load_folder(out)
    assert done == list(V.STAGES)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items() if "visual" in k}
    settings = V.settings_for("smoke", stages=("language",), seconds=1.0)
    V.train_vlm(tmp_path / "again", settings=settings, init=out)
    again, done2, metrics = V.load_folder(tmp_path / "again")
    assert done2 == list(V.STAGES) and "language" in metrics and "vision" in metrics
    after = {k: v for k, v in again.model.state_dict().items() if "visual.blocks" in k}
    # the language stage keeps the vision blocks frozen (bf16 round trip of the saved weights)
    for k, v in after.items():
        assert torch.equal(v.to(torch.bfloat16), before[k].to(torch.bfloat16))


def test_stages_train_the_right_parameters(smoke_vlm):
    """vision: tower and merger only; language/roles: merger and language model, the vision
    blocks frozen; critic: only the LoRA adapter."""
    from peft import LoraConfig

    def chosen(model, stage):
        ids = {id(p) for p in V._set_trainable(model, stage)}
        names = {n for n, p in model.named_parameters() if id(p) in ids}
        assert names == {n for n, p in model.named_parameters() if p.requires_grad}
        return names

    model = M.build_model(M.SMOKE_MODEL, smoke_vlm.processor).model
    vision = chosen(model, "vision")
    assert vision and all("visual" in n for n in vision)
    assert any("merger" in n for n in vision) and any("blocks" in n for n in vision)
    for stage in ("language", "roles"):
        lang = chosen(model, stage)
        assert not any("visual.blocks" in n or "patch_embed" in n for n in lang)
        assert any("visual.merger" in n for n in lang)
        assert any("language_model" in n for n in lang)
    model.add_adapter(
        LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj"), adapter_name="editscore"
    )
    critic = chosen(model, "critic")
    assert critic and all("lora_" in n for n in critic)


def test_loader_workers_build_batches():
    """Batches come from DataLoader worker processes, every item drawn once per epoch."""
    _in_fresh_process(
        """
        import torch
        from agent.train import vlm as V

        batches = V._loader(lambda c: {"x": torch.tensor(c)}, [1, 2, 3, 4], 2, 0, 1)
        seen = torch.cat([next(batches)["x"] for _ in range(2)])
        assert sorted(seen.tolist()) == [1, 2, 3, 4], seen
        """
    )


def test_loader_buckets_group_batches_by_length():
    """With buckets, the batches drawn together are cut from their items sorted by length; each
    item is still drawn once per epoch, and the default draws batches at random."""
    import torch

    items = list(range(8))
    lengths = [10 * i for i in items]

    def first_epoch(**kw):
        batches = V._loader(lambda c: {"x": torch.tensor(c)}, items, 2, 0, 0, **kw)
        return [tuple(sorted(next(batches)["x"].tolist())) for _ in range(4)]

    grouped = first_epoch(lengths=lengths, buckets=4)
    assert sorted(grouped) == [(0, 1), (2, 3), (4, 5), (6, 7)], grouped
    plain = first_epoch()
    assert sorted(x for b in plain for x in b) == items
    assert sorted(plain) != [(0, 1), (2, 3), (4, 5), (6, 7)], plain
    with pytest.raises(ValueError, match="one length per item, got 3 for 8 items"):
        V._loader(lambda c: c, items, 2, 0, 0, lengths=lengths[:3], buckets=2)
    with pytest.raises(ValueError, match="buckets must be >= 1"):
        V._loader(lambda c: c, items, 2, 0, 0, buckets=0)


def test_rendered_length_counts_images():
    assert V.rendered_length(("abc", [], "de")) == 5
    assert V.rendered_length(("abc", [object(), object()], "de")) == 5 + 512


def test_run_warms_up_for_at_least_min_warmup_steps_and_stops_on_a_nan_loss(monkeypatch):
    """The warmup is at least ``MIN_WARMUP`` steps however slow the first steps are (a guess of
    few steps once put the learning rate at its peak by step 50), and a non-finite loss stops
    the stage with ``FloatingPointError`` instead of training on. A fake clock: three slow
    steps, then fast ones."""
    import types

    import torch

    clock = {"t": 0.0}
    monkeypatch.setattr(V, "time", types.SimpleNamespace(monotonic=lambda: clock["t"]))
    w = torch.nn.Parameter(torch.zeros(()))
    rates: list[float] = []
    opt_lr = 1e-3

    def step_fn(i: int) -> torch.Tensor:
        clock["t"] += 0.05 if i < 3 else 0.001  # slow first steps: a small step-count guess
        return (w - 1.0) ** 2

    def log(message: str) -> None:
        rates.append(float(message.split(" lr ")[1].split()[0]))

    V._run([w], opt_lr, 1.0, step_fn, log, "t", 1)
    assert len(rates) > 500
    assert rates[49] <= opt_lr * 50 / V.MIN_WARMUP + 1e-12, rates[:60]

    def nan_at_5(i: int) -> torch.Tensor:
        clock["t"] += 0.001
        return (w - 1.0) ** 2 * (float("nan") if i == 5 else 1.0)

    with pytest.raises(FloatingPointError, match="t: the loss is nan at step 5"):
        V._run([w], opt_lr, 30.0, nan_at_5, lambda m: None, "t", 1)


def test_encode_matches_processor_ids(smoke_vlm):
    """Training ids are the processor's ids for the decode-path prompt, plus the answer."""
    samples = list(V._role_samples(smoke_vlm, "describe", [1_000_005], "train"))
    batch = V.encode(smoke_vlm, samples)
    text, images = smoke_vlm.render(samples[0][0])
    prompt = smoke_vlm.processor(text=[text], images=images, return_tensors="pt")["input_ids"][0]
    assert batch["input_ids"][0][: len(prompt)].tolist() == prompt.tolist()


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from agent.train.cli import main

    assert main(["vlm", "--settings", "smoke", "--out", str(tmp_path), "--stages", "nope"]) == 2
    assert main(["vlm", "--out", str(tmp_path), "--init", str(tmp_path)]) == 2
    assert main(["vlm", "--out", str(tmp_path), "--stage-seconds", "vision"]) == 2
    assert main(["vlm", "--out", str(tmp_path), "--batch", "0"]) == 2
    assert main(["vlm", "--out", str(tmp_path), "--pool-samples", "0"]) == 2
    assert "micro_vlm.json" in capsys.readouterr().err
    assert main(["vlm", "--out", str(tmp_path), "--length-buckets", "0"]) == 2
    assert "--length-buckets must be >= 1, got 0" in capsys.readouterr().err


def test_cli_trains_one_stage_from_a_folder(trained, tmp_path):
    from agent.train.cli import main

    out, _ = trained
    rc = main(
        [
            "vlm",
            "--settings",
            "smoke",
            "--init",
            str(out),
            "--out",
            str(tmp_path / "m"),
            "--stages",
            "critic",
            "--stage-seconds",
            "critic=0.5",
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert (
        metrics["critic"]["steps"] >= 1 and "critic" in metrics["critic"]["validation"]["heldout"]
    )
    assert (tmp_path / "m" / "editscore" / "adapter_model.safetensors").is_file()


def test_gpu_job_script_runs_the_smoke_settings(tmp_path):
    """benchmarks/train_micro_vlm.sh trains, writes metrics and a folder that unpacks and loads."""
    import os
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    env = dict(
        os.environ,
        OUT=str(out),
        WORK=str(work),
        SETTINGS="smoke",
        PYTHON=sys.executable,
        WHEELS=str(tmp_path),
        INIT=str(tmp_path / "none"),
    )  # no wheels (a developer's .whl is for the GPU machine), no checkpoint of theirs
    args = ["--stages", "language", "--stage-seconds", "language=0.2"]
    subprocess.run(
        ["bash", "benchmarks/train_micro_vlm.sh", *args],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    assert "language" in json.loads((out / "metrics.json").read_text())
    parts = sorted(out.glob("vlm.tar.part*"))
    assert parts
    joined = tmp_path / "vlm.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    vlm, done, _ = V.load_folder(tmp_path / "unpacked" / "vlm")
    assert done == ["language"] and vlm.family == "qwen2.5"


def test_pool_spreads_over_seeds_and_workers_agree(smoke_vlm):
    """At most ``per_seed`` samples come from one scene; forked workers build the same pool."""
    seeds = [1_000_010, 1_000_011, 1_000_012]
    here = V._pool(smoke_vlm, ["grounder"], seeds, "train", 6, per_seed=2)
    assert len(here) == 6
    _in_fresh_process(
        f"""
        import json
        from agent.train import vlm as V
        from agent.train import vlm_model as M

        tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
        vlm = M.build_model(M.SMOKE_MODEL, M.build_processor(tok))
        forked = V._pool(vlm, ["grounder"], {seeds!r}, "train", 6, per_seed=2, workers=2)
        assert [a for _, a in forked] == json.loads({json.dumps([a for _, a in here])!r})
        """
    )

    def scenes(pool):
        return {p[0]["content"][0]["image"].tobytes() for p, _ in pool}

    one_seed = V._pool(smoke_vlm, ["grounder"], seeds, "train", 6, per_seed=6)
    assert len(scenes(one_seed)) <= 2  # one seed: its scene before and after the first edit
    assert len(scenes(here)) >= 3  # per_seed=2 spreads the pool over the three seeds


def test_probe_reports_object_cells_apart_from_empty_ones(smoke_vlm):
    """A probe that always answers "empty" / "unchanged" scores high on all cells but 0 on the
    objects' cells and on the changed cells."""
    import torch

    pairs = list(V._probe_pairs([1_000_020, 1_000_021]))
    batch = V._probe_batch(smoke_vlm.processor, pairs)
    heads = V._probe_heads(smoke_vlm.model.config.text_config.hidden_size, "cpu")
    with torch.no_grad():
        for head in heads.values():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[0] = 1.0  # always class 0: empty / unchanged
        _, acc = V._probe_forward(smoke_vlm, heads, batch)
    assert acc["category"] > 0.5 and acc["category_objects"] == 0.0
    assert acc["changed"] > 0.5 and acc["changed_cells"] == 0.0


# -- decoded role evaluation (agent.train.vlm_eval) ---------------------------------------------
def test_iou_and_edit_meaning():
    from agent.train.vlm_eval import edit_meaning, iou

    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    same = [
        ("paint it orange", "make it orange"),
        ("make it checkered", "make it chequered"),
        (
            "place a turquoise heart shape with dots directly below it",
            "draw a teal dotted heart under it",
        ),
        ("get rid of it", "delete it"),
    ]
    for a, b in same:
        assert edit_meaning(a) == edit_meaning(b) and edit_meaning(a), (a, b)
    differ = [
        ("make it dotted", "make it striped"),
        ("make it green", "make it grass green spotted"),
        ("add a red star above it", "add a red star below it"),
        ("turn it into a square", "turn it into a star"),
    ]
    for a, b in differ:
        assert edit_meaning(a) != edit_meaning(b), (a, b)


def test_role_evaluation_true_against_shuffled(trained, monkeypatch):
    """A grounder that reads its answer off the image it is shown scores 1.0 with the true
    images and less with the shuffled ones: the control really swaps the images. The smoke
    model's parser and critic rows come back with both rows and rates in [0, 1]."""
    from agent.microworld import formats
    from agent.microworld.splits import seeds
    from agent.train.vlm_eval import evaluate_vlm
    from tools.contracts import Box, Grounding
    from tools.errors import GroundingError
    from tools.vlm.grounder import QwenVLGrounder

    out, _ = trained
    truth = {}
    for r in formats.grounder_samples(list(seeds("test", 3))):
        image = r["messages"][0]["content"][0]["image"]
        truth[(image.tobytes(), r["expression"])] = r["box"]

    def ground(self, image, expression):
        box = truth.get((image.tobytes(), expression))
        if box is None:
            raise GroundingError("nothing", tool="grounder")
        return Grounding(
            expression=expression, boxes=[Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3])]
        )

    monkeypatch.setattr(QwenVLGrounder, "ground", ground)
    table = evaluate_vlm(
        out, split="test", seeds=3, limit=12, roles=["grounder"], languages=("train",)
    )
    g = table["grounder"]["train"]
    assert g["true"]["iou75"] == 1.0 and g["true"]["negatives_rejected"] == 1.0
    assert g["shuffled"]["iou75"] < 1.0
    table = evaluate_vlm(
        out,
        split="test",
        seeds=1,
        limit=2,
        roles=["parser", "critic", "planner"],
        languages=("train",),
    )
    headline = {"parser": "exact", "critic": "separated", "planner": "next_progress"}
    for role, key in headline.items():
        for row in ("true", "shuffled"):
            values = table[role]["train"][row]
            assert 0.0 <= values[key] <= 1.0 and 0.0 <= values["valid"] <= 1.0
    # the judge's ceiling: the reference answers of the sampled planner states
    assert table["planner"]["train"]["reference"] > 0.0
    assert table["text_only_baselines"] and table["probe_test"]
    with pytest.raises(ValueError, match="roles must be some of"):
        evaluate_vlm(out, roles=["describe"])


def test_critic_rows_count_the_changed_cells_of_the_edits_own_images(trained, monkeypatch):
    """The critic rows' ``changed_cells``: the share of answers naming exactly the cells that
    changed between the edit's own two images. A critic that reads whatever images it is shown
    gets 1.0 with the true images and less in the shuffled row (another edit's images); one
    that never writes the cells gets 0."""
    from agent.microworld.formats import changed_cells
    from agent.train.vlm_eval import evaluate_vlm
    from tools.contracts import Critique
    from tools.vlm.critic import EditScoreCritic

    out, _ = trained

    def answer(reasoning):
        return Critique(
            prompt_following=5, consistency=5, naturalness=5, artifacts=5, reasoning=reasoning
        )

    def reads(self, source, edited, instruction):
        said = ", ".join(changed_cells(source, edited)) or "none"
        return answer(f"SC: Cells to change: r0c0. Changed cells: {said}.\nPQ: clean.")

    kw = {"split": "validation", "seeds": 3, "limit": 3, "roles": ["critic"]}
    monkeypatch.setattr(EditScoreCritic, "critique", reads)
    row = evaluate_vlm(out, languages=("train",), critic_in_base=True, **kw)["critic"]["train"]
    assert row["true"]["changed_cells"] == 1.0 and row["shuffled"]["changed_cells"] < 1.0
    monkeypatch.setattr(EditScoreCritic, "critique", lambda self, *a: answer("SC: fine."))
    row = evaluate_vlm(out, languages=("train",), critic_in_base=True, **kw)["critic"]["train"]
    assert row["true"]["changed_cells"] == 0.0


def test_critic_stop_rows_count_stops_on_done_and_unfinished_renders(trained, monkeypatch):
    """The critic_stop rows: the whole instruction of 3- and 5-edit cases, critiqued on the
    render with every edit done, on one with an edit left out and on one with that edit made on
    another object. A critic that scores 10 only the done render stops on every done render and
    on no unfinished one; one that always scores 10 stops on all (the loop's false stop), and
    one that never does on none."""
    from agent.microworld.edits import apply_edits
    from agent.microworld.render import render
    from agent.microworld.scoring import score_edits
    from agent.microworld.splits import seeds as split_seeds
    from agent.microworld.truth import draw_case, target_box
    from agent.train.vlm_eval import STOP_EDITS, STOP_RENDERS, _stop_renders, evaluate_vlm
    from tools.contracts import Critique
    from tools.vlm.critic import EditScoreCritic

    out, _ = trained
    chosen = list(split_seeds("validation", 3))
    finals = set()
    for n in STOP_EDITS:
        for seed in chosen:
            scene, edits, *_ = draw_case(seed, n_edits=n, size=224)
            finals.add(render(apply_edits(scene, edits)).tobytes())
            source, _, renders = _stop_renders(seed, n, "train")
            assert renders["done"].tobytes() in finals and "missing" in renders
            assert all(renders[k].tobytes() not in finals for k in renders if k != "done")
            assert len({r.tobytes() for r in (source, *renders.values())}) == len(renders) + 1
            boxes = [target_box(scene, e) for e in edits]
            final = render(apply_edits(scene, edits))
            for kind, lost in (("missing", 1), ("wrong", 1)):  # one edit undone, no more
                if kind in renders:
                    score = score_edits(
                        source, renders[kind], final, boxes, kinds=[e.kind for e in edits]
                    )
                    assert sum(not e.passed for e in score.edits) == lost, (seed, n, kind)

    def scored(score):
        return Critique(
            prompt_following=score, consistency=score, naturalness=10, artifacts=10, reasoning="."
        )

    kw = {"split": "validation", "seeds": 3, "limit": 3, "roles": ["critic_stop"]}
    monkeypatch.setattr(
        EditScoreCritic,
        "critique",
        lambda self, source, edited, instruction: scored(10 if edited.tobytes() in finals else 4),
    )
    table = evaluate_vlm(out, languages=("train",), critic_in_base=True, **kw)["critic_stop"]
    for n in STOP_EDITS:
        row = table["train"][f"{n}_edits"]["true"]
        assert table["train"][f"{n}_edits"]["cases"] == 3 and row["valid"] == 1.0
        assert row["renders"]["done"] == 3 and row["renders"]["missing"] == 3
        assert row["renders"]["wrong"] >= 1
        assert row["satisfied_done"] == 1.0
        assert row["satisfied_missing"] == 0.0 and row["satisfied_wrong"] == 0.0
    for score, stops in ((10, 1.0), (0, 0.0)):
        monkeypatch.setattr(EditScoreCritic, "critique", lambda self, *a, s=score: scored(s))
        table = evaluate_vlm(out, languages=("train",), critic_in_base=True, **kw)["critic_stop"]
        for n in STOP_EDITS:
            for name in ("true", "shuffled"):
                row = table["train"][f"{n}_edits"][name]
                assert all(row[f"satisfied_{k}"] == stops for k in STOP_RENDERS)


def test_critic_rows_ask_the_base_model_when_told(trained, monkeypatch, tmp_path):
    """``critic_in_base`` (``--critic-in-base``): the critic rows call ``EditScoreCritic`` with
    no adapter (the base model); by default they call it with the ``editscore`` adapter, and
    with none for a folder without that adapter (the shipped one), as ``micro-critic`` does."""
    import shutil

    from agent.train.cli import main
    from agent.train.vlm_eval import evaluate_vlm
    from tools.vlm.critic import EditScoreCritic

    out, _ = trained
    adapters = []
    real = EditScoreCritic.critique

    def critique(self, *a, **k):
        adapters.append(self.adapter)
        return real(self, *a, **k)

    monkeypatch.setattr(EditScoreCritic, "critique", critique)
    kw = {"split": "validation", "seeds": 1, "limit": 1, "roles": ["critic"]}
    table = evaluate_vlm(out, languages=("train",), critic_in_base=True, **kw)
    assert table["critic_in_base"] and set(adapters) == {None}
    adapters.clear()
    evaluate_vlm(out, languages=("train",), **kw)
    assert set(adapters) == {V.CRITIC_ADAPTER}
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    shutil.rmtree(bare / V.CRITIC_ADAPTER)
    adapters.clear()
    table = evaluate_vlm(bare, languages=("train",), **kw)
    assert "critic" in table and table["critic_in_base"] and set(adapters) == {None}
    seen = []
    monkeypatch.setattr(
        "agent.train.vlm_eval.evaluate_vlm", lambda model, **k: seen.append(k) or {}
    )
    assert main(["eval-vlm", "--model", str(out), "--critic-in-base"]) == 0
    assert main(["eval-vlm", "--model", str(out)]) == 0
    assert [k["critic_in_base"] for k in seen] == [True, False]
    args = ["eval-vlm", "--model", str(out), "--roles", "grounder", "--critic-in-base"]
    assert main(args) == 2 and len(seen) == 2
    args = ["eval-vlm", "--model", str(out), "--roles", "critic_stop", "--critic-in-base"]
    assert main(args) == 0 and seen[-1]["critic_in_base"] and seen[-1]["roles"] == ["critic_stop"]
    seen.pop()
    # --device reaches the evaluation (cpu by default)
    assert main(["eval-vlm", "--model", str(out), "--device", "cuda"]) == 0
    assert [k["device"] for k in seen] == ["cpu", "cpu", "cuda"]


def test_eval_vlm_prints_only_its_json_table_on_stdout(trained, monkeypatch, capsys):
    """Progress lines go to stderr, so ``mira-train eval-vlm ... > table.json`` is valid JSON."""
    from agent.train.cli import main

    out, _ = trained

    def fake(model, **k):
        k["log"]("grounder train (1 s): {}")
        return {"grounder": {"train": 1}}

    monkeypatch.setattr("agent.train.vlm_eval.evaluate_vlm", fake)
    assert main(["eval-vlm", "--model", str(out), "--roles", "grounder"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == {"grounder": {"train": 1}}
    assert "grounder train (1 s)" in printed.err


def test_check_row_reads_the_first_answer_token(trained, monkeypatch):
    """The decoded "check" row: each answer is right when the model's most likely first answer
    token is the reference's; a model that always prefers "yes" scores the share of "yes"
    answers, with true and with shuffled images."""
    import torch

    from agent.train.vlm_eval import evaluate_vlm

    out, _ = trained
    table = evaluate_vlm(
        out, split="validation", seeds=8, limit=8, roles=["check"], languages=("train",)
    )
    row = table["check"]["train"]
    assert row["samples"] == 8 and 0.0 < row["yes_share"] < 1.0
    for name in ("true", "shuffled"):
        assert 0.0 <= row[name]["accuracy"] <= 1.0
    from agent.train import vlm as train_vlm

    real = train_vlm.load_folder

    def always_yes(folder, **options):
        vlm, done, metrics = real(folder, **options)
        yes = vlm.processor.tokenizer(V.CHECK_ANSWERS[0])["input_ids"][0]
        forward = vlm.model.forward

        def patched(*a, **k):
            result = forward(*a, **k)
            result.logits = torch.zeros_like(result.logits)
            result.logits[..., yes] = 1.0
            return result

        vlm.model.forward = patched
        return vlm, done, metrics

    # the base model answers, also after the critic rows switched the adapter on
    states = []
    real_lm = train_vlm.evaluate_lm

    def evaluate_lm(vlm, *a, **k):
        states.append(vlm.active_adapter())
        return real_lm(vlm, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(train_vlm, "evaluate_lm", evaluate_lm)
        table = evaluate_vlm(out, split="validation", seeds=2, limit=2, roles=["critic", "check"])
    assert "critic" in table and states == [None, None]  # check, in both languages
    monkeypatch.setattr(train_vlm, "load_folder", always_yes)
    row = evaluate_vlm(
        out, split="validation", seeds=8, limit=8, roles=["check"], languages=("train",)
    )["check"]["train"]
    assert row["true"]["accuracy"] == row["shuffled"]["accuracy"] == row["yes_share"]


def test_eval_vlm_cli_checks_its_arguments(tmp_path, capsys):
    from agent.train.cli import main

    assert main(["eval-vlm", "--model", str(tmp_path)]) == 2
    assert "holds no" in capsys.readouterr().err
    assert main(["eval-vlm", "--model", str(tmp_path), "--roles", "describe"]) == 2
    assert "--roles must name" in capsys.readouterr().err
    assert main(["eval-vlm", "--model", str(tmp_path), "--languages", "train,klingon"]) == 2
    assert "--languages must name train and/or heldout, got 'train,klingon'" in (
        capsys.readouterr().err
    )


def test_eval_vlm_cli_passes_the_languages_on(tmp_path, monkeypatch, capsys):
    from agent.train import vlm_eval
    from agent.train.cli import main
    from agent.train.vlm_model import MANIFEST

    (tmp_path / MANIFEST).write_text("{}")
    seen = []
    monkeypatch.setattr(vlm_eval, "evaluate_vlm", lambda model, **k: seen.append(k) or {})
    assert main(["eval-vlm", "--model", str(tmp_path), "--languages", "train"]) == 0
    assert main(["eval-vlm", "--model", str(tmp_path)]) == 0
    assert [k["languages"] for k in seen] == [["train"], ["train", "heldout"]]


def test_eval_vlm_seed_offset_skips_the_splits_first_seeds(tmp_path, monkeypatch, capsys):
    """``--seed-offset N`` evaluates on the split's seeds after its first N (fresh scenes for a
    choice, when the first ones have chosen before); the table records it; a negative one is
    refused by name."""
    import types

    from agent.train import vlm, vlm_eval
    from agent.train.cli import main
    from agent.train.vlm_model import MANIFEST

    fake = types.SimpleNamespace(adapters=set(), model=types.SimpleNamespace(eval=lambda: None))
    monkeypatch.setattr(vlm, "load_folder", lambda folder, **k: (fake, None, {}))
    monkeypatch.setitem(vlm_eval.ROLES, "parser", lambda m, seeds, lang, limit: list(seeds))
    table = vlm_eval.evaluate_vlm(
        tmp_path, split="validation", seeds=3, seed_offset=60, roles=["parser"], languages=["train"]
    )
    assert table["parser"]["train"] == [100_060, 100_061, 100_062]
    assert table["seed_offset"] == 60
    first = vlm_eval.evaluate_vlm(tmp_path, split="test", seeds=2, roles=["parser"])
    assert first["parser"]["heldout"] == [200_000, 200_001] and first["seed_offset"] == 0
    # the CLI
    (tmp_path / MANIFEST).write_text("{}")
    got = []
    monkeypatch.setattr(vlm_eval, "evaluate_vlm", lambda model, **k: got.append(k) or {})
    assert main(["eval-vlm", "--model", str(tmp_path), "--seed-offset", "60"]) == 0
    assert main(["eval-vlm", "--model", str(tmp_path)]) == 0
    assert [k["seed_offset"] for k in got] == [60, 0]
    assert main(["eval-vlm", "--model", str(tmp_path), "--seed-offset", "-1"]) == 2
    assert "--seed-offset must be >= 0, got -1" in capsys.readouterr().err
    late = ["--split", "test", "--seed-offset", "99990", "--seeds", "20"]
    assert main(["eval-vlm", "--model", str(tmp_path), *late]) == 2
    assert "--seeds 20 --seed-offset 99990: split 'test' has" in capsys.readouterr().err
    assert len(got) == 2  # refused before any evaluation


def test_compare_samples_name_exactly_the_changed_cells():
    """The language stage's two-image task: the answer lists the cells whose object differs
    (before -> after), row-major, and "no change" for an unchanged pair (one seed in five)."""
    from agent.microworld.scene import COLS, ROWS

    for seed in (1_000_000, 1_000_001, 1_000_002, 1_000_003):
        ((chat, answer),) = V._role_samples(None, "compare", [seed], "train")
        images = [c for c in chat[0]["content"] if c["type"] == "image"]
        assert len(images) == 2 and chat[0]["content"][-1]["text"] == V.COMPARE_PROMPT
        before, after = next(V._probe_pairs([seed]))
        if seed % 5 == 0:
            assert (
                answer == V.NO_CHANGE
                and images[0]["image"].tobytes() == images[1]["image"].tobytes()
            )
            continue
        changed = [
            f"r{r}c{c}"
            for r in range(ROWS)
            for c in range(COLS)
            if V._changed(before, after)[r * COLS + c]
        ]
        assert [part.split(" ")[0] for part in answer.split("; ")] == changed and changed
        assert all(" -> " in part for part in answer.split("; "))


def test_every_stage_is_saved_and_pools_are_built_before_the_model_moves(
    trained, tmp_path, monkeypatch
):
    """A run saves its folder after each stage (a call cut off later keeps what it finished),
    and builds every sample pool before the model is moved to its device (forking after the
    model holds a CUDA context may hang the workers)."""
    out, _ = trained
    events = []
    real_save, real_pools = V.save_folder, V._stage_pools

    def save(vlm, path, *, settings, done, metrics):
        events.append(("save", list(done)))
        return real_save(vlm, path, settings=settings, done=done, metrics=metrics)

    def pools(vlm, stage, *args):
        events.append(("pool", stage, str(next(vlm.model.parameters()).device)))
        return real_pools(vlm, stage, *args)

    monkeypatch.setattr(V, "save_folder", save)
    monkeypatch.setattr(V, "_stage_pools", pools)
    real_to = type(V.load_folder(out)[0].model).to

    def to(self, *args, **kwargs):
        events.append(("to",))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(type(V.load_folder(out)[0].model), "to", to)
    settings = V.settings_for("smoke", seconds=1.0, stages=("language", "roles"))
    V.train_vlm(tmp_path / "m", settings=settings, init=out)
    kinds = [e[0] for e in events]
    last_pool = max(i for i, k in enumerate(kinds) if k == "pool")
    # both pools (language, roles) first, then the move to the device, then one save per stage
    assert kinds[last_pool - 1 :] == ["pool", "pool", "to", "save", "save"]
    assert [e[1] for e in events if e[0] == "pool"] == ["language", "roles"]


def test_cli_passes_the_dtype(monkeypatch, tmp_path):
    import agent.train.vlm as vlm_module
    from agent.train.cli import main

    seen = {}
    monkeypatch.setattr(vlm_module, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    assert main(["vlm", "--settings", "smoke", "--out", str(tmp_path), "--dtype", "bfloat16"]) == 0
    assert seen["s"].dtype == "bfloat16"
    assert V.GPU_SETTINGS.dtype == "float32"
    assert main(["vlm", "--settings", "smoke", "--out", str(tmp_path), "--pool-samples", "9"]) == 0
    assert seen["s"].pool_samples == 9


def test_roles_pool_rehearses_perception_on_other_scenes(smoke_vlm):
    """The roles stage's pool mixes describe and compare samples (their share of one role's
    count) into grounder, parser and planner, drawn from other train seeds than the roles'."""
    train = list(range(1_000_000, 1_000_040))
    settings = dataclasses.replace(V.SMOKE_SETTINGS, pool_samples=36)
    pool, evals = V._stage_pools(smoke_vlm, "roles", settings, train, [100_000])
    prompts = [p[0]["content"][-1]["text"] for p, _ in pool]
    describe = [p for p, _ in pool if p[0]["content"][-1]["text"] == V.DESCRIBE_PROMPT]
    compare = sum(t == V.COMPARE_PROMPT for t in prompts)
    pending = sum(t.startswith(V.PENDING_PROMPT.split("Instruction:")[0]) for t in prompts)
    check = sum(t.startswith(V.CHECK_PROMPT.split("Edit:")[0]) for t in prompts)
    far = sum(t.endswith("\n" + V.COMPARE_PROMPT) for t in prompts)
    assert len(describe) == compare == far == 1  # 36 / (5 + 0.75) = 6.3 per role, a quarter each
    assert pending == check == 6
    planner = sum("NEXT_EDITING_INSTRUCTION" in t for t in prompts)
    # grounder, parser, planner, pending, check, rehearsal
    assert len(pool) == 6 + 6 + planner + 6 + 6 + 3
    role_scenes = {
        c["image"].tobytes()
        for p, a in pool
        if not p[0]["content"][-1]["text"].endswith((V.DESCRIBE_PROMPT, V.COMPARE_PROMPT))
        for c in p[0]["content"]
        if c["type"] == "image"
    }
    assert not role_scenes & {p[0]["content"][0]["image"].tobytes() for p in describe}
    assert set(evals["train"]) == {"grounder", "parser", "planner", "pending", "check"}


def test_stage_is_cut_to_leave_its_evaluation_inside_the_budget(tmp_path):
    from agent.train.cli import main

    s = dataclasses.replace(V.SMOKE_SETTINGS, seconds={"roles": 300.0}, budget=500.0)
    assert V.stage_seconds(s, "roles", 100.0) == 300.0  # room left: its own budget
    assert V.stage_seconds(s, "roles", 200.0) == 500.0 - 200.0 - V.FINISH_SECONDS
    assert V.stage_seconds(s, "roles", 490.0) == 0.0  # no room: a single step
    assert V.stage_seconds(dataclasses.replace(s, budget=None), "roles", 1e9) == 300.0
    assert main(["vlm", "--out", str(tmp_path), "--budget", "-1"]) == 2


def test_role_shares_weigh_a_role_in_the_pool(smoke_vlm, tmp_path, monkeypatch, capsys):
    """``role_shares`` (``--role-shares planner=2``) gives a role that many times the samples of
    the others in its stage's pool; the CLI rejects unknown roles and shares that are not >= 0
    (0 leaves a role out)."""
    from agent.train import vlm as vlm_module
    from agent.train.cli import main
    from tools.mirage.parse import PARSE_PROMPT

    train = list(range(1_000_000, 1_000_040))
    settings = dataclasses.replace(V.SMOKE_SETTINGS, pool_samples=36, role_shares={"planner": 2.0})
    pool, _ = V._stage_pools(smoke_vlm, "roles", settings, train, [100_000])
    prompts = [p[0]["content"][-1]["text"] for p, _ in pool]
    planner = sum("NEXT_EDITING_INSTRUCTION" in t for t in prompts)
    parser = sum(t.startswith(PARSE_PROMPT[:40]) for t in prompts)
    # 36 / (1 + 1 + 2 + 1 + 1 + 0.75) = 5.3 per share: 5 grounder, 5 parser, 10 planner,
    # 5 pending, 5 check, 1 + 1 + 1 rehearsal (a planner scene gives at most 4 samples, a
    # one-edit scene 3: 3 scenes)
    assert parser == 5 and 7 <= planner <= 10
    assert len(pool) == 5 + 5 + planner + 5 + 5 + 3
    seen = {}
    monkeypatch.setattr(vlm_module, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    args = ["vlm", "--settings", "smoke", "--out", str(tmp_path), "--role-shares"]
    assert main([*args, "planner=2,grounder=0.5"]) == 0
    assert seen["s"].role_shares == {"planner": 2.0, "grounder": 0.5}
    assert main([*args, "check=0"]) == 0 and seen["s"].role_shares == {"check": 0.0}
    for bad in ("plan=2", "planner=-1", "planner=x", "planner", "planner=inf"):
        assert main([*args, bad]) == 2
        assert f"--role-shares: {bad!r}" in capsys.readouterr().err


def test_roles_stage_trains_the_critic_into_the_base_only_when_shares_name_it(smoke_vlm):
    """``role_shares={"critic": 1}`` adds the critic's EditScore samples (both prompts) to the
    roles stage's pool and validation; without it the roles stage has no critic sample."""
    train = list(range(1_000_000, 1_000_040))
    for shares, want in (({}, False), ({"critic": 1.0}, True)):
        settings = dataclasses.replace(V.SMOKE_SETTINGS, pool_samples=36, role_shares=shares)
        pool, evals = V._stage_pools(smoke_vlm, "roles", settings, train, [100_000])
        critic = [a for p, a in pool if type(p).__name__ == "RawPrompt"]
        assert bool(critic) is want and ("critic" in evals["train"]) is want
        if want:
            assert len(critic) == 5  # 36 / (6 + 0.75) = 5.3 per role


def test_pending_samples_name_the_clauses_the_current_image_does_not_show(smoke_vlm):
    """The roles stage's "pending" task: the answer is the instruction's clauses whose edits
    the second image does not show, in order, or "nothing"; the second image is the scene with
    exactly the other edits made. Over some scenes both ends occur (nothing done, all done)."""
    from agent.microworld.edits import apply_edits
    from agent.microworld.render import render
    from agent.microworld.truth import draw_case

    seeds = list(range(1_000_000, 1_000_024))
    samples = list(V._role_samples(smoke_vlm, "pending", seeds, "train"))
    assert len(samples) == len(seeds) and "pending" in V.STAGE_ROLES["roles"]
    answers = set()
    for seed, (chat, answer) in zip(seeds, samples, strict=True):
        scene, edits, parts, instruction, _ = draw_case(
            seed, n_edits=(1, 4), size=224, language="train"
        )
        images = [c["image"] for c in chat[0]["content"] if c["type"] == "image"]
        assert chat[0]["content"][-1]["text"] == V.PENDING_PROMPT.format(instruction=instruction)
        todo = [] if answer == V.NOTHING_PENDING else answer.split(" | ")
        texts = [p.text for p in parts]
        assert todo == [t for t in texts if t in todo]  # clauses of this instruction, in order
        done = [e for e, t in zip(edits, texts, strict=True) if t not in todo]
        assert images[0].tobytes() == render(scene).tobytes()
        assert images[1].tobytes() == render(apply_edits(scene, done)).tobytes()
        answers.add("none" if not todo else "all" if len(todo) == len(texts) else "some")
    assert answers == {"none", "all", "some"}


def test_far_samples_ask_describe_and_compare_where_the_role_templates_put_the_images(
    smoke_vlm,
):
    """ "describe_far" / "compare_far": the same images and answers as "describe" / "compare",
    laid out as MIRA's planner template or EditScore's SC prompt lays out its images, with that
    template's text (on the seed's own instruction) before the question; both layouts occur."""
    from tools.prompts import render_planner_prompt

    seeds = list(range(1_000_000, 1_000_012))
    layouts = set()
    for far, near in V.FAR.items():
        assert far in V.STAGE_ROLES["language"] and far in V.ONE_PER_SCENE
        plain = list(V._role_samples(smoke_vlm, near, seeds, "train"))
        got = list(V._role_samples(smoke_vlm, far, seeds, "train"))
        assert len(got) == len(plain) == len(seeds)
        for (chat, answer), (p_chat, p_answer) in zip(got, plain, strict=True):
            assert answer == p_answer
            content, p_content = chat[0]["content"], p_chat[0]["content"]
            images = [c["image"].tobytes() for c in content if c["type"] == "image"]
            assert images == [c["image"].tobytes() for c in p_content if c["type"] == "image"]
            texts = [c["text"] for c in content if c["type"] == "text"]
            question = p_content[-1]["text"]
            assert texts[-1].endswith("\n" + question) and len(texts[-1]) > 300
            # each image comes after template text, the question last
            assert [c["type"] for c in content] == ["text", "image"] * len(images) + ["text"]
            if texts[0] == "<img1>: ":
                assert texts[:-1] == [f"<img{i}>: " for i in range(1, len(images) + 1)]
                layouts.add("editscore")
            else:
                head = render_planner_prompt("X").split("<image>")[0]
                assert texts[0].startswith(head)
                layouts.add("mira")
    assert layouts == {"mira", "editscore"}


def test_check_samples_answer_whether_the_second_image_shows_the_clause(smoke_vlm):
    """The roles stage's "check" task: one clause of the case; "yes" exactly when the second
    image is the scene with that clause's edit made (and any of the others), "no" when it is
    not made, or made on a wrong instance or half-way. Both answers come about equally often,
    and some of the "no" images are such mistakes (no set of the case's edits renders them)."""
    import itertools

    from agent.microworld.edits import apply_edits
    from agent.microworld.render import render
    from agent.microworld.truth import draw_case

    seeds = list(range(1_000_000, 1_000_060))
    samples = list(V._role_samples(smoke_vlm, "check", seeds, "train"))
    assert len(samples) == len(seeds) and "check" in V.STAGE_ROLES["roles"]
    answers, mistakes = [], 0
    for seed, (chat, answer) in zip(seeds, samples, strict=True):
        scene, edits, parts, _, _ = draw_case(seed, n_edits=(1, 4), size=224, language="train")
        texts = [p.text for p in parts]
        clause = chat[0]["content"][-1]["text"].split("Edit: ", 1)[1]
        assert chat[0]["content"][-1]["text"] == V.CHECK_PROMPT.format(clause=clause)
        ask = texts.index(clause)
        images = [c["image"] for c in chat[0]["content"] if c["type"] == "image"]
        assert images[0].tobytes() == render(scene).tobytes()
        shows = {
            subset: render(apply_edits(scene, [edits[i] for i in subset])).tobytes()
            for r in range(len(edits) + 1)
            for subset in itertools.combinations(range(len(edits)), r)
        }
        made = [subset for subset, image in shows.items() if image == images[1].tobytes()]
        assert answer in V.CHECK_ANSWERS
        assert images[0].tobytes() != images[1].tobytes()  # "no" is not "nothing changed"
        if answer == "yes":
            assert any(ask in subset for subset in made)
        else:
            assert not any(ask in subset for subset in made)
            mistakes += not made
        answers.append(answer)
    assert 0.35 <= answers.count("yes") / len(answers) <= 0.65
    assert mistakes >= 3


def test_planner_draw_by_class_evens_out_what_copying_the_first_clause_gets_right(
    smoke_vlm, tmp_path, monkeypatch
):
    """Drawn at random, a scene's planner samples mostly have the first clause pending and
    rarely a stop; drawn by class (the default), each class (first pending clause 0, 1, ...,
    stop, fix) is about as likely, so the instruction alone no longer gives the answer. The
    balanced pool holds the same kind of samples, and bad values are named."""
    import random
    from collections import Counter

    from agent.microworld import formats
    from agent.train.cli import main

    seeds = list(range(1_000_000, 1_000_030))
    by_seed = {s: list(formats.planner_samples([s])) for s in seeds}
    r0 = by_seed[seeds[0]]
    assert {V.planner_class(r) for r in r0} >= {"0", "stop", "fix"}
    for r in r0:
        c = V.planner_class(r)
        assert (c == "fix") == (r["mistake"] is not None)
        assert (c == "stop") == (not r["answer"].startswith("NEXT_EDITING_INSTRUCTION"))
        if c not in ("fix", "stop"):
            assert int(c) not in r["state"] and all(i in r["state"] for i in range(int(c)))
    at_random, balanced = Counter(), Counter()
    for s, records in by_seed.items():
        rng = random.Random(s)
        at_random.update(V.planner_class(r) for r in rng.sample(records, min(4, len(records))))
        picked = V.draw_by_class(records, 4, random.Random(s))
        assert len(picked) == min(4, len(records)) and all(r in records for r in picked)
        assert len({r["id"] for r in picked}) == len(picked)  # no sample twice
        balanced.update(V.planner_class(r) for r in picked)
    n = sum(balanced.values())
    assert n == sum(at_random.values())
    assert balanced["stop"] > 2 * at_random["stop"] and balanced["0"] < at_random["0"]
    assert max(balanced.values()) < 0.4 * n
    # the pool's planner samples are drawn this way by default, and they are planner chats
    (chat, answer), *_ = V._seed_samples(
        ("planner", seeds[0], "train", 4, True, False, V.PLANNER_EDITS)
    )
    assert "NEXT_EDITING_INSTRUCTION" in chat[0]["content"][-1]["text"]
    assert answer in {r["answer"] for r in r0}
    assert V.GPU_SETTINGS.planner_draw == "balanced"
    settings = dataclasses.replace(V.SMOKE_SETTINGS, planner_draw="fair")
    with pytest.raises(ValueError, match="planner_draw must be one of .*got 'fair'"):
        V._stage_pools(smoke_vlm, "roles", settings, seeds[:2], [100_000])
    seen = {}
    monkeypatch.setattr(V, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    args = ["vlm", "--settings", "smoke", "--out", str(tmp_path)]
    assert main([*args, "--planner-draw", "random"]) == 0 and seen["s"].planner_draw == "random"


def test_planner_reasoning_puts_the_cell_lists_before_the_mira_answer(
    smoke_vlm, tmp_path, monkeypatch
):
    """``planner_reasoning`` (``--planner-reasoning``): the pool's planner answers are
    ``formats.plan_reason`` then MIRA's answer, both when drawn by class and at random, and the
    lists are the tokens ``--focus-weight`` weighs; without it the answers stay bare."""
    from agent.microworld.formats import CELL_LISTS
    from agent.train.cli import main

    seed = 1_000_010
    for balanced in (True, False):
        plain = V._seed_samples(("planner", seed, "train", 4, balanced, False, V.PLANNER_EDITS))
        reasoned = V._seed_samples(("planner", seed, "train", 4, balanced, True, V.PLANNER_EDITS))
        assert all(a.startswith(("NEXT_EDITING_INSTRUCTION: ", "<stop>")) for _, a in plain)
        for (chat, bare), (chat2, said) in zip(plain, reasoned, strict=True):
            assert chat2 == chat  # the same draw, the same prompt
            assert said.endswith(" " + bare) and said.startswith(f"{CELL_LISTS[0]}: ")
            # weighed: both lists and the answer they lead to (not a bare answer)
            spans = [m.group(0) for m in V.FOCUS.finditer(said)]
            assert [x.split(":")[0] for x in spans[:2]] == list(CELL_LISTS)
            assert spans[2:] == [" " + bare] and said == f"{spans[0]} {spans[1]}{spans[2]}"
            assert not V.FOCUS.search(bare)
    settings = dataclasses.replace(
        V.SMOKE_SETTINGS, planner_reasoning=True, pool_samples=6, eval_samples=2, workers=0
    )
    pool, evals = V._stage_pools(smoke_vlm, "roles", settings, [seed, seed + 1], [100_000])
    planner = [a for _, a in evals["train"]["planner"]]
    assert planner and all(a.startswith(CELL_LISTS[0]) for a in planner)
    assert any(a.startswith(CELL_LISTS[0]) for _, a in pool)
    seen = {}
    monkeypatch.setattr(V, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    args = ["vlm", "--settings", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0 and seen["s"].planner_reasoning is False
    assert main([*args, "--planner-reasoning"]) == 0 and seen["s"].planner_reasoning is True
    assert seen["s"].planner_clauses is False
    assert main([*args, "--planner-clauses"]) == 0
    assert seen["s"].planner_clauses is True and seen["s"].planner_reasoning is True
    assert seen["s"].length_buckets == 1
    assert main([*args, "--length-buckets", "4"]) == 0 and seen["s"].length_buckets == 4


def test_planner_clauses_reach_the_pool_and_are_weighed(smoke_vlm):
    """``planner_clauses``: the pool's and the evaluation's planner answers are
    ``formats.plan_clauses`` then MIRA's answer, and ``FOCUS`` weighs the changed cells, the
    clause list and the answer."""
    from agent.microworld.formats import CELL_LISTS, CLAUSES

    seed = 1_000_010
    bare = V._seed_samples(("planner", seed, "train", 4, True, False, V.PLANNER_EDITS))
    said = V._seed_samples(("planner", seed, "train", 4, True, "clauses", V.PLANNER_EDITS))
    for (chat, answer), (chat2, text) in zip(bare, said, strict=True):
        assert chat2 == chat and text.startswith(f"{CELL_LISTS[1]}: ")
        assert text.endswith(" " + answer) and f". {CLAUSES}: " in text
        spans = [m.group(0) for m in V.FOCUS.finditer(text)]
        assert [x.split(":")[0] for x in spans[:2]] == [CELL_LISTS[1], CLAUSES]
        assert "".join(spans) == text.replace(". Clauses", ".Clauses", 1)
    settings = dataclasses.replace(
        V.SMOKE_SETTINGS,
        planner_reasoning=True,
        planner_clauses=True,
        pool_samples=6,
        eval_samples=2,
        workers=0,
    )
    pool, evals = V._stage_pools(smoke_vlm, "roles", settings, [seed, seed + 1], [100_000])
    planner = [a for _, a in evals["train"]["planner"]]
    assert planner and all(f". {CLAUSES}: " in a for a in planner)
    assert any(f". {CLAUSES}: " in a for _, a in pool)


def test_a_run_that_changes_the_planners_answer_format_says_so(tmp_path):
    """``planner_reasoning`` is not read from the ``--init`` folder: a roles run in the other
    format than the folder's last one is told so; the same format, or no roles stage, is not."""
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "micro_vlm.json").write_text(json.dumps({"settings": {"planner_reasoning": True}}))
    roles = dataclasses.replace(V.SMOKE_SETTINGS, stages=("roles",))
    note = V.reasoning_change(folder, roles)
    assert note and str(folder) in note and "reasoned planner answers" in note and "bare" in note
    assert V.reasoning_change(folder, dataclasses.replace(roles, planner_reasoning=True)) is None
    assert V.reasoning_change(folder, dataclasses.replace(roles, stages=("critic",))) is None
    assert V.reasoning_change(tmp_path, roles) is None  # no manifest: nothing to compare
    clauses = dataclasses.replace(roles, planner_reasoning=True, planner_clauses=True)
    note = V.reasoning_change(folder, clauses)
    assert note and "reasoned planner answers" in note and "trains clauses" in note
    assert "--planner-clauses" in note


def test_progress_role_is_the_critics_whole_instruction_answer_up_to_five_edits(smoke_vlm):
    """``progress`` (``--role-shares progress=N``): the SC prompt with the case's whole
    instruction and the critic's answer counting the edits done, on cases of up to 5 edits,
    trained into the base only when named."""
    from agent.microworld.truth import draw_case
    from tools.vlm._qwen import RawPrompt
    from tools.vlm.editscore_prompts import sc_prompt

    seeds = list(range(1_000_020, 1_000_032))
    counts = set()
    for seed in seeds:
        instruction = draw_case(seed, n_edits=V.CRITIC_EDITS, size=224)[3]
        got = list(V._role_samples(smoke_vlm, "progress", [seed], "train"))
        assert 2 <= len(got) <= 3
        for prompt, answer in got:
            # EditScoreCritic's SC prompt (two images) around the whole instruction
            assert isinstance(prompt, RawPrompt) and len(prompt.images) == 2
            assert sc_prompt(instruction, score_range=25) in prompt.text
            verdict = re.search(r"(\d+) of the (\d+) requested changes are done\.", answer)
            assert verdict is not None and json.loads(answer)["score"][0] <= 25
            counts.add(int(verdict.group(2)))
    assert 5 in counts
    # a pool reaches its limit though a scene has only 2-3 of them (``PER_SEED``)
    for limit in (5, 6, 9):
        assert len(V._pool(smoke_vlm, ["progress"], seeds, "train", limit)) == limit
    V.check_role_shares({"progress": 2.0})
    plain = V._stage_pools(smoke_vlm, "roles", V.SMOKE_SETTINGS, seeds[:2], [100_000])[1]
    assert "progress" not in plain["train"]
    settings = dataclasses.replace(V.SMOKE_SETTINGS, role_shares={"progress": 1.0})
    evals = V._stage_pools(smoke_vlm, "roles", settings, seeds[:2], [100_000])[1]
    assert evals["train"]["progress"]


def test_progress_wrong_role_is_the_whole_instruction_with_one_edit_on_another_object(smoke_vlm):
    """``progress_wrong`` (``--role-shares progress_wrong=N``): the SC prompt with the case's
    whole instruction on a result with one edit made on another object, at most one per
    scene, scored below the top; trained into the base only when named."""
    from agent.microworld.truth import draw_case
    from tools.vlm._qwen import RawPrompt
    from tools.vlm.editscore_prompts import sc_prompt

    seeds = list(range(1_000_020, 1_000_030))
    got = 0
    for seed in seeds:
        instruction = draw_case(seed, n_edits=V.CRITIC_EDITS, size=224)[3]
        samples = list(V._role_samples(smoke_vlm, "progress_wrong", [seed], "train"))
        assert len(samples) <= 1
        for prompt, answer in samples:
            assert isinstance(prompt, RawPrompt) and len(prompt.images) == 2
            assert sc_prompt(instruction, score_range=25) in prompt.text
            assert json.loads(answer)["score"][0] < 25
            got += 1
    assert 5 <= got < len(seeds)  # some scenes give none
    # a pool still reaches its limit (``SPARE_SCENES``)
    assert len(V._pool(smoke_vlm, ["progress_wrong"], seeds, "train", 5)) == 5
    V.check_role_shares({"progress_wrong": 1.0})
    plain = V._stage_pools(smoke_vlm, "roles", V.SMOKE_SETTINGS, seeds[:2], [100_000])[1]
    assert "progress_wrong" not in plain["train"]
    settings = dataclasses.replace(V.SMOKE_SETTINGS, role_shares={"progress_wrong": 1.0})
    evals = V._stage_pools(smoke_vlm, "roles", settings, seeds[:2], [100_000])[1]
    assert "progress_wrong" in evals["train"]


def test_role_shares_outside_the_cli_are_checked(smoke_vlm):
    train = list(range(1_000_000, 1_000_004))
    for shares, message in (
        ({"plan": 2.0}, "unknown role 'plan'"),
        ({"planner": -1.0}, "finite share >= 0, got -1.0"),
        ({"planner": float("inf")}, "finite share >= 0, got inf"),
        ({"critic": 0.0}, None),  # the critic's stage: no role left
    ):
        if message is None:
            settings = dataclasses.replace(V.SMOKE_SETTINGS, role_shares=shares)
            with pytest.raises(ValueError, match="leave the critic stage no role"):
                V._stage_pools(smoke_vlm, "critic", settings, train, [100_000])
            continue
        settings = dataclasses.replace(V.SMOKE_SETTINGS, role_shares=shares)
        with pytest.raises(ValueError, match=message):
            V._stage_pools(smoke_vlm, "roles", settings, train, [100_000])


def test_a_share_of_zero_leaves_a_role_out_of_its_stage(smoke_vlm):
    """``--role-shares check=0``: the role has no training samples and no evaluation rows;
    the others keep theirs."""
    train = list(range(1_000_000, 1_000_004))
    settings = dataclasses.replace(
        V.SMOKE_SETTINGS, pool_samples=12, role_shares={"check": 0.0, "pending": 0.0}
    )
    _, evals = V._stage_pools(smoke_vlm, "roles", settings, train, [100_000])
    assert set(evals["train"]) == {"grounder", "parser", "planner"}
    plain = V._stage_pools(smoke_vlm, "roles", V.SMOKE_SETTINGS, train, [100_000])[1]
    assert {"check", "pending"} <= set(plain["train"])


def test_critic_pool_has_five_edit_instructions(smoke_vlm):
    """The critic's training cases have up to 5 edits (``CRITIC_EDITS``), so its progress
    answers count up to 5; formats' default stops at 4."""
    seeds = list(range(1_000_000, 1_000_012))
    answers = [a for _, a in V._role_samples(smoke_vlm, "critic", seeds, "train")]
    counts = {int(m) for a in answers for m in re.findall(r"of the (\d) requested changes", a)}
    assert V.CRITIC_EDITS == (2, 5) and 5 in counts and counts <= {2, 3, 4, 5}


def test_focus_weight_weighs_the_cell_tokens(smoke_vlm, tmp_path, monkeypatch, capsys):
    """``focus_weight`` (``--focus-weight``) puts that weight on exactly the tokens of a critic
    answer's "Cells to change: ...", "Changed cells: ..." and verdict spans (1 on the other answer
    tokens, 0 on the prompt), and the training loss is then that weighted mean; at 1 the batch
    and the loss are the plain ones."""
    import torch

    from agent.train import vlm as vlm_module
    from agent.train.cli import main

    pool = list(V._role_samples(smoke_vlm, "critic", [1_000_000], "train"))[:2]
    items = V.render_samples(smoke_vlm, pool)
    assert "Changed cells: " in items[0][2] and "Changed cells: " not in items[1][2]
    plain = V.encode_rendered(smoke_vlm.processor, items)
    heavy = V.encode_rendered(smoke_vlm.processor, items, focus_weight=5.0)
    assert "label_weights" not in plain
    weights, labels = heavy["label_weights"], heavy["labels"]
    assert torch.equal(weights == 0, labels == -100)
    tok = smoke_vlm.processor.tokenizer
    for i, (_, _, answer) in enumerate(items):
        focused = tok.decode(labels[i][weights[i] == 5.0])
        span = V.FOCUS.search(answer)
        if span is None:  # the PQ answer: plain weights
            assert focused == "" and "Changed cells" not in answer
            continue
        spans = [m.group(0) for m in V.FOCUS.finditer(answer)]
        assert [m.split(":")[0] for m in spans[:2]] == ["Cells to change", "Changed cells"]
        assert len(spans) == 3 and re.fullmatch(VERDICT, spans[2])
        assert "the image changed" in answer and "image changed" not in focused
        assert all(m in focused for m in spans) and len(focused) <= sum(map(len, spans)) + 3
    batch = V.with_positions(smoke_vlm, heavy, "cpu")
    with torch.no_grad():
        weighted = V._lm_metrics(smoke_vlm, batch)[1]
        mean = V._lm_metrics(smoke_vlm, {k: v for k, v in batch.items() if k != "label_weights"})[1]
        logits = smoke_vlm.model(
            **{
                k: v
                for k, v in batch.items()
                if k not in ("labels", "label_weights", "mm_token_type_ids")
            }
        ).logits[:, :-1]
    each = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
    )
    w = weights[:, 1:]
    assert weighted == pytest.approx(float((each * w).sum() / w.sum()), rel=1e-4)
    one = torch.zeros_like(weights)  # all the weight on one answer token: its loss alone
    far = (each - mean).abs().masked_fill(w == 0, -1)  # the token farthest from the mean
    row, col = divmod(int(far.argmax()), far.shape[1])
    assert abs(float(each[row, col]) - mean) > 1e-3 * mean  # so the check below can fail
    one[row, col + 1] = 1.0
    with torch.no_grad():
        alone = V._lm_metrics(smoke_vlm, {**batch, "label_weights": one})[1]
    assert alone == pytest.approx(float(each[row, col]), rel=1e-4)
    assert mean == pytest.approx(float(each[w > 0].mean()), rel=1e-4)
    seen = {}
    monkeypatch.setattr(vlm_module, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    args = ["vlm", "--settings", "smoke", "--out", str(tmp_path), "--focus-weight"]
    assert main([*args, "4"]) == 0 and seen["s"].focus_weight == 4.0
    for bad in ("0", "-1", "inf", "nan"):
        assert main([*args, bad]) == 2
        assert "--focus-weight must be a finite number > 0, got" in capsys.readouterr().err
    for bad in (0.0, float("inf")):  # the settings are checked outside the CLI too
        settings = dataclasses.replace(V.SMOKE_SETTINGS, focus_weight=bad)
        with pytest.raises(
            ValueError, match=f"focus_weight must be a finite number > 0, got {bad}"
        ):
            V._stage_pools(smoke_vlm, "roles", settings, [1_000_000], [100_000])


def test_focus_boxes_weighs_the_grounders_box(smoke_vlm, tmp_path, capsys):
    """``focus_boxes`` (``--focus-boxes``) puts ``focus_weight`` on the tokens of a grounder
    answer's ``"bbox_2d": [...]`` and nowhere else in it (its label, copied from the prompt,
    keeps weight 1); without it a grounder answer has no focus span. The CLI refuses it with
    ``--focus-weight`` 1, where it would change nothing."""
    from agent.train.cli import main

    pool = [s for s in V._role_samples(smoke_vlm, "grounder", [1_000_000], "train")]
    items = [i for i in V.render_samples(smoke_vlm, pool) if "bbox_2d" in i[2]][:2]
    assert items
    tok = smoke_vlm.processor.tokenizer
    plain = V.encode_rendered(smoke_vlm.processor, items, focus_weight=5.0)
    boxed = V.encode_rendered(smoke_vlm.processor, items, focus_weight=5.0, focus_boxes=True)
    assert not (plain["label_weights"] == 5.0).any()
    for i, (_, _, answer) in enumerate(items):
        focused = tok.decode(boxed["labels"][i][boxed["label_weights"][i] == 5.0])
        box = V.FOCUS_BOXES.search(answer).group(0)
        assert box in focused and len(focused) <= len(box) + 3
        assert json.loads(answer)[0]["label"] not in focused
    code = main(["vlm", "--settings", "smoke", "--out", str(tmp_path / "m"), "--focus-boxes"])
    assert code == 2 and "--focus-boxes" in capsys.readouterr().err


def _clause_count(answer: str) -> int:
    """How many clauses a ``--planner-clauses`` answer lists (" | " between them)."""
    return answer.split(". NEXT_EDITING_INSTRUCTION")[0].split(". <stop>")[0].count(" | ") + 1


def test_planner_edits_set_how_many_edits_the_planner_samples_have(
    smoke_vlm, tmp_path, monkeypatch, capsys
):
    """Every planner call before the sixteenth session trained on 1-4 edit cases
    (``PLANNER_EDITS``) while the loop is measured on 5; ``planner_edits``
    (``--planner-edits``) names the range, for the training pool and for the evaluation."""
    from agent.train import vlm_eval
    from agent.train.cli import main

    seeds = list(range(1_000_000, 1_000_024))
    default = [
        a
        for s in seeds
        for _, a in V._seed_samples(("planner", s, "train", 4, True, "clauses", V.PLANNER_EDITS))
    ]
    five = [
        a
        for s in seeds[:6]
        for _, a in V._seed_samples(("planner", s, "train", 4, True, "clauses", (5, 5)))
    ]
    assert V.PLANNER_EDITS == (1, 4) and max(map(_clause_count, default)) == 4
    assert five and {_clause_count(a) for a in five} == {5}
    # through the settings into a roles stage's pool and its validation samples
    settings = dataclasses.replace(
        V.SMOKE_SETTINGS,
        planner_edits=(5, 5),
        planner_reasoning=True,
        planner_clauses=True,
        role_shares={"grounder": 0.0, "parser": 0.0},
    )
    pool, evals = V._stage_pools(smoke_vlm, "roles", settings, seeds[:8], [100_000, 100_001])
    planner = [a for _, a in pool if "NEXT_EDITING_INSTRUCTION" in a or "<stop>" in a]
    assert planner and {_clause_count(a) for a in planner} == {5}
    assert {_clause_count(a) for _, a in evals["train"]["planner"]} == {5}
    for bad in ((0, 5), (4, 2), (1, 6), (5,), "2-5"):
        with pytest.raises(ValueError, match="planner_edits must"):
            V.check_planner_edits(bad)
    with pytest.raises(ValueError, match="planner_edits must"):
        V._stage_pools(
            smoke_vlm, "roles", dataclasses.replace(settings, planner_edits=(1, 6)), seeds, []
        )
    # the CLI
    seen = {}
    monkeypatch.setattr(V, "train_vlm", lambda out, settings, **k: seen.update(s=settings))
    args = ["vlm", "--settings", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0 and seen["s"].planner_edits == (1, 4)
    assert main([*args, "--planner-edits", "2,5"]) == 0 and seen["s"].planner_edits == (2, 5)
    assert main([*args, "--planner-edits", "2,6"]) == 2
    assert "--planner-edits: '2,6'" in capsys.readouterr().err
    # the evaluation's states, and eval-vlm's option
    states = vlm_eval.planner_states(range(100_000, 100_004), "train", 40, edits=(5, 5))
    # the indices of the edits done: a fifth edit (index 4) exists only in 5-edit cases
    assert states and any(4 in r["state"] for r in states)
    default_states = vlm_eval.planner_states(range(100_000, 100_004), "train", 200)
    assert default_states and not any(4 in r["state"] for r in default_states)
    from agent.train.vlm_model import MANIFEST

    (tmp_path / MANIFEST).write_text("{}")
    got = []
    monkeypatch.setattr(vlm_eval, "evaluate_vlm", lambda model, **k: got.append(k) or {})
    assert main(["eval-vlm", "--model", str(tmp_path), "--planner-edits", "5,5"]) == 0
    assert main(["eval-vlm", "--model", str(tmp_path)]) == 0
    assert [k["planner_edits"] for k in got] == [(5, 5), None]
    assert main(["eval-vlm", "--model", str(tmp_path), "--planner-edits", "0,5"]) == 2
    assert "--planner-edits: '0,5'" in capsys.readouterr().err
