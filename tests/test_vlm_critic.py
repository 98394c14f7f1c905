"""EditScore critics: verbatim prompts, parsing on recorded-style answers, the arithmetic against
hand-computed examples, tiny models end to end, a base shared with the grounder (adapter on for
the critic, off for grounding), and a fake chat model."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("peft")

from agent.errors import GroundingError  # noqa: E402
from tools.contracts import Critic, Critique  # noqa: E402
from tools.models import REGISTRY, ModelNotFoundError  # noqa: E402
from tools.vlm._qwen import RawPrompt  # noqa: E402
from tools.vlm.critic import (  # noqa: E402
    AveragedCritique,
    ChatModelCritic,
    EditScoreCritic,
    ScoreParseError,
    apply_mask,
    average_passes,
    editscore_pass,
    editscore_qwen3vl_8b,
    parse_editscore_output,
)
from tools.vlm.editscore_prompts import pq_prompt, qwen25_chat, sc_prompt  # noqa: E402
from tools.vlm.grounder import qwen3vl_8b  # noqa: E402
from tools.vlm.tiny import save_tiny_lora, save_tiny_qwen_vl, tiny_qwen3vl, tiny_qwen25vl  # noqa: E402

INSTRUCTION = "make the square blue"


@pytest.fixture(scope="module")
def images():
    source = Image.new("RGB", (64, 48), (240, 240, 240))
    source.paste((200, 20, 20), (16, 12, 40, 36))
    edited = source.copy()
    edited.paste((20, 20, 200), (16, 12, 40, 36))
    return source, edited


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Qwen3-VL saved as a local model directory, and an EditScore-style LoRA for it."""
    root = tmp_path_factory.mktemp("editscore")
    base = save_tiny_qwen_vl(tiny_qwen3vl(shared=False), root / "Qwen3-VL-tiny")
    lora = save_tiny_lora("qwen3", root / "EditScore-tiny")
    return base, lora


def answer(scores, reasoning="ok"):
    return '{\n"reasoning" : "%s",\n"score" : [%s]\n}' % (
        reasoning,
        ", ".join(str(s) for s in scores),
    )


# -- prompts -----------------------------------------------------------------------------------
def test_prompts_are_editscore_verbatim():
    # sha256 of editscore 0.2's assembled prompts (score_range 25, "<instruction>" left in place)
    assert hashlib.sha256(sc_prompt("<instruction>").encode()).hexdigest() == (
        "2fbb018b0e448b2d6066266556ad88019129b7842073fdae7e48c1ffd54abbf5"
    )
    assert hashlib.sha256(pq_prompt().encode()).hexdigest() == (
        "8249deba103d112dddd4c2e7fe1d5a1c40fe3143dc640a422a19aced0d260c78"
    )
    sc = sc_prompt(INSTRUCTION)
    assert sc.startswith("You are a professional digital artist.")
    assert "From scale 0 to 25: \n" in sc and sc.endswith(f"Editing instruction: {INSTRUCTION}\n")
    assert "output score = [naturalness, artifacts]" in pq_prompt()
    assert qwen25_chat("P", 2) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<img1>: <|vision_start|><|image_pad|><|vision_end|>"
        "<img2>: <|vision_start|><|image_pad|><|vision_end|>P<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# -- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, scores, reasoning",
    [
        (answer([20, 15], "The car is red."), (20, 15), "The car is red."),
        (
            'Here is my evaluation:\n```json\n{"reasoning": "fine", "score": [25, 22.5]}\n```\nDone.',  # noqa: E501
            (25, 22.5),
            "fine",
        ),
        ('{"Reasoning": "fine", "SCORE": [3, 4]}', (3, 4), "fine"),
        ("{'reasoning': 'single quotes', 'score': [10, 12],}", (10, 12), "single quotes"),
        (
            '{"reasoning": "the "red" car is fine", "score": [18, 19]}',
            (18, 19),
            'the "red" car is fine',
        ),
        ('{"reasoning": "cut short, "score": [7, 8]', (7, 8), ""),
        ("[20, 15]", (20, 15), ""),
        ('{"reasoning": "two\nlines", "score": ["20", "15"]}', (20, 15), "two\nlines"),
    ],
)
def test_parse_recorded_answers(text, scores, reasoning):
    parsed = parse_editscore_output(text)
    assert parsed.scores == scores
    assert parsed.reasoning == reasoning


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "I'm sorry, but I can't assist with that request.",
        answer([26, 10]),
        answer([-1, 10]),
        answer([20]),
        answer([20, 15, 10]),
        '{"reasoning": "no score"}',
        '{"reasoning": "x", "score": ["high", "low"]}',
        "\ufffd5Y\x1b",
        '{"score": [true, 3]}',
    ],
)
def test_unreadable_answers_raise(text):
    with pytest.raises(ScoreParseError):
        parse_editscore_output(text)


