"""Qwen-VL grounder: box parsing on recorded-style answers, both coordinate conventions with
hand-computed conversions, tiny random models end to end, SAM2 refinement at a small size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

from agent.errors import GroundingError  # noqa: E402
from tools.contracts import Box, Grounder  # noqa: E402
from tools.models import ModelNotFoundError  # noqa: E402
from tools.vlm.grounder import (  # noqa: E402
    BoxParseError,
    QwenVLGrounder,
    parse_boxes,
    qwen3vl_8b,
    to_source_box,
)
from tools.vlm.tiny import tiny_qwen3vl, tiny_qwen25vl  # noqa: E402


@pytest.fixture(scope="module")
def vlm3():
    return tiny_qwen3vl()


@pytest.fixture(scope="module")
def vlm25():
    return tiny_qwen25vl()


@pytest.fixture(scope="module")
def image():
    img = Image.new("RGB", (200, 100), (240, 240, 240))
    img.paste((200, 20, 20), (50, 25, 100, 75))
    return img


class Recorded:
    """The real model runs (pipeline), then recorded answers come back, one per call."""

    def __init__(self, vlm, answers, run=True):
        self.vlm, self.answers, self.calls, self.run = vlm, list(answers), [], run
        self.family, self.image_frame = vlm.family, vlm.image_frame

    def generate(self, prompts, **kwargs):
        self.calls.append(kwargs)
        if self.run:
            self.vlm.generate(prompts, **{**kwargs, "max_new_tokens": 2})
        return [[self.answers.pop(0)]]


# -- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, boxes",
    [
        # well-formed, as Qwen-VL writes it
        (
            '```json\n[\n\t{"bbox_2d": [250, 250, 500, 750], "label": "red car"}\n]\n```',
            [(250, 250, 500, 750)],
        ),
        # extra prose around it, two instances
        (
            'Sure! Here are the cars:\n[{"bbox_2d": [1, 2, 3, 4], "label": "car"}, '
            '{"bbox_2d": [5, 6, 7, 8], "label": "car"}]\nLet me know if you need more.',
            [(1, 2, 3, 4), (5, 6, 7, 8)],
        ),
        # wrong case key, other key names, a single object
        ('{"BBOX_2D": [10, 20, 30, 40]}', [(10, 20, 30, 40)]),
        ('[{"bbox": [10.5, 20, "30", 40]}]', [(10.5, 20, 30, 40)]),
        # malformed JSON that can be repaired
        ("[{'bbox_2d': [10, 20, 30, 40], 'label': 'cat',}]", [(10, 20, 30, 40)]),
        ('[{bbox_2d: [10, 20, 30, 40], label: "cat"}]', [(10, 20, 30, 40)]),
        (
            '[{"bbox_2d": [10, 20, 30, 40], "label": "cat"}, {"bbox_2d": [50, 60, 7',
            [(10, 20, 30, 40)],
        ),
        ('```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "cat"}', [(10, 20, 30, 40)]),
        # no JSON at all, but a box in prose
        ("The cat is at [10, 20, 30, 40] in the image.", [(10, 20, 30, 40)]),
        # a readable empty answer
        ("```json\n[]\n```", []),
    ],
)
def test_parse_boxes(answer, boxes):
    assert parse_boxes(answer) == boxes


@pytest.mark.parametrize(
    "answer", ["", "   ", "I cannot find it.", "\ufffd5Y\x1b[3, 4]", "[1, 2, 3]"]
)
def test_unreadable_answers_raise(answer):
    with pytest.raises(BoxParseError):
        parse_boxes(answer)


# -- coordinates -------------------------------------------------------------------------------
def test_qwen3_boxes_are_normalised_to_1000():
    # 640x480 image: x = v / 1000 * 640, y = v / 1000 * 480
    box = to_source_box((100, 250, 500, 750), convention="qwen3", source_size=(640, 480))
    assert box == Box(x1=64, y1=120, x2=320, y2=360)
    # rounded outward: 33.3 -> 33, 66.6 -> 67
    assert to_source_box(
        (333, 333, 666, 666), convention="qwen3", source_size=(100, 100)
    ).as_tuple() == (33, 33, 67, 67)


def test_qwen25_boxes_are_pixels_of_the_resized_input():
    # source 1000x500 seen by the model as 448x224: x * 1000/448, y * 500/224
    box = to_source_box(
        (112, 56, 224, 112), convention="qwen2.5", source_size=(1000, 500), model_size=(448, 224)
    )
    assert box == Box(x1=250, y1=125, x2=500, y2=250)
    with pytest.raises(ValueError, match="model_size"):
        to_source_box((1, 2, 3, 4), convention="qwen2.5", source_size=(10, 10))


def test_out_of_range_and_swapped_boxes_are_sorted_and_clamped():
    # 200x100: x -50 -> -10 -> 0, 1100 -> 220 -> 200; y 900 -> 90, 1200 -> 120 -> 100
    assert to_source_box((-50, 900, 1100, 1200), convention="qwen3", source_size=(200, 100)) == Box(
        x1=0, y1=90, x2=200, y2=100
    )
    assert to_source_box((500, 750, 100, 250), convention="qwen3", source_size=(640, 480)) == Box(
        x1=64, y1=120, x2=320, y2=360
    )
    assert (
        to_source_box((1200, 1200, 1300, 1300), convention="qwen3", source_size=(200, 100)) is None
    )
    assert to_source_box((10, 10, 10, 50), convention="qwen3", source_size=(200, 100)) is None


# -- end to end --------------------------------------------------------------------------------
def test_random_weights_run_end_to_end_and_garbage_is_a_grounding_error(vlm3, image):
    grounder = QwenVLGrounder(vlm3, max_new_tokens=12)
    assert isinstance(grounder, Grounder) and grounder.convention == "qwen3"
    with pytest.raises(GroundingError) as err:
        grounder.ground(image, "the red square")
    assert "2 attempt" in str(err.value)  # one retry after an unreadable answer


def test_qwen3_recorded_answer_through_the_pipeline(vlm3, image):
    fake = Recorded(
        vlm3, ['```json\n[{"bbox_2d": [250, 250, 500, 750], "label": "red square"}]\n```']
    )
    result = QwenVLGrounder(fake).ground(image, "the red square")
    # 200x100: x 250/1000*200 = 50, 500 -> 100; y 250/1000*100 = 25, 750 -> 75
    assert result.boxes == [Box(x1=50, y1=25, x2=100, y2=75)]
    assert result.masks is None and "bbox_2d" in result.raw
    assert fake.calls[0]["adapter"] is None and fake.calls[0]["temperature"] == 0.0


def test_qwen25_recorded_answer_uses_the_processor_frame(vlm25, image):
    # tiny processor: factor 28, at most 112*112 pixels. 200x100 -> smart_resize: 112x196 is too
    # big, beta = sqrt(200*100/12544) = 1.2627; h = floor(100/1.2627/28)*28 = 56,
    # w = floor(200/1.2627/28)*28 = 140.
    assert vlm25.image_frame(image) == (140, 56)
    fake = Recorded(vlm25, ['[{"bbox_2d": [35, 14, 70, 42], "label": "red square"}]'])
    result = QwenVLGrounder(fake).ground(image, "the red square")
    # x * 200/140, y * 100/56: 35 -> 50, 70 -> 100, 14 -> 25, 42 -> 75
    assert result.boxes == [Box(x1=50, y1=25, x2=100, y2=75)]


def test_unreadable_answer_is_retried_with_sampling(vlm3, image):
    fake = Recorded(vlm3, ["I see a square.", '[{"bbox_2d": [0, 0, 1000, 1000]}]'], run=False)
    result = QwenVLGrounder(fake, retries=1).ground(image, "the picture")
    assert result.boxes == [Box(x1=0, y1=0, x2=200, y2=100)]
    assert [c["temperature"] for c in fake.calls] == [0.0, 0.7] and fake.calls[1]["seed"] == 1


def test_retries_exhausted_and_empty_answers_are_grounding_errors(vlm3, image):
    fake = Recorded(vlm3, ["no", "still no"], run=False)
    with pytest.raises(GroundingError, match="still no"):
        QwenVLGrounder(fake, retries=1).ground(image, "the dog")
    fake = Recorded(vlm3, ["[]"], run=False)
    with pytest.raises(GroundingError, match="no region found"):
        QwenVLGrounder(fake).ground(image, "the dog")
    assert len(fake.calls) == 1  # a readable empty list is an answer, not retried
    fake = Recorded(vlm3, ['[{"bbox_2d": [1100, 1100, 1200, 1200]}]'], run=False)
    with pytest.raises(GroundingError):  # every box outside the image
        QwenVLGrounder(fake).ground(image, "the dog")


def test_sam2_refinement_gives_one_hxw_bool_mask_per_box(vlm3, image):
    pytest.importorskip("sam2")
    from tools.vlm.sam2_refiner import Sam2Refiner
    from tools.vlm.tiny import tiny_sam2_predictor

    predictor = tiny_sam2_predictor(image_size=256)
    set_image_calls = []
    original = predictor.set_image

    def counting_set_image(img):
        set_image_calls.append(np.asarray(img).shape)
        return original(img)

    predictor.set_image = counting_set_image
    fake = Recorded(
        vlm3, ['[{"bbox_2d": [250, 250, 500, 750]}, {"bbox_2d": [0, 0, 400, 300]}]'], run=False
    )
    result = QwenVLGrounder(fake, refiner=Sam2Refiner(predictor)).ground(image, "squares")
    assert len(result.boxes) == 2 and len(result.masks) == 2
    for mask in result.masks:
        assert mask.shape == (100, 200) and mask.dtype == np.bool_
    assert set_image_calls == [(100, 200, 3)]  # the image is encoded once for all boxes


def test_missing_weights_raise_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="grounder"):
        qwen3vl_8b(model=str(tmp_path / "missing"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(ModelNotFoundError, match="SAM2 checkpoint"):
        qwen3vl_8b(model=str(model_dir), sam2_checkpoint=str(tmp_path / "sam2.pt"))
