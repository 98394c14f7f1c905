"""Training samples in the real classes' formats: each is read by the class it is meant for
(tiny models on CPU), exports are sharded with a manifest, train seeds and train words only."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from agent.microworld import seeds, split_of
from agent.microworld.formats import (
    VERDICT,
    critic_samples,
    export,
    grounder_samples,
    parse_samples,
    planner_samples,
)
from agent.microworld.grammar import heldout_markers

pytest.importorskip("transformers")

SEEDS = seeds("train", 3, offset=40)


def _text_of(content):
    return "".join(c["text"] for c in content if c["type"] == "text")


def test_planner_samples_go_through_the_qwen25vl_processor_with_the_mira_template():
    from agent.prompts import STOP_TOKEN, render_planner_prompt
    from tools.vlm.planner import MiraPlanner, parse_mira_output
    from tools.vlm.tiny import tiny_processor, tiny_qwen25vl

    processor = tiny_processor("qwen2.5")
    planner = MiraPlanner(tiny_qwen25vl(), image_size=None)
    rows = list(planner_samples(SEEDS, n_edits=3))
    assert {r["mistake"] for r in rows} >= {None, "wrong", "bleed", "partial", "noop"}
    # every subset of the 3 edits is a state: all edit orders; one stop per case
    assert sum(r["answer"] == STOP_TOKEN for r in rows) == 3
    assert len({tuple(r["state"]) for r in rows if r["seed"] == SEEDS[0]}) == 8
    for r in rows[:12]:
        user, assistant = r["messages"]
        images = [c["image"] for c in user["content"] if c["type"] == "image"]
        instruction = _text_of(user["content"]).split("Instruction Set: ")[1].split("\n")[0]
        # the user turn is exactly what the MiraPlanner class sends
        assert planner.messages(images[0], images[1], instruction) == [user]
        text = processor.apply_chat_template(r["messages"], tokenize=False)
        for piece in render_planner_prompt(instruction).split("<image>"):
            assert piece in text  # the verbatim template around the two images
        assert text.count("<|vision_start|>") == 2 and r["answer"] in text
        batch = processor(text=[text], images=images, return_tensors="pt")
        assert batch["image_grid_thw"].shape[0] == 2
        decision = parse_mira_output(_text_of(assistant["content"]))
        assert decision.stop == (r["answer"] == STOP_TOKEN)
        if not decision.stop:
            assert r["answer"] == f"NEXT_EDITING_INSTRUCTION: {decision.instruction}"


def test_critic_samples_are_read_by_the_editscore_parser_and_prompts():
    from tools.vlm.critic import EditScoreCritic, parse_editscore_output
    from tools.vlm.tiny import tiny_qwen3vl

    critic = EditScoreCritic(tiny_qwen3vl(), num_passes=1)
    rows = list(critic_samples(SEEDS))
    modes = {r["mode"] for r in rows}
    assert modes >= {"correct", "wrong", "bleed", "noop", "partial", "progress"}
    assert modes & {"blur", "smear"}
    for r in rows:
        for chat, key in ((r["sc"], "sc_score"), (r["pq"], "pq_score")):
            parsed = parse_editscore_output(_text_of(chat[1]["content"]), score_range=25)
            assert list(parsed.scores) == r[key] and parsed.reasoning
        src, edited = (c["image"] for c in r["sc"][0]["content"] if c["type"] == "image")
        instruction = _text_of(r["sc"][0]["content"])
        instruction = re.search(r"Editing instruction: (.*)\n\Z", instruction, re.DOTALL).group(1)
        sc, pq = critic.prompts(src, edited, instruction)
        assert sc == [r["sc"][0]] and pq == [r["pq"][0]]  # the class's own prompts, verbatim
    by = {}
    for r in rows:
        by.setdefault(r["mode"], []).append(r)
    assert all(r["sc_score"] == [25, 25] and r["success"] for r in by["correct"])
    assert all(r["sc_score"][0] <= 5 for r in by["noop"])
    assert all(r["sc_score"][1] <= 12 for r in by["bleed"] + by["wrong"] if not r["success"])
    damaged = by.get("blur", []) + by.get("smear", [])
    assert damaged and all(r["pq_score"][1] < 25 for r in damaged)
    # the damage is graded under quality: the SC answer (scores, verdict) is the clean result's
    correct = {r["id"].rsplit("-", 1)[0]: r for r in by["correct"]}
    for r in damaged:
        twin = correct[r["id"].rsplit("-", 1)[0]]
        assert r["sc_score"] == twin["sc_score"]
        verdict = lambda x: json.loads(_text_of(x["sc"][1]["content"]))["reasoning"].split(". ")[2]  # noqa: E731
        assert verdict(r) == verdict(twin) == "The requested change is done"
    progress = sorted(r["sc_score"][0] for r in by["progress"] if r["seed"] == SEEDS[0])
    assert progress[0] < progress[-1] == 25  # partial progress grades in between


def test_critic_reasoning_names_the_changed_cells_before_the_verdict():
    """The SC reasoning opens with the cells the instruction should change, then the cells
    that changed (what the critic must look at), then its verdict: none changed for a
    no-op, the target's cell for a correct edit, one more for a bleed; the cells to change
    are the same for every variant of an edit (the correct edit's)."""
    from agent.microworld.formats import changed_cells

    def cells(r, label="Changed cells"):
        text = json.loads(_text_of(r["sc"][1]["content"]))["reasoning"]
        assert text.startswith("Cells to change: ")
        said = re.search(rf"{label}: ([^.]*)\.", text).group(1)
        assert text.index("Changed cells") < text.index("requested change")
        return [] if said == "none" else said.split(", ")

    rows = [r for r in critic_samples(SEEDS) if r["mode"] != "progress"]
    by = {}
    for r in rows:
        by.setdefault((r["seed"], r["id"].split("-")[2]), {})[r["mode"]] = r
    for variants in by.values():
        correct = cells(variants["correct"])
        assert len(correct) == 1 and cells(variants["noop"]) == []
        assert all(cells(v, "Cells to change") == correct for v in variants.values())
        if "bleed" in variants:
            assert set(cells(variants["bleed"])) > set(correct)
        if "wrong" in variants:
            assert cells(variants["wrong"]) and cells(variants["wrong"]) != correct
    full = [r for r in critic_samples(SEEDS[:1]) if r["mode"] == "progress"]
    wanted = {tuple(cells(r, "Cells to change")) for r in full}
    assert len(full) >= 2 and len(wanted) == 1 and len(next(iter(wanted))) >= 2  # every edit's
    # the verdict sentence is always one VERDICT names (``--focus-weight`` weighs it), the
    # multi-edit count included
    for r in rows + full:
        text = json.loads(_text_of(r["sc"][1]["content"]))["reasoning"]
        assert len(re.findall(VERDICT, text)) == 1, text
    said = {
        re.search(VERDICT, json.loads(_text_of(r["sc"][1]["content"]))["reasoning"]).group(0)
        for r in full
    }
    assert any(re.fullmatch(r"0 of the [2-9] requested changes are done\.", v) for v in said)
    blank = Image.new("RGB", (224, 224), "white")
    marked = blank.copy()
    marked.paste((0, 0, 0), (32, 96, 64, 128))  # the cell of row 1, column 1 (lattice row 3)
    assert changed_cells(blank, marked) == ["r1c1"] and changed_cells(blank, blank) == []


def test_grounder_samples_are_read_by_the_grounder_box_parser():
    from tools.vlm.grounder import QwenVLGrounder, parse_boxes, to_source_box
    from tools.vlm.tiny import tiny_qwen3vl

    grounder = QwenVLGrounder(tiny_qwen3vl())
    rows = list(grounder_samples(SEEDS))
    kinds = {r["ref_kind"] for r in rows}
    assert "none" in kinds and len(kinds - {"none"}) >= 4
    for r in rows:
        user, assistant = r["messages"]
        image = user["content"][0]["image"]
        assert grounder.messages(image, r["expression"]) == [user]
        boxes = parse_boxes(_text_of(assistant["content"]))
        if r["box"] is None:
            assert boxes == []
            continue
        (raw,) = boxes
        assert all(0 <= v <= 1000 for v in raw)
        box = to_source_box(raw, convention="qwen3", source_size=image.size)
        x1, y1, x2, y2 = r["box"]
        assert box.x1 <= x1 and box.y1 <= y1 and box.x2 >= x2 and box.y2 >= y2
        assert box.x2 - box.x1 <= x2 - x1 + 2 and box.y2 - box.y1 <= y2 - y1 + 2


def test_parse_samples_are_read_by_the_mirage_parser():
    from tools.mirage.parse import PARSE_PROMPT, parse_edit_pairs

    for r in parse_samples(seeds("train", 10)):
        user, assistant = r["messages"]
        prompt = _text_of(user["content"])
        instruction = prompt.split("Instruction: ", 1)[1]
        assert prompt == PARSE_PROMPT.format(instruction=instruction)
        pairs = parse_edit_pairs(_text_of(assistant["content"]))
        assert [p.expression for p in pairs] == [p["ref"] for p in r["pairs"]]
        for pair in pairs:
            assert pair.expression in instruction  # verbatim span
            assert " it" in f" {pair.instruction}"


def test_parse_answers_take_their_words_from_the_instruction():
    # The parser's reference must be a function of the instruction: a verb or pattern word
    # the text does not write takes the slot's first word, never the grammar's unused draw.
    from agent.microworld.grammar import PATTERN_ADJECTIVES, VERBS

    firsts = {words[0][0] for words in (*VERBS.values(), *PATTERN_ADJECTIVES.values())}
    checked = 0
    for r in parse_samples(seeds("train", 300)):
        text = _text_of(r["messages"][0]["content"]).split("Instruction: ", 1)[1].lower()
        said = set(re.findall(r"[\w'-]+", text))
        for pair in r["pairs"]:
            for word in re.findall(r"[\w'-]+", pair["edit"]):
                assert word in said or word in firsts or word in {"it", "into", "out"}, (
                    word,
                    pair["edit"],
                    text,
                )
                checked += 1
    assert checked > 1000


def test_planner_clauses_name_each_clause_with_its_cells_and_state():
    """``clauses=True``: the changed cells, then every clause's own words in the instruction's
    order with the cells it changes and "done" exactly for the edits the current image shows
    made (the state's, and a bleeding edit's own); on a clean state, and after a half-way or
    missing edit, the answer is the first clause marked "to do" (``<stop>`` when none is), and
    the parser still reads the bare answer after it."""
    from agent.microworld.formats import CELL_LISTS, changed_cells, plan_clauses
    from agent.microworld.truth import draw_case
    from tools.prompts import parse_planner_output

    assert plan_clauses(["remove the disc", "make it red"], [["r0c1"], []], ["r0c1"], [0]) == (
        "Changed cells: r0c1. Clauses: remove the disc (r0c1): done | make it red (none): to do."
    )
    copied = bleeds = 0
    for seed in seeds("train", 6):
        _, edits, parts, _, _ = draw_case(seed, n_edits=(1, 4), size=224)
        cells = [
            re.search(rf"{CELL_LISTS[0]}: (.*?)\.", r["reasoning"]).group(1).split(" | ")
            for r in planner_samples([seed], reasoning=True)
        ][0]
        for r in planner_samples([seed], clauses=True):
            said = _text_of(r["messages"][1]["content"])
            assert said == f"{r['reasoning']} {r['answer']}"
            original, current = (
                c["image"] for c in r["messages"][0]["content"] if c["type"] == "image"
            )
            head = f"{CELL_LISTS[1]}: {', '.join(changed_cells(original, current)) or 'none'}. "
            assert r["reasoning"].startswith(head + "Clauses: ")
            items = r["reasoning"][len(head) + len("Clauses: ") : -1].split(" | ")
            assert len(items) == len(edits) == len(parts)
            states = []
            for item, part, cell in zip(items, parts, cells, strict=True):
                assert item.startswith(f"{part.text} ({cell}): ")
                states.append(item.rsplit(": ", 1)[1])
            shown = set(r["state"])
            if r["mistake"] == "bleed":  # made its own edit, and one more object's
                shown.add(min(set(range(len(edits))) - set(r["state"])))
                bleeds += 1
            assert states == ["done" if i in shown else "to do" for i in range(len(edits))]
            decision = parse_planner_output(said)
            assert decision.stop == (r["answer"] == "<stop>")
            if decision.stop or "to do" not in states:  # all done: stop, or repair a bleed
                assert "to do" not in states and (decision.stop or r["mistake"] == "bleed")
            if r["mistake"] in (None, "partial", "noop") and not decision.stop:
                # the answer's edit is the first clause marked "to do"
                assert states.index("to do") == min(set(range(len(edits))) - set(r["state"]))
                first = parts[states.index("to do")].text
                copied += decision.instruction == first
    assert copied > 5 and bleeds > 0


def test_export_writes_shards_and_manifest_on_train_seeds_with_train_words(tmp_path):
    markers = heldout_markers()
    pattern = re.compile(
        r"(?<![\w-])(?:"
        + "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
        + r")(?![\w-])"
    )
    for kind in ("editor", "planner", "grounder", "parse", "critic"):
        manifest = export(tmp_path, kind, n=4, shard_size=25)
        assert manifest["seeds"]["splits"] == ["train"] and manifest["language"] == "train"
        root = tmp_path / kind
        assert json.loads((root / "manifest.json").read_text()) == manifest
        total = 0
        for shard in manifest["shards"]:
            lines = (root / shard["file"]).read_text().splitlines()
            assert len(lines) == shard["records"] <= 25
            total += len(lines)
            for line in lines:
                record = json.loads(line)
                assert split_of(record["seed"]) == "train"
                # no held-out word or template anywhere in what a model is trained on
                words = [
                    c["text"]
                    for turn in record.get("messages", record.get("sc", []))
                    for c in turn["content"]
                    if c["type"] == "text"
                ]
                if kind == "editor":
                    words = [record["instruction"]]
                    assert record["mask"].endswith(".png") and record["source"].endswith(".png")
                for text in words:
                    text = text.lower()
                    # the fixed prompts are not generated language: drop them before checking
                    text = text.split("instruction set: ")[-1].split("editing instruction: ")[-1]
                    text = text.split("instruction: ")[-1]
                    assert not pattern.search(text), (kind, text[:200])
                images = re.findall(r'"(images/\d+\.png)"', line)
                assert all((root / p).is_file() for p in images)
        assert total == manifest["records"] > 0
    with pytest.raises(ValueError, match="kind"):
        export(tmp_path, "editor-ish")


def test_planner_reasoning_names_each_clauses_cells_then_the_changed_ones():
    """``reasoning=True``: the assistant turn is ``plan_reason`` (the cells each clause's edit
    changes, in the instruction's order, then the cells that differ between the two images)
    before MIRA's answer, which stays the bare ``answer``; on a clean state the first clause
    whose cells did not change is the one the answer names, and after a wrong-instance or
    bleeding edit a cell outside every clause changed."""
    from agent.microworld.formats import CELL_LISTS, changed_cells, plan_reason
    from agent.microworld.truth import draw_case
    from tools.prompts import parse_planner_output

    assert plan_reason([["r0c1"], ["r1c1", "r1c2"]], []) == (
        "Cells to change: r0c1 | r1c1, r1c2. Changed cells: none."
    )
    assert plan_reason([[]], ["r2c2"]) == "Cells to change: none. Changed cells: r2c2."
    checked = mistakes = shown = partials = hidden = 0
    for seed in seeds("train", 6):
        edits = draw_case(seed, n_edits=(1, 4), size=224)[1]
        bare = list(planner_samples([seed]))
        reasoned = list(planner_samples([seed], reasoning=True))
        assert [r["answer"] for r in reasoned] == [r["answer"] for r in bare]
        for r in reasoned:
            said = _text_of(r["messages"][1]["content"])
            assert said == f"{r['reasoning']} {r['answer']}"
            original, current = (
                c["image"] for c in r["messages"][0]["content"] if c["type"] == "image"
            )
            lists = re.fullmatch(
                rf"{CELL_LISTS[0]}: (.*)\. {CELL_LISTS[1]}: (.*)\.", r["reasoning"]
            )
            assert lists is not None
            clauses = [set(c.split(", ")) for c in lists.group(1).split(" | ")]
            changed = changed_cells(original, current)
            assert lists.group(2) == (", ".join(changed) or "none")
            assert len(clauses) == len(edits)
            decision = parse_planner_output(said)
            assert decision.stop == (r["answer"] == "<stop>")
            if not decision.stop:
                assert decision.instruction == r["answer"].split(": ", 1)[1]
            if r["mistake"] is None:
                pending = [i for i, c in enumerate(clauses) if not c <= set(changed)]
                done = set(r["state"])
                assert pending[:1] == [i for i in range(len(clauses)) if i not in done][:1]
                checked += 1
            elif r["mistake"] == "partial":
                # a half-way edit mostly changes its clause's cells as the finished one does:
                # the lists show it done, only the pixels tell the answer repeats it
                pending = min(i for i in range(len(clauses)) if i not in r["state"])
                hidden += clauses[pending] <= set(changed)
                partials += 1
            elif r["mistake"] in ("wrong", "bleed"):
                # the lists differ from a clean state's (the done clauses' cells) unless the
                # wrong object sits in a cell another clause changes: then only pixels tell
                clean = set().union(*(clauses[i] for i in r["state"]))
                shown += set(changed) != clean
                mistakes += 1
    assert checked > 20 and mistakes > 5 and shown >= 0.8 * mistakes
    assert partials > 2 and hidden >= 0.6 * partials


def test_progress_only_critic_samples_are_the_whole_instruction_ones_tagged_apart():
    """``critic_samples(progress_only=True)``: only the whole-instruction records (none, some
    and every edit done), as the full stream has them, with ids of their own (``p``): their
    middle subset is drawn apart from the full stream's."""
    some = list(critic_samples(SEEDS, n_edits=(2, 5), progress_only=True))
    full = {r["id"]: r for r in critic_samples(SEEDS, n_edits=(2, 5)) if r["mode"] == "progress"}
    assert some and all(r["mode"] == "progress" and r["id"].endswith("p") for r in some)
    for r in some:
        twin = full.get(r["id"][:-1])
        if r["id"].endswith(("full0p",)):  # nothing done: the same record both ways
            assert twin is not None and twin["sc"][1] == r["sc"][1]
        assert set(r) == set(next(iter(full.values())))
    assert {int(r["id"].split("full")[1][:-1]) for r in some} >= {0}


def test_one_wrong_makes_every_edit_but_one_which_lands_on_another_object():
    """``one_wrong``: every edit made but ``edits[odd]``, which lands on another object; the
    pixel scorer passes every other edit and fails that one, and the render differs from the
    one with that edit left out (a wrong object another edit changes would undo it too)."""
    import random

    from agent.microworld.edits import apply_edits
    from agent.microworld.formats import one_wrong
    from agent.microworld.render import render
    from agent.microworld.scoring import score_edits
    from agent.microworld.truth import draw_case, target_box

    made = 0
    for n in (3, 5):
        for seed in range(1_000_000, 1_000_010):
            scene, edits, *_ = draw_case(seed, n_edits=n, size=224)
            odd = seed % n
            wrong = one_wrong(scene, edits, odd, random.Random(seed))
            if wrong is None:
                continue
            made += 1
            final = render(apply_edits(scene, edits))
            boxes = [target_box(scene, e) for e in edits]
            score = score_edits(render(scene), wrong, final, boxes, kinds=[e.kind for e in edits])
            assert [e.passed for e in score.edits] == [j != odd for j in range(n)]
            missing = render(apply_edits(scene, [e for j, e in enumerate(edits) if j != odd]))
            assert wrong.tobytes() != missing.tobytes()
    assert made >= 14


def test_wrong_progress_critic_samples_make_one_edit_on_another_object():
    """``critic_samples(wrong_progress=True)``: at most one whole-instruction record per seed
    (id ``fullw``), made by ``one_wrong``: as many cells change as the instruction asks, but
    not the same ones, so the answer's two cell lists differ, the pixel scorer finds no
    success and the score is below the top. The progress-only stream has none of them."""
    from agent.microworld.formats import CELL_LISTS

    seeds = list(range(1_000_000, 1_000_012))
    some = list(critic_samples(seeds, n_edits=(2, 5), wrong_progress=True))
    assert 6 <= len(some) <= len(seeds) and len({r["seed"] for r in some}) == len(some)
    for r in some:
        assert r["mode"] == "progress" and r["id"] == f"mw-{r['seed']}-fullw"
        assert not r["success"] and r["sc_score"][0] < 25
        answer = json.loads(r["sc"][1]["content"][0]["text"])["reasoning"]
        lists = re.findall(rf"(?:{CELL_LISTS[0]}|{CELL_LISTS[1]}): ([^.]*)\.", answer)
        assert len(lists) == 2 and set(lists[0].split(", ")) != set(lists[1].split(", "))
    plain = [r["id"] for r in critic_samples(seeds[:3], n_edits=(2, 5), progress_only=True)]
    assert plain and not any(i.endswith("fullw") for i in plain)


def test_planner_answers_copy_the_clause_that_still_names_the_pending_edit():
    """``wording="copy"`` (the default): the answer is a function of the instruction and the
    current image: the instruction's own clause when it still names the pending edit there
    (the reader reads it as that edit), else one fixed re-description per case and edit."""
    from agent.microworld.reader import read_edit
    from agent.microworld.scene import Scene
    from agent.microworld.truth import draw_case

    copied = total = 0
    for seed in seeds("train", 8):
        _, edits, parts, _, _ = draw_case(seed, n_edits=(1, 4), size=224)
        clauses = {p.text: e for p, e in zip(parts, edits, strict=True)}
        by_state: dict[tuple, set] = {}
        for r in planner_samples([seed]):
            if r["mistake"] in (None, "noop") and r["answer"].startswith("NEXT"):
                words = r["answer"].removeprefix("NEXT_EDITING_INSTRUCTION: ")
                by_state.setdefault(tuple(r["state"]), set()).add(words)
                total += 1
                if words in clauses:
                    copied += 1
                    read = read_edit(words, Scene.model_validate(r["scene"]))
                    assert read is not None and read.target == clauses[words].target
        # a clean state and the no-op mistake on it show the same image: the same answer
        assert all(len(answers) == 1 for answers in by_state.values())
    assert copied / total > 0.7
    varied = {r["answer"] for r in planner_samples(seeds("train", 8), wording="varied")}
    copy = {r["answer"] for r in planner_samples(seeds("train", 8))}
    assert len(varied) > len(copy)  # the old random wording: more distinct answers