# -- arithmetic --------------------------------------------------------------------------------
def test_one_pass_arithmetic():
    c = editscore_pass([20, 15], [25, 10])
    # / 2.5: PF 8, Cons 6, naturalness 10, artifacts 4; SC = min = 6, PQ = min = 4
    assert (c.prompt_following, c.consistency, c.naturalness, c.artifacts) == (8, 6, 10, 4)
    assert c.semantic_consistency == 6 and c.perceptual_quality == 4
    assert c.overall == pytest.approx(math.sqrt(24))  # 4.898979...
    assert editscore_pass([5, 5], [5, 5], score_range=10).overall == pytest.approx(5)


def test_avg_at_n_is_the_mean_of_per_pass_overall():
    first = editscore_pass([20, 15], [25, 10])  # SC 6, PQ 4, Overall sqrt(24) = 4.898979
    second = editscore_pass(
        [25, 25], [22.5, 25]
    )  # PF 10, Cons 10, nat 9, art 10: SC 10, PQ 9, sqrt(90)
    avg = average_passes([first, second])
    assert isinstance(avg, AveragedCritique) and avg.valid and avg.requested_passes == 2
    assert (avg.prompt_following, avg.consistency, avg.naturalness, avg.artifacts) == (9, 8, 9.5, 7)
    assert avg.semantic_consistency == 8 and avg.perceptual_quality == 6.5
    assert avg.overall == pytest.approx((math.sqrt(24) + math.sqrt(90)) / 2)  # 7.192906
    assert avg.overall == pytest.approx(7.192906, abs=1e-6)
    # not sqrt(min(9, 8) * min(9.5, 7)) = sqrt(56) = 7.483
    assert avg.summary()["overall"] == pytest.approx(7.192906, abs=1e-6)
    assert avg.summary()["semantic_consistency"] == 8
    invalid = average_passes([Critique.invalid("x")])
    assert not invalid.valid and invalid.overall is None


def test_masked_images():
    img = Image.new("RGB", (4, 2), (9, 9, 9))
    mask = np.array([[True, False, False, False], [False, False, False, True]])
    out = np.asarray(apply_mask(img, mask))
    assert out[0, 0].tolist() == [9, 9, 9] and out[1, 3].tolist() == [9, 9, 9]
    assert out[0, 1].tolist() == [0, 0, 0] and out.sum() == 9 * 3 * 2
    with pytest.raises(ValueError, match="empty"):
        apply_mask(img, np.zeros((2, 4), bool))


# -- local critic ------------------------------------------------------------------------------
class Recorded:
    """Runs the real model once per call (pipeline), then returns scripted answers: ``script`` is
    a list of (sc_texts, pq_texts), one per generate call."""

    def __init__(self, vlm, script, run=True):
        self.vlm, self.script, self.calls, self.run = vlm, list(script), [], run
        self.family = vlm.family

    def generate(self, prompts, **kwargs):
        self.calls.append((prompts, kwargs))
        if self.run:
            self.vlm.generate(prompts, **{**kwargs, "max_new_tokens": 2})
        sc_texts, pq_texts = self.script.pop(0)
        n = kwargs["num_return_sequences"]
        assert len(sc_texts) == len(pq_texts) == n
        return [list(sc_texts), list(pq_texts)]


@pytest.fixture(scope="module")
def vlm3(saved):
    from tools.vlm._qwen import load_qwen_vl

    vlm = load_qwen_vl(saved[0])
    vlm.load_adapter("editscore", saved[1])
    return vlm


def test_random_weights_end_to_end_give_an_invalid_critique(vlm3, images):
    critic = EditScoreCritic(vlm3, max_new_tokens=12, retries=0)
    assert isinstance(critic, Critic)
    result = critic.critique(*images, INSTRUCTION)
    assert not result.valid and result.overall is None and result.prompt_following is None
    assert "could not be parsed" in result.reasoning
    assert vlm3.active_adapter() == "editscore"


