"""The fast decode loop (tools/vlm/_decode.py) against transformers' generate on the tiny random
Qwen2.5-VL and Qwen3-VL: greedy tokens identical with images, left padding, text-only prompts,
EOS and min_new_tokens, repetition penalty; sampling shapes and seeds; QwenVL.generate wiring."""

from __future__ import annotations

import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tools.vlm._decode import clear_decode_state, fast_generate  # noqa: E402
from tools.vlm.tiny import tiny_qwen3vl, tiny_qwen25vl  # noqa: E402

NEW = 12
BUILDERS = {"qwen2.5": tiny_qwen25vl, "qwen3": tiny_qwen3vl}


def chat(*images, text):
    return [
        {
            "role": "user",
            "content": [
                *({"type": "image", "image": im} for im in images),
                {"type": "text", "text": text},
            ],
        }
    ]


@pytest.fixture(scope="module")
def prompts():
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    blue = Image.new("RGB", (40, 56), (30, 30, 200))
    return {
        "long": chat(red, text="describe this image in detail please"),  # 1 image, long text
        "two": chat(blue, red, text="hi"),  # 2 images of other sizes, short text
        "text": chat(text="no image in this prompt"),
    }


def encode(vlm, prompts):
    texts, images = [], []
    for p in prompts:
        t, ims = vlm.render(p)
        texts.append(t)
        images += ims
    return vlm.processor(text=texts, images=images or None, padding=True, return_tensors="pt")


def reference(vlm, inputs, **kw):
    with torch.inference_mode():
        out = vlm.model.generate(
            **inputs,
            max_new_tokens=NEW,
            do_sample=False,
            pad_token_id=vlm.processor.tokenizer.pad_token_id,
            **kw,
        )
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("names", [("long", "two"), ("text", "two")])
def test_greedy_matches_generate(family, names, prompts):
    vlm = BUILDERS[family](shared=False)
    inputs = encode(vlm, [prompts[n] for n in names])
    if len(names) == 2:
        assert (inputs["attention_mask"] == 0).any(), "the batch should need left padding"
    expected = reference(vlm, inputs)
    got = fast_generate(vlm.model, dict(inputs), max_new_tokens=NEW, compile=False)
    assert got.shape == expected.shape == (len(names), NEW)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_eos_padding_min_new_tokens_and_penalty(family, prompts):
    vlm = BUILDERS[family](shared=False)
    inputs = encode(vlm, [prompts["long"], prompts["two"]])
    free = reference(vlm, inputs)
    # EOS ids that the random model emits early in different rows: rows end at different steps
    eos = [int(free[0, 2]), int(free[1, 6])]
    for kw in (
        {"eos_token_id": eos},
        {"eos_token_id": eos[0], "min_new_tokens": 4},
        {"repetition_penalty": 1.3},
    ):
        expected = reference(vlm, inputs, **kw)
        got = fast_generate(
            vlm.model, dict(inputs), max_new_tokens=NEW, compile=False, check_every=2, **kw
        )
        assert torch.equal(got, expected), kw
        if "min_new_tokens" not in kw and "eos_token_id" in kw:
            assert expected.shape[1] < NEW  # EOS did shorten the output


def test_sampling_shapes_and_seeds(prompts):
    vlm = tiny_qwen25vl(shared=False)
    inputs = encode(vlm, [prompts["long"], prompts["two"]])

    def sample(seed, n=3):
        return fast_generate(
            vlm.model,
            dict(inputs),
            max_new_tokens=NEW,
            temperature=0.9,
            top_p=0.9,
            top_k=40,
            seed=seed,
            num_return_sequences=n,
            eos_token_id=[],
            compile=False,
        )

    a, b, c = sample(1), sample(1), sample(2)
    assert a.shape == (2 * 3, NEW)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(row) for row in a.tolist()}) > 1  # the N passes differ from each other
    # greedy with N copies: every copy is the greedy answer of its prompt
    greedy = fast_generate(
        vlm.model, dict(inputs), max_new_tokens=NEW, num_return_sequences=2, compile=False
    )
    expected = reference(vlm, inputs).repeat_interleave(2, dim=0)
    assert torch.equal(greedy, expected)


def test_checks_arguments(prompts):
    vlm = tiny_qwen25vl(shared=False)
    inputs = dict(encode(vlm, [prompts["long"]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        fast_generate(vlm.model, inputs, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        fast_generate(vlm.model, inputs, max_new_tokens=4, temperature=1.0, top_p=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        fast_generate(vlm.model, inputs, max_new_tokens=4, min_new_tokens=5)


def test_qwenvl_generate_fast_option(prompts):
    vlm = tiny_qwen3vl(shared=False)
    batch = [prompts["long"], prompts["two"]]
    slow = vlm.generate(batch, max_new_tokens=NEW, fast=False)
    fast = vlm.generate(batch, max_new_tokens=NEW, fast=True, compile=False)
    assert fast == slow
    answers = vlm.generate(
        batch,
        max_new_tokens=8,
        temperature=0.8,
        seed=3,
        num_return_sequences=2,
        fast=True,
        compile=False,
    )
    assert [len(a) for a in answers] == [2, 2]
    with pytest.raises(ValueError, match="fast=True"):
        vlm.generate(batch, max_new_tokens=4, fast=True, cache_implementation="static")


@pytest.mark.slow
def test_compiled_step_matches_eager(prompts):
    """torch.compile of the decode step on a CPU (inductor; tens of seconds)."""
    vlm = tiny_qwen25vl(shared=False)
    inputs = encode(vlm, [prompts["long"], prompts["two"]])
    eager = fast_generate(vlm.model, dict(inputs), max_new_tokens=NEW, compile=False)
    compiled = fast_generate(vlm.model, dict(inputs), max_new_tokens=NEW, compile=True)
    assert torch.equal(compiled, eager)
    assert torch.equal(compiled, reference(vlm, inputs))
    clear_decode_state(vlm.model)


def test_fast_path_honours_the_active_adapter(prompts):
    """The critic decodes with its LoRA on and the grounder with it off, on one shared model."""
    from tools.vlm.tiny import tiny_lora_config

    vlm = tiny_qwen3vl(shared=False)
    vlm.add_adapter("critic", tiny_lora_config())
    asked = [prompts["long"]]
    for adapter in ("critic", None, "critic"):  # switch back and forth on the same model
        fast = vlm.generate(asked, max_new_tokens=NEW, adapter=adapter, fast=True, compile=False)
        slow = vlm.generate(asked, max_new_tokens=NEW, adapter=adapter, fast=False)
        assert fast == slow, adapter
    on = vlm.generate(asked, max_new_tokens=NEW, adapter="critic", fast=True, compile=False)
    off = vlm.generate(asked, max_new_tokens=NEW, adapter=None, fast=True, compile=False)
    assert on != off  # the adapter changes the answer, so the comparison above means something
    clear_decode_state(vlm.model)
