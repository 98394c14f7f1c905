"""MIRAGE as a tool and inside the agent loop (tiny FLUX.2 [klein], fake parser/grounder)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from agent import AgentConfig, create_edit_agent  # noqa: E402
from agent.testing import PixelChangeCritic, ScriptedPlanner, SideGrounder, make_test_image  # noqa: E402
from tools.contracts import Box  # noqa: E402
from tools.editors.tiny import TINY_CALL_KWARGS, tiny_pipeline  # noqa: E402
from tools.mirage.flux2 import MirageFlux2  # noqa: E402
from tools.mirage.parse import (  # noqa: E402
    EditPair,
    RegionParseError,
    StaticParser,
    VLMInstructionParser,
    parse_edit_pairs,
)
from tools.mirage.tool import RegionalEditor, RegionalEditTool  # noqa: E402

KLEIN = "FLUX.2-klein-4B"


def regional(parser, grounder=None, **kw) -> RegionalEditor:
    sampler = MirageFlux2(tiny_pipeline(KLEIN), text_encoder_out_layers=(1,))
    return RegionalEditor(
        sampler,
        parser=parser,
        grounder=grounder or SideGrounder(),
        num_inference_steps=3,
        guidance_scale=1.0,
        sampler_kwargs={"max_sequence_length": TINY_CALL_KWARGS[KLEIN]["max_sequence_length"]},
        **kw,
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '[{"ref": "the leftmost cup", "edit": "make it red"}]',
            [("the leftmost cup", "make it red")],
        ),
        (
            'Sure!\n```json\n[{"ref": "the dog", "edit": "add a hat"}, {"ref": "the car", "edit": "paint it blue"},]\n```',  # noqa: E501
            [("the dog", "add a hat"), ("the car", "paint it blue")],
        ),
        ("[{'ref': 'the left cup', 'edit': 'remove it'}", [("the left cup", "remove it")]),
        (
            '{"referring_expression": "the vase", "instruction": "make it gold"}',
            [("the vase", "make it gold")],
        ),
    ],
)
def test_parse_edit_pairs(text, expected):
    assert [(p.expression, p.instruction) for p in parse_edit_pairs(text)] == expected


@pytest.mark.parametrize(
    "text", ["", "I cannot do that.", "[]", '[{"ref": "", "edit": "x"}]', "[{bad json"]
)
def test_parse_edit_pairs_rejects(text):
    with pytest.raises(ValueError):
        parse_edit_pairs(text)


def test_vlm_parser_retries_then_raises_a_recoverable_error():
    answers = iter(["no idea", '[{"ref": "the left half", "edit": "make it red"}]'])
    parser = VLMInstructionParser(generate=lambda messages, attempt: next(answers), retries=1)
    assert (
        parser.parse(make_test_image(), "make the left half red")[0].expression == "the left half"
    )
    bad = VLMInstructionParser(generate=lambda m, a: "garbage", retries=2)
    with pytest.raises(RegionParseError, match="after 3 attempt"):
        bad.parse(make_test_image(), "make the left half red")


def test_regional_editor_keeps_the_outside_and_reports_regions():
    image = make_test_image(128, 96)
    editor = regional(StaticParser([("the left half", "make it red")]))
    out = editor.edit(image, "make the left half red", seed=1)
    assert out.image.size == image.size
    (region,) = out.info["regions"]
    assert region["expression"] == "the left half" and region["box"] == [0, 0, 64, 96]
    # Outside the region the latent is exactly the source's (tests/test_mirage.py); in pixels
    # the decoder's receptive field blurs the border, so compare far side against near side.
    sampler = editor.sampler
    recon = np.asarray(sampler.decode(sampler._encode_image(image)), dtype=np.int16)
    diff = np.abs(np.asarray(out.image, dtype=np.int16) - recon).mean(axis=(0, 2))  # per column
    assert diff[96:].mean() < 0.5 * diff[:64].mean()
    assert out.info["transformer_calls"] > 0


def test_ungroundable_target_is_a_recoverable_error():
    from agent import GroundingError

    editor = regional(StaticParser([("the dog", "make it red")]))
    with pytest.raises(GroundingError, match="the dog"):
        editor.edit(make_test_image(64, 64), "make the dog red")


def test_regional_edit_tool_with_explicit_regions(tmp_path):
    from agent import ArtifactStore

    store = ArtifactStore(tmp_path)
    tool = RegionalEditTool(editor=regional(StaticParser([])), store=store)
    src = store.put(make_test_image(64, 64))
    out = tool.invoke(
        {
            "image": src,
            "instruction": "make the box red",
            "regions": [{"instruction": "make it red", "box": [0, 0, 30, 30]}],
            "seed": 2,
        }
    )
    assert out["regions"][0]["snapped_box"] == [0, 0, 64, 64]  # grown to 4 cells on a 4x4 canvas
    assert store.contains(out["image"])
    # a recoverable failure is the tool's answer, for a chat model to read
    text = RegionalEditTool(editor=regional(StaticParser([("the dog", "x")])), store=store).invoke(
        {"image": src, "instruction": "make the dog red"}
    )
    assert "no region found for 'the dog'" in text


@pytest.mark.parametrize("strategy", ["mirage", "mira+mirage"])
def test_strategies_in_the_loop_record_regions(tmp_path, strategy):
    parser = StaticParser([EditPair(expression="the left half", instruction="make it red")])
    planner = ScriptedPlanner(["NEXT_EDITING_INSTRUCTION: make the left half red", "<stop>"])
    agent = create_edit_agent(
        AgentConfig(strategy=strategy, check_regression=False, min_step_score=1),
        planner=planner,
        editors=[regional(parser)],
        critic=PixelChangeCritic(),
        grounder=SideGrounder(),
        artifacts=tmp_path,
    )
    path = tmp_path / "in.png"
    make_test_image(64, 64).save(path)
    out = agent.invoke({"image": str(path), "instruction": "make the left half red"})
    edits = [s for s in out["steps"] if s["kind"] == "edit"]
    assert edits and edits[0]["info"]["regions"][0]["expression"] == "the left half"
    assert out["stop_reason"] == "planner_stop"
    # 'mirage' ignores the given planner: one step with the whole instruction
    assert (len(planner.calls) == 0) == (strategy == "mirage")


def test_strategy_needs_a_groundable_setup(tmp_path):
    from agent.testing import PaintEditor

    with pytest.raises(ValueError, match="grounder's VLM"):
        create_edit_agent(AgentConfig(preset="dry-run", strategy="mirage"), artifacts=tmp_path)
    with pytest.raises(ValueError, match="grounder's VLM"):
        create_edit_agent(
            AgentConfig(preset="dry-run", strategy="mira+mirage"),
            editors=[PaintEditor()],
            grounder=SideGrounder(),
            artifacts=tmp_path,
        )


def test_box_type_in_regions():
    assert Box(x1=0, y1=0, x2=1, y2=1).area == 1


def test_regional_editor_for_a_kontext_editor():
    from tools.editors.tiny import tiny_flux_kontext_editor
    from tools.mirage.flux_kontext import MirageKontext

    editor = RegionalEditor.for_editor(
        tiny_flux_kontext_editor(),
        parser=StaticParser([("the left half", "make it red")]),
        grounder=SideGrounder(),
    )
    assert isinstance(editor.sampler, MirageKontext)
    out = editor.edit(
        make_test_image(96, 64), "make the left half red", seed=0, num_inference_steps=2
    )
    assert out.image.size == (96, 64) and out.info["regions"][0]["box"] == [0, 0, 48, 64]


def test_regional_editor_for_a_qwen_edit_editor():
    from tools.editors.tiny import tiny_qwen_edit_plus_editor
    from tools.mirage.qwen_edit import MirageQwenEdit

    editor = RegionalEditor.for_editor(
        tiny_qwen_edit_plus_editor(),
        parser=StaticParser([("the left half", "make it red")]),
        grounder=SideGrounder(),
    )
    assert isinstance(editor.sampler, MirageQwenEdit)
    out = editor.edit(
        make_test_image(96, 64), "make the left half red", seed=0, num_inference_steps=2
    )
    assert out.image.size == (96, 64) and out.info["regions"][0]["box"] == [0, 0, 48, 64]


def test_mirage_support_is_a_declared_capability_not_a_class_name(tmp_path):
    """A family without a MIRAGE sampler is refused by what it declares; a class that only
    borrows a supported family's name gets no sampler."""
    from tools.editors.tiny import tiny_flux2_klein_editor, tiny_ip2p_editor

    ip2p = tiny_ip2p_editor()
    assert not ip2p.supports_mirage
    with pytest.raises(ValueError, match="has no MIRAGE sampler"):
        RegionalEditor.for_editor(ip2p)

    class VLMGrounder(SideGrounder):
        vlm = None  # what the strategy wiring asks of a grounder: a VLM to parse with

    with pytest.raises(ValueError, match="needs an editor whose family has a MIRAGE sampler"):
        create_edit_agent(
            AgentConfig(preset="dry-run", strategy="mira+mirage"),
            editors={"ip2p": ip2p},
            grounder=VLMGrounder(),
            artifacts=tmp_path,
        )

    class Flux2KleinPipeline:  # a look-alike: same class name, not the diffusers pipeline
        vae_scale_factor = 8

    with pytest.raises(TypeError, match="MirageFlux2 needs a Flux2KleinPipeline or Flux2Pipeline"):
        MirageFlux2(Flux2KleinPipeline())
    sampler, call = tiny_flux2_klein_editor().mirage_sampler()
    assert isinstance(sampler, MirageFlux2) and sampler.layers == (1,)
    assert call == {"max_sequence_length": TINY_CALL_KWARGS[KLEIN]["max_sequence_length"]}


def test_regional_edit_tool_answers_bad_arguments_with_an_error(tmp_path):
    from agent import ArtifactStore

    store = ArtifactStore(tmp_path)
    tool = RegionalEditTool(editor=regional(StaticParser([])), store=store)
    src = store.put(make_test_image(64, 64))
    unknown = {**src, "sha256": "0" * 64, "uri": src["uri"].replace(src["sha256"], "0" * 64)}
    cases = [
        ({"image": unknown, "instruction": "x"}, "image="),
        (
            {
                "image": src,
                "instruction": "x",
                "regions": [{"instruction": "y", "box": [9, 9, 1, 1]}],
            },
            "x1 < x2",
        ),
        ({"image": src}, "instruction"),
    ]
    for args, needle in cases:
        msg = tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": args})
        assert msg.status == "error" and needle in msg.content, msg