def test_avg_at_n_recorded_answers_in_one_generate_call(vlm3, images):
    fake = Recorded(
        vlm3,
        [
            (
                [answer([20, 15], "a"), answer([25, 25], "b")],
                [answer([25, 10], "c"), answer([22.5, 25], "d")],
            )
        ],
    )
    result = EditScoreCritic(fake, num_passes=2).critique(*images, INSTRUCTION)
    assert result.overall == pytest.approx(7.192906, abs=1e-6)
    assert result.reasoning == "SC: a\nPQ: c"
    ((prompts, kwargs),) = fake.calls
    assert kwargs["num_return_sequences"] == 2 and kwargs["adapter"] == "editscore"
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["seed"]) == (
        0.7,
        0.9,
        20,
        42,
    )
    sc, pq = prompts  # qwen3: images first, then the verbatim text
    assert [c["type"] for c in sc[0]["content"]] == ["image", "image", "text"]
    assert sc[0]["content"][2]["text"] == sc_prompt(INSTRUCTION)
    assert [c["type"] for c in pq[0]["content"]] == ["image", "text"]
    assert pq[0]["content"][0]["image"].tobytes() == images[1].tobytes()


def test_unreadable_pass_is_retried_then_dropped(vlm3, images):
    fake = Recorded(
        vlm3,
        [
            ([answer([20, 15]), "garbage"], [answer([25, 10]), answer([25, 25])]),
            (["still garbage"], [answer([25, 25])]),
        ],
        run=False,
    )
    result = EditScoreCritic(fake, num_passes=2, retries=1).critique(*images, INSTRUCTION)
    assert result.valid and len(result.passes) == 1 and result.requested_passes == 2
    assert result.overall == pytest.approx(math.sqrt(24))
    assert [kw["num_return_sequences"] for _, kw in fake.calls] == [2, 1]
    assert fake.calls[1][1]["seed"] == 1042
    fake = Recorded(vlm3, [(["x"], [answer([1, 1])]), ([answer([1, 1])], ["y"])], run=False)
    result = EditScoreCritic(fake, retries=1).critique(*images, INSTRUCTION)
    assert not result.valid and result.overall is None  # never a made-up score


def test_masked_mode_masks_both_sc_images_and_not_the_pq_image(vlm3, images):
    mask = np.zeros((48, 64), bool)
    mask[12:36, 16:40] = True
    fake = Recorded(vlm3, [([answer([25, 25])], [answer([25, 25])])])
    result = EditScoreCritic(fake).critique(*images, INSTRUCTION, mask=mask)
    assert result.overall == pytest.approx(10)
    (sc, pq), _ = fake.calls[0]
    src, edt = (np.asarray(c["image"]) for c in sc[0]["content"][:2])
    assert src[0, 0].tolist() == [0, 0, 0] and src[20, 20].tolist() == [200, 20, 20]
    assert edt[0, 0].tolist() == [0, 0, 0] and edt[20, 20].tolist() == [20, 20, 200]
    assert np.asarray(pq[0]["content"][0]["image"])[0, 0].tolist() == [240, 240, 240]


def test_qwen25_uses_editscore_chat_format(images):
    vlm = tiny_qwen25vl()
    critic = EditScoreCritic(vlm, adapter=None, max_new_tokens=8, retries=0)
    sc, pq = critic.prompts(*images, INSTRUCTION)
    assert isinstance(sc, RawPrompt) and sc.text == qwen25_chat(sc_prompt(INSTRUCTION), 2)
    assert len(sc.images) == 2 and pq.text == qwen25_chat(pq_prompt(), 1) and len(pq.images) == 1
    assert not critic.critique(*images, INSTRUCTION).valid  # through the real processor


# -- shared base for grounder and critic ----------------------------------------------------
def test_grounder_and_critic_share_one_base_with_adapter_on_and_off(saved, images):
    import torch

    base, lora = saved
    grounder = qwen3vl_8b(model=base)
    critic = editscore_qwen3vl_8b(base=base, lora=lora)
    critic.max_new_tokens, critic._runner.retries = 8, 0
    grounder.max_new_tokens, grounder.retries = 8, 0
    assert not critic.critique(*images, INSTRUCTION).valid
    assert critic.vlm.active_adapter() == "editscore"
    with pytest.raises(GroundingError):
        grounder.ground(images[0], "the square")
    assert grounder.vlm is critic.vlm and grounder.vlm.active_adapter() is None
    assert sum(1 for key in REGISTRY.loads if key[0] == "qwen-vl" and key[1] == base) == 1

    vlm = critic.vlm  # the adapter really changes the weights used
    text, imgs = vlm.render(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "hi"}],
            }
        ]
    )
    inputs = vlm.processor(text=[text], images=imgs, return_tensors="pt")
    with torch.inference_mode():
        with vlm.adapter("editscore"):
            vlm._set_state("editscore")
            on = vlm.model(**inputs).logits
        with vlm.disable_adapter():
            vlm._set_state(None)
            off = vlm.model(**inputs).logits
    assert not torch.allclose(on, off)


