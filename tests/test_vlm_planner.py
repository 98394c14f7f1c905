"""MIRA planners: a tiny random Qwen2.5-VL end to end through the real processor and a locally
built tokenizer, recorded-style answers injected at the text level, and a fake chat model."""

from __future__ import annotations

import pytest
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("peft")

from agent.errors import PlannerOutputError  # noqa: E402
from agent.prompts import MIRA_PLANNER_TEMPLATE  # noqa: E402
from tools.contracts import HistoryItem, Planner  # noqa: E402
from tools.models import ModelNotFoundError  # noqa: E402
from tools.vlm.planner import ChatModelPlanner, MiraPlanner, mira_7b, parse_mira_output  # noqa: E402
from tools.vlm.tiny import save_tiny_lora, save_tiny_qwen_vl, tiny_qwen25vl  # noqa: E402

INSTRUCTION = "make the car red and add a hat to the dog"


@pytest.fixture(scope="module")
def vlm():
    return tiny_qwen25vl()


@pytest.fixture(scope="module")
def images():
    return Image.new("RGB", (96, 64), (200, 30, 30)), Image.new("RGB", (96, 64), (30, 30, 200))


class Recorded:
    """Runs the real model (so the whole pipeline executes; ``run=False`` skips it to keep the
    many parsing cases fast), then answers with recorded text."""

    def __init__(self, vlm, answers, run=True):
        self.vlm, self.answers, self.calls, self.run = vlm, list(answers), [], run

    @property
    def family(self):
        return self.vlm.family

    def generate(self, prompts, **kwargs):
        self.calls.append((prompts, kwargs))
        if self.run:
            real = self.vlm.generate(prompts, **{**kwargs, "max_new_tokens": 2})
            assert len(real) == len(prompts)
        return [[self.answers.pop(0)] for _ in prompts]


def test_random_weights_run_end_to_end_and_garbage_is_a_planner_error(vlm, images):
    planner = MiraPlanner(vlm, max_new_tokens=16, image_size=64)
    assert isinstance(planner, Planner)
    with pytest.raises(PlannerOutputError) as err:
        planner.next_action(*images, INSTRUCTION, [])
    assert err.value.raw  # the model's text is kept for the trace


def test_prompt_is_the_mira_template_with_both_images_in_place(vlm, images):
    planner = MiraPlanner(vlm, image_size=64)
    messages = planner.messages(*images, INSTRUCTION)
    content = messages[0]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    text = "<image>".join(c["text"] for c in content if c["type"] == "text")
    assert text == MIRA_PLANNER_TEMPLATE.replace("<instruction>", INSTRUCTION)
    assert content[1]["image"].size == (64, 43) and content[1]["image"].getpixel((0, 0)) == (
        200,
        30,
        30,
    )
    assert content[3]["image"].getpixel((0, 0)) == (30, 30, 200)
    rendered, imgs = vlm.render(messages)
    assert rendered.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert rendered.index("Original Image: <|vision_start|>") < rendered.index(
        "Latest Edited Image: <|vision"
    )
    assert rendered.endswith("<|im_start|>assistant\n") and len(imgs) == 2


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("NEXT_EDITING_INSTRUCTION: make the car red", "make the car red"),
        (
            "The car is still blue.\nNEXT_EDITING_INSTRUCTION: make the car red\nThis is the next step.",  # noqa: E501
            "make the car red",
        ),
        ("next_editing_instruction:   Add a hat to the dog  ", "Add a hat to the dog"),
        ('**NEXT_EDITING_INSTRUCTION:** "add a hat to the dog"', "add a hat to the dog"),
    ],
)
def test_recorded_answers_parse_through_the_pipeline(vlm, images, answer, expected):
    fake = Recorded(vlm, [answer], run=answer.startswith("NEXT"))
    decision = MiraPlanner(fake, image_size=64).next_action(
        *images, INSTRUCTION, [HistoryItem(instruction="x", outcome="accepted")]
    )
    assert decision.instruction == expected and not decision.stop
    assert decision.raw == answer
    _, kwargs = fake.calls[0]
    assert kwargs["temperature"] == 0.0 and kwargs["adapter"] is None


