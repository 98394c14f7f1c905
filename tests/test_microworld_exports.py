"""Training exports stream and carry what later training needs."""

from __future__ import annotations

import inspect
import json

import numpy as np

from agent.microworld import generate_cases, intermediate, parse, render
from agent.microworld.exports import (
    STOP,
    critic_tuples,
    edit_pairs,
    grounding_pairs,
    planner_tuples,
    write,
)


def _one_shot_cases():
    """A generator that may be iterated only once: exporters must not list it."""
    yield from generate_cases(6, seed=9, n_edits=3)


def test_exporters_are_lazy_generators():
    for exporter in (edit_pairs, planner_tuples, grounding_pairs, critic_tuples):
        stream = exporter(_one_shot_cases())
        assert inspect.isgenerator(stream)
        first = next(stream)  # works before the cases are exhausted
        assert first["id"].startswith("mw9-00000")


def test_edit_pairs_hold_source_instruction_target():
    case = next(generate_cases(1, seed=9))
    pairs = list(edit_pairs([case]))
    assert [p["instruction"] for p in pairs] == list(case.atomic)
    for i, p in enumerate(pairs):
        assert np.array_equal(np.asarray(p["target"]), np.asarray(intermediate(case, [i])))
        assert p["mask"].dtype == bool and p["mask"].any()


def test_planner_tuples_include_stop_and_corrective_samples():
    rows = list(planner_tuples(generate_cases(10, seed=9, n_edits=3)))
    plain = [r for r in rows if not r["corrective"]]
    corrective = [r for r in rows if r["corrective"]]
    assert len(plain) == 10 * 4 and sum(r["next"] == STOP for r in plain) == 10
    assert len(corrective) >= 10 and {r["mistake"] for r in corrective} == {"wrong", "bleed"}
    case = next(generate_cases(1, seed=9, n_edits=3))
    for r in corrective[:3]:
        assert r["next"] != STOP and r["next"] not in case.atomic
        assert parse(r["next"], case.scene)  # phrased so the oracle tools can read it
        assert not np.array_equal(np.asarray(r["current"]), np.asarray(r["original"]))


def test_grounding_and_critic_tuples():
    case = next(generate_cases(1, seed=9))
    pairs = list(grounding_pairs([case]))
    assert {p["expression"] for p in pairs} >= {f"the leftmost {case.scene.category}"}
    rows = list(critic_tuples([case]))
    by_mode = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r)
    assert all(r["success"] and r["scores"]["overall"] >= 9 for r in by_mode["correct"])
    assert not any(r["success"] for r in by_mode["noop"])
    assert any(not r["success"] for r in by_mode.get("wrong", []) + by_mode.get("bleed", []))


def test_write_streams_jsonl_and_pngs(tmp_path):
    n = write(planner_tuples(_one_shot_cases()), tmp_path, "planner")
    lines = (tmp_path / "planner.jsonl").read_text().splitlines()
    assert len(lines) == n > 0
    row = json.loads(lines[0])
    assert (tmp_path / row["original"]).is_file() and (tmp_path / row["current"]).is_file()
    from PIL import Image

    case = next(generate_cases(1, seed=9, n_edits=3))
    with Image.open(tmp_path / row["original"]) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(render(case.scene)))