def test_missing_weights_raise_model_not_found(tmp_path, saved):
    with pytest.raises(ModelNotFoundError, match="EditScore critic base"):
        editscore_qwen3vl_8b(base=str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="EditScore LoRA"):
        editscore_qwen3vl_8b(base=saved[0], lora=str(tmp_path / "no-lora"))


# -- chat model --------------------------------------------------------------------------------
def test_chat_model_critic_sends_editscore_prompts_with_images(
    images, recording_chat, decode_block
):
    chat = recording_chat([answer([20, 15], "sc"), answer([25, 10], "pq")])
    result = ChatModelCritic(chat).critique(*images, INSTRUCTION)
    assert result.valid and result.overall == pytest.approx(math.sqrt(24))
    assert result.reasoning == "SC: sc\nPQ: pq"
    (sc_msg,), (pq_msg,) = chat.seen
    assert [b["type"] for b in sc_msg.content] == ["image_url", "image_url", "text"]
    assert decode_block(sc_msg.content[0]).tobytes() == images[0].tobytes()
    assert decode_block(sc_msg.content[1]).tobytes() == images[1].tobytes()
    assert sc_msg.content[2]["text"] == sc_prompt(INSTRUCTION)
    assert [b["type"] for b in pq_msg.content] == ["image_url", "text"]
    assert decode_block(pq_msg.content[0]).tobytes() == images[1].tobytes()
    assert pq_msg.content[1]["text"] == pq_prompt()


def test_chat_model_critic_garbage_is_invalid(images, recording_chat):
    chat = recording_chat(["I cannot rate this.", answer([25, 25])])
    result = ChatModelCritic(chat, retries=0).critique(*images, INSTRUCTION)
    assert not result.valid and result.overall is None and "could not be parsed" in result.reasoning


# -- registry factories and import cost ----------------------------------------------------------
def test_tiny_factories_build_protocol_objects_sharing_one_model(images):
    from tools.contracts import Grounder, Planner
    from tools.vlm.tiny import tiny_editscore_critic, tiny_grounder, tiny_mira_planner

    planner, grounder, critic = tiny_mira_planner(), tiny_grounder(), tiny_editscore_critic()
    assert (
        isinstance(planner, Planner)
        and isinstance(grounder, Grounder)
        and isinstance(critic, Critic)
    )
    assert grounder.vlm is critic.vlm and "editscore" in critic.vlm.adapters
    critic._runner.retries = 0
    assert not critic.critique(*images, INSTRUCTION).valid


def test_import_tools_vlm_is_light():
    import json
    import subprocess
    import sys

    code = (
        "import sys, json, tools.vlm, tools.vlm.tiny; print(json.dumps(sorted(m for m in "
        "('torch', 'transformers', 'peft', 'sam2', 'langchain_core') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_second_adapter_loads_quietly_and_leaves_the_first_as_it_was(saved, tmp_path, caplog):
    """transformers reports the first adapter's weights MISSING ("newly initialized") when a
    second adapter loads on the same model; they are not touched, so ``QwenVL.load_adapter``
    drops that report (and only that one), and peft's warning that the model now holds several
    adapters."""
    import logging
    import warnings

    import torch

    from tools.vlm._qwen import _OtherAdaptersMissing, load_qwen_vl

    base, lora = saved
    second = save_tiny_lora("qwen3", tmp_path / "second", seed=2)
    vlm = load_qwen_vl(base, what="tiny")
    vlm.load_adapter("first", lora)
    first = {k: v.clone() for k, v in vlm.model.named_parameters() if ".first." in k}
    assert first
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vlm.load_adapter("second", second)
    assert "LOAD REPORT" not in caplog.text
    # nor peft's "multiple adapters ... know what you are doing": several are the design here
    peft_warnings = [str(w.message) for w in caught if "peft_config" in str(w.message)]
    assert not peft_warnings
    assert all(torch.equal(v, dict(vlm.model.named_parameters())[k]) for k, v in first.items())
    assert any(".second." in k for k, _ in vlm.model.named_parameters())
    # the filter drops a report of the other adapters' keys only
    header = "Key | Status | \n"

    def record(rows):
        text = "Model LOAD REPORT from: x\n" + header + "".join(f"{r}\n" for r in rows)
        return logging.LogRecord("t", logging.WARNING, "", 0, text, None, None)

    quiet = _OtherAdaptersMissing("second", ["first"])
    assert not quiet.filter(record(["a.lora_A.first.weight | MISSING | "]))
    assert quiet.filter(record(["a.lora_A.second.weight | MISSING | "]))
    assert quiet.filter(record(["a.lora_A.first.weight | MISSING | ", "b.w | UNEXPECTED | "]))
    assert _OtherAdaptersMissing("first", []).filter(record(["a.lora_A.x.weight | MISSING | "]))
