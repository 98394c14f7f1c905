"""EditScore's prompt texts: interface constants the EditScore LoRA adapters were trained on.

Source: the ``editscore`` package, version 0.2 (Apache-2.0, github.com/VectorSpaceLab/EditScore),
``editscore/vie_prompts.py`` (the four texts below, copied verbatim; trailing spaces included),
and ``editscore/__init__.py`` (``EditScore.__init__``), which assembles them: the SC prompt is
the context, the two-image edit rule and the SC rule joined by newlines; the PQ prompt is the
context and the PQ rule; in the rules every "10" becomes the score range (25 for the released
adapters), then ``<instruction>`` is replaced by the editing instruction. Its Qwen2.5-VL chat
format (``editscore/mllm_tools/qwen25vl.py``, ``apply_chat_template``) is reproduced in
``qwen25_chat``. The texts' sha256 digests are checked in the tests. Do not edit them: a
fine-tuned scorer only works with the format it was trained on.
"""

from __future__ import annotations

__all__ = [
    "CONTEXT_NO_DELIMIT_REASONING_FIRST",
    "PROMPTS_0SHOT_TWO_IMAGE_EDIT_RULE",
    "PROMPTS_0SHOT_TIE_RULE_SC",
    "PROMPTS_0SHOT_RULE_PQ",
    "DEFAULT_SCORE_RANGE",
    "sc_prompt",
    "pq_prompt",
    "qwen25_chat",
]

#: The scale the released EditScore adapters were trained with (scores 0..25; / 2.5 -> 0..10).
DEFAULT_SCORE_RANGE = 25

# -- verbatim from editscore/vie_prompts.py (editscore 0.2) ------------------------------------
CONTEXT_NO_DELIMIT_REASONING_FIRST = """You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated image(s) based on given rules.
All the input images are AI-generated. All human in the images are AI-generated too. so you need not worry about the privacy confidentials.

IMPORTANT: You will have to give your output in this way (Keep your reasoning concise and short.):
{
"reasoning" : "...",
"score" : [...]
}
"""

PROMPTS_0SHOT_TWO_IMAGE_EDIT_RULE = """RULES:

Two images will be provided: The first being the original AI-generated image and the second being an edited version of the first.
The objective is to evaluate how successfully the editing instruction has been executed in the second image.

Note that sometimes the two images might look identical due to the failure of image edit.
"""

PROMPTS_0SHOT_TIE_RULE_SC = """
From scale 0 to 10: 
A score from 0 to 10 will be given based on the success of the editing. (0 indicates that the scene in the edited image does not follow the editing instruction at all. 10 indicates that the scene in the edited image follow the editing instruction text perfectly.)
A second score from 0 to 10 will rate the degree of overediting in the second image. (0 indicates that the scene in the edited image is completely different from the original. 10 indicates that the edited image can be recognized as a minimal edited yet effective version of original.)
Put the score in a list such that output score = [score1, score2], where 'score1' evaluates the editing success and 'score2' evaluates the degree of overediting.

Editing instruction: <instruction>
"""

PROMPTS_0SHOT_RULE_PQ = """RULES:

The image is an AI-generated image.
The objective is to evaluate how successfully the image has been generated.

From scale 0 to 10: 
A score from 0 to 10 will be given based on image naturalness. 
(
    0 indicates that the scene in the image does not look natural at all or give a unnatural feeling such as wrong sense of distance, or wrong shadow, or wrong lighting. 
    10 indicates that the image looks natural.
)
A second score from 0 to 10 will rate the image artifacts. 
(
    0 indicates that the image contains a large portion of distortion, or watermark, or scratches, or blurred faces, or unusual body parts, or subjects not harmonized. 
    10 indicates the image has no artifacts.
)
Put the score in a list such that output score = [naturalness, artifacts]
"""

# -- assembly, as editscore/__init__.py does it -------------------------------------------------


def sc_prompt(instruction: str, *, score_range: int = DEFAULT_SCORE_RANGE) -> str:
    """The semantic-consistency prompt (source + edited image) for ``instruction``: asks for
    ``score = [editing success, overediting]`` on 0..score_range."""
    template = "\n".join(
        [
            CONTEXT_NO_DELIMIT_REASONING_FIRST,
            PROMPTS_0SHOT_TWO_IMAGE_EDIT_RULE,
            PROMPTS_0SHOT_TIE_RULE_SC.replace("10", str(score_range)),
        ]
    )
    return template.replace("<instruction>", instruction)


def pq_prompt(*, score_range: int = DEFAULT_SCORE_RANGE) -> str:
    """The perceptual-quality prompt (edited image only): asks for
    ``score = [naturalness, artifacts]`` on 0..score_range."""
    return "\n".join(
        [CONTEXT_NO_DELIMIT_REASONING_FIRST, PROMPTS_0SHOT_RULE_PQ.replace("10", str(score_range))]
    )


def qwen25_chat(prompt: str, num_images: int) -> str:
    """EditScore's Qwen2.5-VL chat format (``mllm_tools/qwen25vl.py``): default system turn, then
    ``<imgK>: `` before each image's vision tokens, all images before the prompt text."""
    text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    text += "".join(
        f"<img{i}>: <|vision_start|><|image_pad|><|vision_end|>" for i in range(1, num_images + 1)
    )
    return text + f"{prompt}<|im_end|>\n<|im_start|>assistant\n"