@pytest.mark.parametrize(
    "answer", ["<stop>", "<STOP>", "NEXT_EDITING_INSTRUCTION: <stop>", " stop "]
)
def test_stop_token(vlm, images, answer):
    decision = MiraPlanner(Recorded(vlm, [answer], run=False), image_size=64).next_action(
        *images, INSTRUCTION, []
    )
    assert decision.stop and decision.instruction is None


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "NEXT_EDITING_INSTRUCTION:",
        "NEXT_EDITING_INSTRUCTION: <short, clear command to be applied next>",
        "I think the image\nlooks good\nbut maybe not",
        "\ufffd5Y\ufffd\x1bo%",  # byte soup of a broken model: one bare line, still not an edit
        "12 34",
    ],
)
def test_unparseable_answers_are_typed_errors(vlm, images, answer):
    with pytest.raises(PlannerOutputError):
        MiraPlanner(Recorded(vlm, [answer], run=False), image_size=64).next_action(
            *images, INSTRUCTION, []
        )


def test_parse_mira_output_keeps_a_plain_bare_instruction():
    assert parse_mira_output("Turn the sky purple").instruction == "Turn the sky purple"


def test_from_pretrained_base_plus_lora_from_local_paths(tmp_path, images):
    base = save_tiny_qwen_vl(tiny_qwen25vl(shared=False), tmp_path / "base")
    lora = save_tiny_lora("qwen2.5", tmp_path / "lora")
    planner = MiraPlanner.from_pretrained(base, lora=lora, max_new_tokens=8, image_size=64)
    assert planner.adapter == "mira-planner"
    with pytest.raises(PlannerOutputError):  # random weights: garbage, but through every stage
        planner.next_action(*images, INSTRUCTION, [])
    assert (
        planner.vlm.adapters == ["mira-planner"] and planner.vlm.active_adapter() == "mira-planner"
    )
    # a fine-tuned checkpoint directory without a processor takes the base's processor
    ckpt = tmp_path / "ckpt"
    tiny_qwen25vl(shared=False).model.save_pretrained(ckpt)  # weights and config, no processor
    assert MiraPlanner.from_pretrained(base, checkpoint=str(ckpt)).vlm.processor is not None


def test_missing_weights_raise_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no fine-tuned weights"):
        mira_7b()
    with pytest.raises(ModelNotFoundError, match="not found"):
        mira_7b(checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError):
        MiraPlanner.from_pretrained(str(tmp_path / "no-base"))


# -- chat model --------------------------------------------------------------------------------
def test_chat_model_planner_sends_the_template_and_both_images(
    images, recording_chat, decode_block
):
    chat = recording_chat(["Sure.\nNEXT_EDITING_INSTRUCTION: make the car red", "<stop>", "???"])
    planner = ChatModelPlanner(chat, image_size=48)
    decision = planner.next_action(*images, INSTRUCTION, [])
    assert decision.instruction == "make the car red"
    (message,) = chat.seen[0]
    assert message.type == "human"
    kinds = [b["type"] for b in message.content]
    assert kinds == ["text", "image_url", "text", "image_url", "text"]
    first, second = decode_block(message.content[1]), decode_block(message.content[3])
    assert first.size == (48, 32) and first.getpixel((5, 5)) == (200, 30, 30)
    assert second.getpixel((5, 5)) == (30, 30, 200)
    text = "<image>".join(b["text"] for b in message.content if b["type"] == "text")
    assert text == MIRA_PLANNER_TEMPLATE.replace("<instruction>", INSTRUCTION)
    assert planner.next_action(*images, INSTRUCTION, []).stop
    with pytest.raises(PlannerOutputError):
        planner.next_action(*images, INSTRUCTION, [])
