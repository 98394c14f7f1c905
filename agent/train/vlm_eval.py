"""Decoded role metrics of a micro VLM folder, through the project's own classes.

Issue 11's gate: every number is given with the TRUE images and with the images SHUFFLED across
the evaluated samples (a derangement: each sample sees another sample's image), on seeds of the
chosen split, for the train and the held-out language. A role counts as learned only well above
its shuffled row and the issue's text-only baselines (``agent.train.vlm.TEXT_ONLY``).

- grounder: ``QwenVLGrounder`` (Qwen2.5-VL pixel boxes); a positive counts when its first box
  has IoU >= 0.75 with the true box (``iou50`` beside it); a negative ("names nothing") counts
  when the class raises ``GroundingError`` (the model answered ``[]``).
- parser: ``VLMInstructionParser``; ``exact`` when the (expression, edit) pairs equal the
  truth string for string; ``same_edits`` when the expressions are exact and each edit's words
  mean the same (``edit_meaning``: "paint it orange" = "make it orange").
- critic: ``EditScoreCritic`` with the ``editscore`` adapter (``critic_in_base``: none, the
  base model), greedy; per edit, each flawed result (wrong instance, bleed, no-op, partial) is
  a pair with the correct result: separated when the correct one's overall score is higher.
  ``valid`` is the parseable-output rate. ``changed_cells``: the share of answers whose
  reasoning names exactly the cells (in any order) that changed between the edit's own two
  images (``formats.changed_cells``), the part of the answer that only a comparison gets
  right. The shuffled row is scored against the same truth while the model saw another edit's
  images, so the gap between the rows measures the use of the images; the shuffled row is not
  a text-only baseline (a no-op's truth, none, also fits a shuffled no-op).
- critic_stop: the critic's stop as the ``micro`` preset's loop uses it: the whole
  instruction of a case with 3 and with 5 edits, critiqued on the render with every edit done,
  on one with an edit (drawn at random) left out, and on one with that edit made on another
  object, every other edit passing (``STOP_RENDERS``, ``formats.one_wrong``); "satisfied" is
  an overall score of at least the preset's ``stop_when_satisfied`` (10).
  ``satisfied_done`` is the share of done renders it would stop on,
  ``satisfied_missing`` and ``satisfied_wrong`` the shares of unfinished ones it would stop on
  wrongly (the loop's false stop). A render counts only where the pixel scorer agrees with
  its kind.
- check: the roles stage's yes/no task (one clause, both images), answered by the base model;
  the first answer token, where "yes" and "no" differ, right or not.

- planner: ``MiraPlanner``, greedy. A next step is judged by executing it:
  ``agent.microworld.reader.judge_step`` reads the words back into an edit on the scene the
  current image shows, applies it, and counts "progress" when some cell comes closer to the
  goal and none moves away. Rows: next step on a clean state, corrective step after a mistake
  (wrong instance, bleed, partial, no-op), stop precision and recall. The reader does not read
  every phrasing: ``reference`` is the rate at which the reference answers themselves are
  judged "progress", the ceiling of the judge.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.microworld.reader import edit_meaning
from agent.train.vlm import CRITIC_ADAPTER, GROUNDER_ADAPTER, shuffled

__all__ = ["edit_meaning", "evaluate_vlm", "iou"]

FLAWED = ("wrong", "bleed", "noop", "partial")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two XYXY boxes (x2/y2 exclusive)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _grounder(
    vlm: Any, seeds: Sequence[int], language: str, limit: int, adapter: str | None = None
) -> dict[str, Any]:
    from agent.microworld import formats
    from tools.errors import GroundingError
    from tools.vlm.grounder import QwenVLGrounder

    grounder = QwenVLGrounder(vlm, retries=0, max_new_tokens=96, adapter=adapter)
    samples = list(formats.grounder_samples(seeds, language=language))[:limit]
    images = [r["messages"][0]["content"][0]["image"] for r in samples]
    out: dict[str, Any] = {"samples": len(samples)}
    for name, order in (("true", list(range(len(samples)))), ("shuffled", shuffled(len(samples)))):
        hit75 = hit50 = pos = neg = neg_ok = 0
        for r, j in zip(samples, order, strict=True):
            try:
                boxes = grounder.ground(images[j], r["expression"]).boxes
            except GroundingError:
                boxes = []
            if r["box"] is None:
                neg += 1
                neg_ok += not boxes
                continue
            pos += 1
            first = (boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2) if boxes else None
            best = iou(first, r["box"]) if first else 0.0
            hit75 += best >= 0.75
            hit50 += best >= 0.5
        out[name] = {
            "iou75": hit75 / max(pos, 1),
            "iou50": hit50 / max(pos, 1),
            "negatives_rejected": neg_ok / max(neg, 1),
            "positives": pos,
            "negatives": neg,
        }
    return out


def _parser(vlm: Any, seeds: Sequence[int], language: str, limit: int) -> dict[str, Any]:
    from agent.microworld import formats
    from tools.mirage.parse import RegionParseError, VLMInstructionParser

    parser = VLMInstructionParser(vlm, retries=0, max_new_tokens=160)
    samples = list(formats.parse_samples(seeds, language=language))[:limit]
    out: dict[str, Any] = {"samples": len(samples)}
    for name, order in (("true", list(range(len(samples)))), ("shuffled", shuffled(len(samples)))):
        exact = same = valid = 0
        for r, j in zip(samples, order, strict=True):
            instruction = r["messages"][0]["content"][1]["text"]
            instruction = _instruction_of(instruction)
            try:
                pairs = parser.parse(samples[j]["image"], instruction)
            except RegionParseError:
                continue
            valid += 1
            got = [{"ref": p.expression, "edit": p.instruction} for p in pairs]
            exact += got == r["pairs"]
            same += [g["ref"] for g in got] == [t["ref"] for t in r["pairs"]] and [
                edit_meaning(g["edit"]) for g in got
            ] == [edit_meaning(t["edit"]) for t in r["pairs"]]
        n = max(len(samples), 1)
        out[name] = {"exact": exact / n, "same_edits": same / n, "valid": valid / n}
    return out


def _instruction_of(prompt: str) -> str:
    from tools.mirage.parse import PARSE_PROMPT

    head, tail = PARSE_PROMPT.format(instruction="\x00").split("\x00")
    if not (prompt.startswith(head) and prompt.endswith(tail)):
        raise AssertionError("parse sample does not carry PARSE_PROMPT")
    return prompt[len(head) : len(prompt) - len(tail)]


def _greedy_critic(vlm: Any, adapter: str | None) -> Any:
    """``EditScoreCritic`` on ``vlm`` as the ``micro-critic`` backend asks it: greedy, one pass,
    160 new tokens, through ``adapter`` (None: the base model)."""
    from tools.vlm.critic import EditScoreCritic

    return EditScoreCritic(vlm, adapter=adapter, temperature=0.0, retries=0, max_new_tokens=160)


def _critic(
    vlm: Any,
    seeds: Sequence[int],
    language: str,
    limit: int,
    *,
    adapter: str | None = CRITIC_ADAPTER,
) -> dict[str, Any]:
    from agent.microworld import formats
    from agent.train.vlm import _sc_instruction

    critic = _greedy_critic(vlm, adapter)
    groups: list[dict[str, Any]] = []  # one per edit: {mode: (source, edited, instruction)}
    for r in formats.critic_samples(seeds, language=language):
        if r["mode"] not in ("correct", *FLAWED):
            continue
        images = [c["image"] for c in r["sc"][0]["content"] if c["type"] == "image"]
        if r["mode"] == "correct" or not groups:
            groups.append({})
        groups[-1][r["mode"]] = (images[0], images[1], _sc_instruction(r))
    groups = [g for g in groups if "correct" in g][:limit]
    sources = [g["correct"][0] for g in groups]
    out: dict[str, Any] = {"edits": len(groups)}
    for name, order in (("true", list(range(len(groups)))), ("shuffled", shuffled(len(groups)))):
        separated = pairs = valid = calls = cells_right = 0
        by_mode = {m: [0, 0] for m in FLAWED}
        for g, j in zip(groups, order, strict=True):
            scores = {}
            for mode, (source, edited, instruction) in g.items():
                truth = sorted(formats.changed_cells(source, edited))  # this edit's images
                if name == "shuffled":  # another edit's images, this edit's instruction
                    other = groups[j].get(mode) or groups[j]["correct"]
                    source, edited = sources[j], other[1]
                c = critic.critique(source, edited, instruction)
                calls += 1
                valid += c.valid
                cells_right += formats.cells_said(c.reasoning) == truth
                scores[mode] = c.overall if c.valid and c.overall is not None else -1.0
            for mode in FLAWED:
                if mode in scores:
                    pairs += 1
                    ok = scores["correct"] > scores[mode]
                    separated += ok
                    by_mode[mode][0] += ok
                    by_mode[mode][1] += 1
        out[name] = {
            "separated": separated / max(pairs, 1),
            "pairs": pairs,
            "valid": valid / max(calls, 1),
            "changed_cells": cells_right / max(calls, 1),
            "by_mode": {m: (v[0] / v[1] if v[1] else math.nan) for m, v in by_mode.items()},
        }
    return out


#: the edit counts of the critic_stop rows: the loop table's
STOP_EDITS = (3, 5)
#: the critic_stop renders of a case: every edit done, one edit left out, one edit made on
#: another object with every other edit passing (``formats.one_wrong``)
STOP_RENDERS = ("done", "missing", "wrong")


def _stop_renders(seed: int, n: int, language: str) -> tuple[Any, str, dict[str, Any]]:
    """(source image, instruction, {render kind: image}) of the ``n``-edit case of ``seed``:
    every edit done, one edit (drawn at random) left out, and that edit made on another object
    (``formats.one_wrong``: every other edit passes the pixel scorer, that one does not); a
    kind is left out where it cannot be made or the scorer does not agree with it."""
    import random

    from agent.microworld.edits import apply_edits
    from agent.microworld.formats import one_wrong
    from agent.microworld.render import render
    from agent.microworld.scoring import score_edits
    from agent.microworld.truth import draw_case, target_box

    scene, edits, _, instruction, _ = draw_case(
        seed,
        n_edits=n,
        size=224,
        language=language,  # type: ignore[arg-type]
    )
    rng = random.Random(f"critic-stop|{seed}|{n}")
    k = rng.randrange(n)
    source, final = render(scene), render(apply_edits(scene, edits))
    images = {"done": final}
    images["missing"] = render(apply_edits(scene, [e for i, e in enumerate(edits) if i != k]))
    wrong = one_wrong(scene, edits, k, rng)
    if wrong is not None:
        images["wrong"] = wrong
    boxes = [target_box(scene, e) for e in edits]
    kinds = [e.kind for e in edits]
    kept = {}
    for kind, image in images.items():
        success = score_edits(source, image, final, boxes, kinds=kinds).success
        if success == (kind == "done"):
            kept[kind] = image
    return source, instruction, kept


def _critic_stop(
    vlm: Any,
    seeds: Sequence[int],
    language: str,
    limit: int,
    *,
    adapter: str | None = CRITIC_ADAPTER,
) -> dict[str, Any]:
    from agent.config import PRESETS

    critic = _greedy_critic(vlm, adapter)
    target = float(PRESETS["micro"]["stop_when_satisfied"])  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for n in STOP_EDITS:
        cases = [_stop_renders(seed, n, language) for seed in seeds[:limit]]
        row: dict[str, Any] = {"cases": len(cases)}
        for name, order in (("true", list(range(len(cases)))), ("shuffled", shuffled(len(cases)))):
            said = {kind: [0, 0] for kind in STOP_RENDERS}  # kind -> [satisfied, renders]
            valid = calls = 0
            for (_, instruction, renders), j in zip(cases, order, strict=True):
                for kind, edited in renders.items():
                    source = cases[j][0]
                    if name == "shuffled":  # another case's images, this case's instruction
                        edited = cases[j][2].get(kind)
                        if edited is None:
                            continue
                    c = critic.critique(source, edited, instruction)
                    calls += 1
                    valid += c.valid
                    stops = c.valid and c.overall is not None and c.overall >= target
                    said[kind][0] += bool(stops)
                    said[kind][1] += 1
            row[name] = {
                **{f"satisfied_{k}": v[0] / v[1] if v[1] else math.nan for k, v in said.items()},
                "renders": {k: v[1] for k, v in said.items()},
                "valid": valid / max(calls, 1),
            }
        out[f"{n}_edits"] = row
    return out


def _spread(records: Any, limit: int, per_seed: int = 4) -> list[dict[str, Any]]:
    """At most ``per_seed`` records of each seed, drawn at random (seeded), then the first
    ``limit``: a sample over many scenes and states rather than the first scene's all."""
    import itertools
    import random

    out: list[dict[str, Any]] = []
    for seed, group in itertools.groupby(records, key=lambda r: r["seed"]):
        chosen = list(group)
        random.Random(f"eval|{seed}").shuffle(chosen)
        out.extend(chosen[:per_seed])
        if len(out) >= limit:
            break
    return out[:limit]


