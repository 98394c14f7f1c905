"""The tool contracts (``tools/contracts.py``), run by every backend that builds offline.

One suite per protocol: editor, planner, critic, grounder. The backends come from the
registry (the test doubles and every ``*-tiny`` name, so a new family's tiny backend is
checked without touching this file) plus the ones built from objects (scripted doubles,
chat-model backends on a fake chat model). What a backend does beyond the contract is tested
in its own file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import agent  # noqa: F401  (registers the test doubles)
from agent.policies import WholeInstructionPlanner
from agent.testing import ScriptedCritic, ScriptedPlanner, make_test_image
from tools.contracts import Critique, EditOutput, Grounding, HistoryItem, PlannerDecision
from tools.errors import GroundingError, PlannerOutputError
from tools.registry import available, build

DOUBLES = {
    "planner": {"split"},
    "editor": {"paint"},
    "grounder": {"side"},
    "critic": {"pixel-change"},
}


def offline(kind: str) -> list[str]:
    """The registered backends of ``kind`` that need no weights: doubles and tiny models."""
    return [n for n in available(kind) if n in DOUBLES[kind] or n.endswith("-tiny")]


_BUILT: dict[tuple[str, str], object] = {}


def backend(kind: str, name: str):
    if (kind, name) not in _BUILT:
        if name.endswith("-tiny"):
            pytest.importorskip("torch")
        _BUILT[kind, name] = build(kind, name)
    return _BUILT[kind, name]


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models give the same pixels for the same seed on one thread, whatever the machine."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# -- editor -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", offline("editor"))
def test_editor_contract(name, single_thread):
    """``edit(image, instruction, *, seed, num_inference_steps, guidance_scale, progress)``
    returns an RGB image of the input's size (or an ``EditOutput`` holding one), reports
    ``progress(done, total)`` per step, repeats itself for a seed, and leaves the input alone."""
    editor = backend("editor", name)
    image = make_test_image(72, 56)  # not a multiple of 16: exercises any resize back
    before = image.tobytes()
    calls: list[tuple[int, int]] = []
    out = editor.edit(
        image,
        "make the left side red",
        seed=3,
        num_inference_steps=2,
        guidance_scale=None,
        progress=lambda i, n: calls.append((i, n)),
    )
    result = out.image if isinstance(out, EditOutput) else out
    assert result.mode == "RGB" and result.size == image.size
    assert calls == [(1, 2), (2, 2)]
    again = editor.edit(image, "make the left side red", seed=3, num_inference_steps=2)
    again = again.image if isinstance(again, EditOutput) else again
    assert np.array_equal(_pixels(result), _pixels(again)), "same seed, different pixels"
    assert image.tobytes() == before, "the input image was modified"


# -- planner ----------------------------------------------------------------------------------
def _chat_planner():
    from conftest import _recording_chat

    from tools.vlm.planner import ChatModelPlanner

    return ChatModelPlanner(
        _recording_chat(["NEXT_EDITING_INSTRUCTION: make the left red", "<stop>"]), image_size=48
    )


PLANNERS = {
    **{f"registry:{n}": (lambda n=n: backend("planner", n)) for n in offline("planner")},
    "scripted": lambda: ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the left red", "<stop>"]),
    "whole-instruction": WholeInstructionPlanner,
    "chat-model": _chat_planner,
}


@pytest.mark.parametrize("name", list(PLANNERS))
def test_planner_contract(name):
    """``next_action(original, current, instruction, history)`` returns a ``PlannerDecision``
    (raw text; an instruction, or a stop) or raises the recoverable ``PlannerOutputError``;
    it never invents an empty instruction."""
    planner = PLANNERS[name]()
    original, current = make_test_image(64, 48), make_test_image(64, 48, seed=1)
    histories = [[], [HistoryItem(instruction="make the left red", outcome="accepted")]]
    for history in histories:
        try:
            decision = planner.next_action(
                original, current, "make the left red and the right blue", history
            )
        except PlannerOutputError as exc:  # e.g. a random-weight model's garbage
            assert isinstance(exc.raw, str)
            continue
        assert isinstance(decision, PlannerDecision) and isinstance(decision.raw, str)
        if decision.stop:
            assert decision.instruction is None
        else:
            assert isinstance(decision.instruction, str) and decision.instruction.strip()


# -- critic -----------------------------------------------------------------------------------
def _chat_critic():
    from conftest import _recording_chat

    from tools.vlm.critic import ChatModelCritic

    answer = json.dumps({"reasoning": "ok", "score": [20, 15]})
    return ChatModelCritic(
        _recording_chat([answer, json.dumps({"reasoning": "ok", "score": [25, 10]})] * 2)
    )


CRITICS = {
    **{f"registry:{n}": (lambda n=n: backend("critic", n)) for n in offline("critic")},
    "scripted": lambda: ScriptedCritic([7.0, None]),
    "chat-model": _chat_critic,
}


@pytest.mark.parametrize("name", list(CRITICS))
def test_critic_contract(name):
    """``critique(source, edited, instruction, *, mask=None)`` returns a ``Critique``: when
    ``valid``, every score lies in 0..10 and Overall is set; when not, Overall is None (never a
    made-up score). ``summary()`` is JSON."""
    critic = CRITICS[name]()
    source, edited = make_test_image(64, 48), make_test_image(64, 48, seed=1)
    mask = np.zeros((48, 64), bool)
    mask[:, :32] = True
    for kw in ({}, {"mask": mask}):
        result = critic.critique(source, edited, "make the left side red", **kw)
        assert isinstance(result, Critique) and isinstance(result.reasoning, str)
        if result.valid:
            scores = [
                result.prompt_following,
                result.consistency,
                result.naturalness,
                result.artifacts,
            ]
            assert all(0 <= s <= 10 for s in scores) and 0 <= result.overall <= 10
        else:
            assert result.overall is None
        json.dumps(result.summary())


# -- grounder ---------------------------------------------------------------------------------
GROUNDERS = {f"registry:{n}": (lambda n=n: backend("grounder", n)) for n in offline("grounder")}


@pytest.mark.parametrize("name", list(GROUNDERS))
def test_grounder_contract(name):
    """``ground(image, expression)`` returns a ``Grounding`` of that expression whose boxes are
    pixel XYXY inside the image (x1 < x2, y1 < y2), or raises the recoverable ``GroundingError``."""
    grounder = GROUNDERS[name]()
    image = make_test_image(96, 64)
    for expression in ("the left half", "the thing that is not there"):
        try:
            found = grounder.ground(image, expression)
        except GroundingError as exc:
            assert str(exc)
            continue
        assert isinstance(found, Grounding) and found.expression == expression
        for box in found.boxes:
            assert 0 <= box.x1 < box.x2 <= image.width and 0 <= box.y1 < box.y2 <= image.height