def planner_states(
    seeds: Sequence[int],
    language: str,
    limit: int,
    *,
    clauses: bool = False,
    edits: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """The planner states the planner rows are measured on: ``planner_samples`` of ``seeds``
    spread over the scenes (``_spread``), at most ``limit``; ``clauses``: their reference
    answers carry the clause reasoning; ``edits``: the fewest and most edits of a case (None:
    ``PLANNER_EDITS``, what the planner trained on before the sixteenth session)."""
    from agent.microworld import formats

    n_edits = planner_states_edits(edits)
    return _spread(
        formats.planner_samples(seeds, language=language, clauses=clauses, n_edits=n_edits),
        limit,
    )


def planner_states_edits(edits: tuple[int, int] | None) -> tuple[int, int]:
    """The (fewest, most) edits ``planner_states`` draws for ``edits``."""
    from agent.train.vlm import PLANNER_EDITS, check_planner_edits

    return check_planner_edits(PLANNER_EDITS if edits is None else edits)


def state_images(record: dict[str, Any]) -> list[Any]:
    """A planner state's two images: the original, then the current one."""
    return [c["image"] for c in record["messages"][0]["content"] if c["type"] == "image"]


def makes_progress(instruction: str, record: dict[str, Any]) -> bool:
    """Whether ``instruction``, executed exactly on the state's scene, brings it closer to the
    goal (``judge_step``): how a planner's next or corrective step is judged."""
    from agent.microworld.reader import judge_step
    from agent.microworld.scene import Scene

    scene, goal = Scene.model_validate(record["scene"]), Scene.model_validate(record["goal"])
    return judge_step(instruction, scene, goal) == "progress"


def _planner(
    vlm: Any,
    seeds: Sequence[int],
    language: str,
    limit: int,
    *,
    adapter: str | None = None,
    edits: tuple[int, int] | None = None,
) -> dict[str, Any]:
    from agent.micro import PLANNER_NEW_TOKENS
    from tools.errors import PlannerOutputError
    from tools.vlm.planner import MiraPlanner

    planner = MiraPlanner(vlm, adapter=adapter, image_size=224, max_new_tokens=PLANNER_NEW_TOKENS)
    samples = planner_states(seeds, language, limit, edits=edits)
    images = [state_images(r) for r in samples]
    instructions = [r["instruction"] for r in samples]
    out: dict[str, Any] = {"samples": len(samples)}
    reference = [
        makes_progress(r["answer"].split(": ", 1)[1], r)
        for r in samples
        if r["answer"].startswith("NEXT_EDITING_INSTRUCTION")
    ]
    out["reference"] = sum(reference) / max(len(reference), 1)
    for name, order in (("true", list(range(len(samples)))), ("shuffled", shuffled(len(samples)))):
        counts = {"next": [0, 0], "corrective": [0, 0]}
        stops = {"tp": 0, "fp": 0, "fn": 0}
        valid = 0
        for i, (r, j) in enumerate(zip(samples, order, strict=True)):
            try:
                decision = planner.next_action(images[j][0], images[j][1], instructions[i])
            except PlannerOutputError:
                decision = None
            valid += decision is not None
            want_stop = not r["answer"].startswith("NEXT_EDITING_INSTRUCTION")
            said_stop = decision is not None and decision.stop
            stops["tp"] += want_stop and said_stop
            stops["fp"] += said_stop and not want_stop
            stops["fn"] += want_stop and not said_stop
            if want_stop:
                continue
            row = counts["corrective" if r["mistake"] else "next"]
            row[1] += 1
            if decision is not None and not decision.stop and decision.instruction:
                row[0] += makes_progress(decision.instruction, r)
        out[name] = {
            "next_progress": counts["next"][0] / max(counts["next"][1], 1),
            "corrective_progress": counts["corrective"][0] / max(counts["corrective"][1], 1),
            "stop_precision": stops["tp"] / max(stops["tp"] + stops["fp"], 1),
            "stop_recall": stops["tp"] / max(stops["tp"] + stops["fn"], 1),
            "valid": valid / max(len(samples), 1),
            "next_steps": counts["next"][1],
            "corrective_steps": counts["corrective"][1],
            "stops": stops["tp"] + stops["fn"],
        }
    return out


def _check(vlm: Any, seeds: Sequence[int], language: str, limit: int) -> dict[str, Any]:
    """The roles stage's "check" task (one clause, two images, "yes" or "no"), answered by the
    base model: the share of answers right, read as greedy decoding's first token (where "yes"
    and "no" differ)."""
    from agent.train.vlm import CHECK_ANSWERS, _pool, evaluate_lm

    first = [vlm.processor.tokenizer(a)["input_ids"][0] for a in CHECK_ANSWERS]
    if first[0] == first[1]:
        raise RuntimeError(f"the answers {CHECK_ANSWERS} begin with the same token")
    samples = _pool(vlm, ["check"], seeds, language, limit)
    with vlm.disable_adapter():
        vlm._set_state(None)  # the model is called directly, not through a generate path
        row = evaluate_lm(vlm, samples, batch=16, device=vlm.device)
    yes = sum(a == CHECK_ANSWERS[0] for _, a in samples)
    out: dict[str, Any] = {"samples": len(samples), "yes_share": yes / max(1, len(samples))}
    for name in ("true", "shuffled"):
        out[name] = {"accuracy": row[f"{name}_first_acc"]}
    return out


ROLES: dict[str, Callable[[Any, Sequence[int], str, int], dict[str, Any]]] = {
    "grounder": _grounder,
    "parser": _parser,
    "critic": _critic,
    "critic_stop": _critic_stop,
    "planner": _planner,
    "check": _check,
}


def evaluate_vlm(
    folder: str | Path,
    *,
    split: str = "test",
    seeds: int = 40,
    seed_offset: int = 0,
    limit: int = 200,
    roles: Sequence[str] = tuple(ROLES),
    languages: Sequence[str] = ("train", "heldout"),
    planner_lora: str | Path | None = None,
    critic_in_base: bool = False,
    grounder_in_base: bool = False,
    planner_edits: tuple[int, int] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """{role: {language: {"true": ..., "shuffled": ...}}} on ``seeds`` seeds of ``split`` after
    its first ``seed_offset`` (at most ``limit`` samples per role and language), with the
    folder's ``metrics.json`` probe table and the text-only baselines beside. ``planner_lora``:
    a planner adapter (``mira-train grpo``'s) switched on for the planner rows.
    ``critic_in_base``: the critic rows ask the base model (a roles stage run with
    ``role_shares`` naming the critic trains it there), not the ``editscore`` adapter; a folder
    with no such adapter (the shipped one) is always asked so, as the ``micro-critic`` backend
    asks it. The grounder rows go through the folder's ``grounder`` adapter when it has one, as
    ``micro-grounder`` does (``grounder_in_base``: the base model). ``planner_edits``: the
    fewest and most edits of the planner rows' cases (None: ``PLANNER_EDITS``). ``device``:
    where the model decodes (the tables in docs/ decode on CPU)."""
    import functools

    from agent.microworld.splits import seeds as split_seeds
    from agent.train.vlm import TEXT_ONLY, load_folder
    from tools.vlm.planner import MIRA_LORA_ADAPTER

    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"roles must be some of {sorted(ROLES)}, got {unknown!r}")
    vlm, _, metrics = load_folder(folder, device=device, grounder=True)
    if planner_lora is not None:
        vlm.load_adapter(MIRA_LORA_ADAPTER, planner_lora)
    vlm.model.eval()
    critic_in_base = critic_in_base or CRITIC_ADAPTER not in vlm.adapters
    grounder_adapter = None if grounder_in_base else GROUNDER_ADAPTER
    grounder_adapter = grounder_adapter if grounder_adapter in vlm.adapters else None
    chosen = list(split_seeds(split, seeds, offset=seed_offset))
    result: dict[str, Any] = {
        "split": split,
        "seeds": seeds,
        "seed_offset": seed_offset,
        "text_only_baselines": TEXT_ONLY,
        "probe_test": metrics.get("vision", {}).get("probe_test"),
        "planner_lora": None if planner_lora is None else str(planner_lora),
        "critic_in_base": critic_in_base,
        "grounder_adapter": grounder_adapter,
        "planner_edits": list(planner_states_edits(planner_edits)),
        "device": device,
    }
    for role in roles:
        result[role] = {}
        for language in languages:
            started = time.monotonic()
            fn = ROLES[role]
            if role == "planner":
                adapter = MIRA_LORA_ADAPTER if planner_lora is not None else None
                fn = functools.partial(_planner, adapter=adapter, edits=planner_edits)
            if role in ("critic", "critic_stop") and critic_in_base:
                fn = functools.partial(fn, adapter=None)
            if role == "grounder" and grounder_adapter is not None:
                fn = functools.partial(_grounder, adapter=grounder_adapter)
            result[role][language] = fn(vlm, chosen, language, limit)
            took = time.monotonic() - started
            log(f"{role} {language} ({took:.0f} s): {json.dumps(result[role][language])}")
    return result
