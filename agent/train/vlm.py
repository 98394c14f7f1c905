"""Training the micro VLM (issue 11): a curriculum of stages, each on its own wall-clock budget,
resumable from a saved folder.

1. ``vision``: the vision tower (patch embedding, blocks and merger) alone, with throwaway linear
   heads on its 64 merged output tokens. For every scene cell the token holding the cell's centre
   predicts the object's category, colour and pattern or "empty"; a linear head on
   ``|a - b|`` of two images' tokens predicts whether the cell changed between them (labels are
   exact, from the scene). Reports the linear-probe accuracy on validation seeds, with true
   images and with images shuffled across the batch.
2. ``language``: vision blocks frozen; merger and language model learn to describe every object
   of a scene (``DESCRIBE_PROMPT``) and to say which cells differ between two images and how
   (``COMPARE_PROMPT``: the comparison the critic needs), answer-only loss.
3. ``roles``: the base weights learn the grounder, MIRAGE parser and MIRA planner samples of
   ``agent.microworld.formats`` with their verbatim prompts, each prompt built by the project's
   own class (``QwenVLGrounder.messages``, ``MiraPlanner.messages``, ``VLMInstructionParser``'s
   chat), so training text is what those classes send; beside them "pending"
   (``PENDING_PROMPT``): which clauses of an instruction the current image does not show yet.
4. ``critic``: the base frozen; a peft LoRA adapter named ``editscore`` learns the EditScore
   samples in the prompt format ``EditScoreCritic.prompts`` builds for a Qwen2.5-VL (EditScore's
   hand-written chat string), as EditScore itself is a LoRA on a shared base.

Every evaluation reports held-out loss and answer-token accuracy with the TRUE images and with
the images SHUFFLED across the batch (a derangement), beside the text-only baselines of issue 11.

A plain PyTorch loop, not TRL's ``SFTTrainer``: stage 1 is no language-modelling task; every
forward must receive the multimodal RoPE positions computed by the project's decode path
(``tools.vlm._decode.rope_positions``), which ``SFTTrainer``'s collator and the model's own
fallback do not guarantee; the critic's prompts are raw chat strings (``RawPrompt``) with several
images; and the GPU machine then needs no trl wheel. peft (already a project dependency) makes
the critic adapter.

The GPU calls that ran these stages, and what they reached: docs/micro_vlm.md.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.micro import GROUNDER_ADAPTER  # a folder's grounder LoRA (micro-grounder, eval-vlm)
from agent.microworld.formats import CELL_LISTS, CLAUSES, VERDICT
from agent.train.vlm_model import (
    GPU_MODEL,
    IMAGE_SIZE,
    MANIFEST,
    MERGE,
    PATCH,
    SMOKE_MODEL,
    MicroVLMConfig,
    build_model,
    build_processor,
    build_tokenizer,
    corpus,
    save_micro_vlm,
)

__all__ = [
    "STAGES",
    "VLMSettings",
    "SMOKE_SETTINGS",
    "GPU_SETTINGS",
    "COMPARE_PROMPT",
    "DESCRIBE_PROMPT",
    "PENDING_PROMPT",
    "CHECK_PROMPT",
    "CRITIC_ADAPTER",
    "cell_labels",
    "cell_tokens",
    "encode",
    "shuffled",
    "train_vlm",
    "load_folder",
]

STAGES = ("vision", "language", "roles", "critic")
CRITIC_ADAPTER = "editscore"
DESCRIBE_PROMPT = "Describe every object: cell, colour, pattern, shape."
COMPARE_PROMPT = "Which cells differ between the first and the second image, and how?"
NO_CHANGE = "no change"
# the perception the planner lacks (docs/micro_vlm.md: it gave the same clause before any edit
# and after every edit): which parts of the instruction the current image does not show yet
PENDING_PROMPT = (
    "The first image is the original, the second the current one. Which parts of this "
    "instruction does the current image not show yet, in order? Instruction: {instruction}"
)
NOTHING_PENDING = "nothing"
# perception tasks asked at the distance the roles ask them (``_far``): {role: the task}
FAR = {"describe_far": "describe", "compare_far": "compare"}
# the same perception, one clause at a time with a one-word answer, so that every answer token
# is the decision (a pending answer is mostly clause text the prompt already holds)
CHECK_PROMPT = (
    "The first image is the original, the second the current one. Does the current image show "
    "this edit? Edit: {clause}"
)
CHECK_ANSWERS = ("yes", "no")
# the spans of an answer that only the images get right: the critic's "Cells to change: ..."
# (grounding in the source), "Changed cells: ..." (comparing the two) and the verdict that
# follows from them (a trained model named both lists right yet rarely the verdict they imply,
# docs/micro_vlm.md, sixth session). ``--focus-weight`` multiplies their tokens' share of the
# training loss (a few tokens of a ~45-token answer, else outweighed by text the prompt gives away).
# A reasoning planner's answer after its lists (``formats.plan_reason``) is the same kind of
# verdict: the first clause whose cells did not change (trained at weight 1, the eighth
# session's planner named the lists right yet often repeated a clause they show done); a bare
# planner answer, with no list before it, is not weighed. A reasoned planner answer is then
# weighed on nearly every token, so there the weight scales the planner's share of the loss
# as a whole (``role_shares`` sets that share too); so is a clause planner's (``--planner-clauses``,
# ``formats.plan_clauses``: its clause list, no clause holding a full stop, then the answer)
FOCUS = re.compile(
    rf"(?:{'|'.join((*CELL_LISTS, CLAUSES))}): [^.]*\.|{VERDICT}"
    r"|(?<=\.) (?:NEXT_EDITING_INSTRUCTION: [^\n]*|<stop>)"
)
# ``--focus-boxes``: the grounder's boxes as a focus span too. Its answer is mostly the label,
# copied from the prompt; the first coordinates are where it must look (which cell)
FOCUS_BOXES = re.compile(r'"bbox_2d": \[[^\]]*\]')
# edits per instruction of the critic's training cases: up to 5, as mira-bench's hardest
# cases (trained on up to 4, the seventh session's critic scored every 5-edit result 10, one
# edit missing or not: docs/loop.md). The eval's cases keep formats' default, (2, 4).
CRITIC_EDITS = (2, 5)
#: the planner samples' edit counts (fewest, most) unless a run names others
#: (``VLMSettings.planner_edits``), and the most a run may name (``draw_case`` draws up to 5)
PLANNER_EDITS = (1, 4)
MAX_PLANNER_EDITS = 5
#: Text-only baselines measured in issue 11's feasibility run (decoded role metrics).
TEXT_ONLY = {"grounder_iou50": 0.21, "critic_always_reject": 0.73, "planner_copy_first": 0.57}


@dataclass(frozen=True)
class VLMSettings:
    """One run: model sizes, seconds per stage, batch, learning rates, data pool sizes."""

    model: MicroVLMConfig = GPU_MODEL
    seconds: dict[str, float] = field(
        default_factory=lambda: {"vision": 60.0, "language": 150.0, "roles": 240.0, "critic": 90.0}
    )
    stages: tuple[str, ...] = STAGES
    batch: int = 64
    lr_vision: float = 1e-3
    lr: float = 1e-3
    lr_lora: float = 1e-3
    lora_r: int = 16
    train_seeds: int = 30000
    probe_seeds: int = 6000
    val_seeds: int = 64
    pool_samples: int = 36000
    eval_samples: int = 256
    seed_offset: int = 0
    device: str = "cuda"
    # float32 (TF32 matmuls) on the GPU: the first H200 run under bfloat16 autocast never
    # started to read the scene (probe loss 6.8 -> 6.05 in 929 steps, objects 0.2%), the same
    # stage in float32 read every cell in 150 s; a 60-step check later learned alike in both,
    # so the cause is not pinned down, and float32 costs little at this size
    dtype: str = "float32"
    log_every: int = 50
    workers: int = 14
    # a role's share of a stage's training pool against the others' (default 1 each), e.g.
    # {"planner": 2.0}: twice as many planner samples as grounder or parser samples; a role
    # of a later stage named here joins an earlier one where INTO_BASE allows it (the critic
    # and its whole-instruction "progress" samples in the roles stage)
    role_shares: dict[str, float] = field(default_factory=dict)
    # how a scene's planner samples are drawn for training (PLANNER_DRAWS): "balanced" gives
    # each answer class (which clause is the first pending one, <stop>, a correction) the same
    # chance; "random" draws among all of them, where half the clean states have the first
    # clause pending (copying it is right without looking) and one in 2^n is a stop
    planner_draw: str = "balanced"
    # planner answers reason first, the critic's two cell lists in the planner's terms
    # (``formats.plan_reason``): the cells each clause changes, then those that changed
    planner_reasoning: bool = False
    # planner answers reason with each clause (``formats.plan_clauses``): the changed cells, then
    # every clause with its cells and "done" or "to do" (implies ``planner_reasoning``)
    planner_clauses: bool = False
    # how many edits the planner samples' instructions have (fewest, most): the loop tables
    # measure 3- and 5-edit cases, and until the sixteenth session every planner call trained
    # on 1-4 (``PLANNER_EDITS``), so a 5-edit instruction was one it had never seen
    planner_edits: tuple[int, int] = PLANNER_EDITS
    # the training loss weight of the tokens of an answer's ``FOCUS`` span (1: plain mean)
    focus_weight: float = 1.0
    # the grounder's boxes weigh ``focus_weight`` too (``FOCUS_BOXES``)
    focus_boxes: bool = False
    # a language-model stage draws this many batches at a time and groups them by length
    # (``_loader``), 1: every batch drawn at random; mixed roles waste about 38% of a random
    # batch's tokens on padding (a critic prompt is ~4x a grounder prompt)
    length_buckets: int = 1
    # wall-clock seconds for the whole run (pools, stages, evaluations, saves), None: no limit;
    # a stage is cut short to leave ``FINISH_SECONDS`` for its evaluation and save
    budget: float | None = None


GPU_SETTINGS = VLMSettings()
SMOKE_SETTINGS = VLMSettings(
    model=SMOKE_MODEL,
    seconds={"vision": 2.0, "language": 2.0, "roles": 2.0, "critic": 2.0},
    batch=2,
    lora_r=2,
    train_seeds=4,
    probe_seeds=4,
    val_seeds=1,
    pool_samples=64,
    eval_samples=2,
    device="cpu",
    dtype="float32",
    log_every=1,
    workers=0,
)


# -- labels of stage 1 --------------------------------------------------------------------------
def cell_tokens() -> list[int]:
    """Index of the merged token holding each scene cell's centre (21 cells, row-major)."""
    from agent.microworld.scene import COLS, ROWS, cell_box

    side = IMAGE_SIZE // (PATCH * MERGE)  # 8 tokens per side
    token = PATCH * MERGE
    out = []
    for row in range(ROWS):
        for col in range(COLS):
            x1, y1, x2, y2 = cell_box(IMAGE_SIZE, row, col)
            out.append(((y1 + y2) // 2 // token) * side + (x1 + x2) // 2 // token)
    if len(set(out)) != len(out):
        raise AssertionError("two cells share a merged token")
    return out


def _vocab() -> dict[str, list[str]]:
    from agent.microworld.scene import CATEGORIES, PALETTE, PATTERNS

    return {
        "category": ["empty", *CATEGORIES],
        "colour": ["empty", *PALETTE],
        "pattern": ["empty", *PATTERNS],
    }


def cell_labels(scene: Any) -> dict[str, list[int]]:
    """Per cell (row-major), the index of the object's category / colour / pattern in
    ``["empty", ...]``; 0 for an empty cell."""
    from agent.microworld.scene import COLS, ROWS

    vocab = _vocab()
    out: dict[str, list[int]] = {k: [] for k in vocab}
    for row in range(ROWS):
        for col in range(COLS):
            obj = scene.at(row, col)
            for key, names in vocab.items():
                out[key].append(0 if obj is None else names.index(getattr(obj, key)))
    return out


def _changed(a: Any, b: Any) -> list[int]:
    from agent.microworld.scene import COLS, ROWS

    def sig(scene: Any, r: int, c: int) -> Any:
        o = scene.at(r, c)
        return None if o is None else (o.category, o.colour, o.pattern)

    return [int(sig(a, r, c) != sig(b, r, c)) for r in range(ROWS) for c in range(COLS)]


def _probe_pairs(seeds: Sequence[int]) -> Iterator[tuple[Any, Any]]:
    """(scene, scene after the case's first edit or first two edits) per seed."""
    from agent.microworld.edits import apply_edit, apply_edits
    from agent.microworld.truth import draw_case

    for seed in seeds:
        scene, edits, _, _, _ = draw_case(seed, n_edits=(1, 3), size=IMAGE_SIZE)
        after = apply_edit(scene, edits[0]) if seed % 2 else apply_edits(scene, edits[:2])
        yield scene, after


def shuffled(n: int, rng: random.Random | None = None) -> list[int]:
    """A derangement of ``range(n)`` (no index stays; identity for n < 2): which image each
    sample sees in the SHUFFLED control."""
    if n < 2:
        return list(range(n))
    rng = rng or random.Random(0)
    k = rng.randrange(1, n)
    return [(i + k) % n for i in range(n)]


# -- encoding role samples ----------------------------------------------------------------------
def _describe(scene: Any) -> str:
    return "; ".join(
        f"{o.id} {o.colour} {o.pattern} {o.category}"
        for o in sorted(scene.objects, key=lambda o: (o.row, o.col))
    )


def _compare(before: Any, after: Any) -> str:
    """``r1c2 red solid circle -> blue solid circle; r0c3 empty -> ...`` over the cells that
    differ, row-major; ``NO_CHANGE`` when none does."""
    from agent.microworld.scene import COLS, ROWS

    def look(scene: Any, r: int, c: int) -> str:
        o = scene.at(r, c)
        return "empty" if o is None else f"{o.colour} {o.pattern} {o.category}"

    parts = [
        f"r{r}c{c} {look(before, r, c)} -> {look(after, r, c)}"
        for r in range(ROWS)
        for c in range(COLS)
        if look(before, r, c) != look(after, r, c)
    ]
    return "; ".join(parts) or NO_CHANGE


def _role_samples(
    vlm: Any,
    role: str,
    seeds: Sequence[int],
    language: str,
    *,
    reasoning: bool | str = False,
    planner_edits: tuple[int, int] = PLANNER_EDITS,
) -> Iterator[Any]:
    """(prompt, answer) for ``role``, the prompt built by the project's own class;
    ``reasoning``: planner answers carry ``formats.plan_reason`` before MIRA's answer
    ("clauses": ``formats.plan_clauses``); ``planner_edits``: the fewest and most edits of a
    planner sample's instruction."""
    from agent.microworld import formats
    from agent.microworld.render import render
    from agent.microworld.truth import draw_case
    from tools.mirage.parse import PARSE_PROMPT
    from tools.vlm.critic import EditScoreCritic
    from tools.vlm.grounder import QwenVLGrounder

    lang: Any = language
    if role == "compare":
        # the skill a critic needs: what changed between two images (edits, or none)
        for seed in seeds:
            before, after = next(_probe_pairs([seed]))
            if seed % 5 == 0:
                after = before
            yield _user([render(before), render(after)], COMPARE_PROMPT), _compare(before, after)
    elif role == "pending":
        # both images and the instruction, answered with the clauses not done yet (in the
        # instruction's order) or NOTHING_PENDING: a random subset of the edits done, so about
        # a third of the scenes show every edit (the planner's stop states)
        from agent.microworld.edits import apply_edits

        for seed in seeds:
            scene, edits, parts, instruction, _ = draw_case(
                seed, n_edits=(1, 4), size=IMAGE_SIZE, language=lang
            )
            rng = random.Random(f"pending|{seed}|{language}")
            done = set(rng.sample(range(len(edits)), rng.randint(0, len(edits))))
            state = apply_edits(scene, [e for i, e in enumerate(edits) if i in done])
            text = PENDING_PROMPT.format(instruction=instruction)
            todo = [parts[i].text for i in range(len(edits)) if i not in done]
            yield _user([render(scene), render(state)], text), " | ".join(todo) or NOTHING_PENDING
    elif role == "check":
        # both images and one clause: "yes" when the second image shows that clause's edit,
        # "no" when it does not (not made, or made on a wrong instance or half-way), half and
        # half; the case's other edits are made at random. The two images always differ (a
        # "no" with no other edit made shows a mistake), so "no" is not "nothing changed"
        from agent.microworld.edits import apply_edits
        from agent.microworld.formats import mistaken

        for seed in seeds:
            scene, edits, parts, _, _ = draw_case(
                seed, n_edits=(1, 4), size=IMAGE_SIZE, language=lang
            )
            rng = random.Random(f"check|{seed}|{language}")
            yes = rng.random() < 0.5
            ask = rng.randrange(len(edits))
            others = [i for i in range(len(edits)) if i != ask]
            done = set(rng.sample(others, rng.randint(0, len(others)))) | ({ask} if yes else set())
            state = apply_edits(scene, [e for i, e in enumerate(edits) if i in done])
            image = render(state)
            if not yes and (not done or rng.random() < 0.4):
                mode = rng.choice(("wrong", "partial"))
                bad = mistaken(scene, state, edits[ask], mode, rng)
                if bad is None:  # no other instance to get wrong: half-way always works
                    bad = mistaken(scene, state, edits[ask], "partial", rng)
                image = image if bad is None else bad[0]
            text = CHECK_PROMPT.format(clause=parts[ask].text)
            yield _user([render(scene), image], text), CHECK_ANSWERS[0] if yes else CHECK_ANSWERS[1]
    elif role in FAR:
        # describe / compare with the images where the role templates put them and a role
        # prompt's text between them and the question (``_far``)
        near = _role_samples(vlm, FAR[role], seeds, language)
        for seed, (chat, answer) in zip(seeds, near, strict=True):
            yield _far(chat, seed, language), answer
    elif role == "describe":
        for seed in seeds:
            scene = draw_case(seed, n_edits=1, size=IMAGE_SIZE)[0]
            yield _user([render(scene)], DESCRIBE_PROMPT), _describe(scene)
    elif role == "grounder":
        grounder = QwenVLGrounder(vlm)
        for r in formats.grounder_samples(seeds, language=lang):
            image = r["messages"][0]["content"][0]["image"]
            # Qwen2.5-VL's convention: pixels of the processor-resized image, here 224 = source
            boxes = [] if r["box"] is None else [{"bbox_2d": r["box"], "label": r["expression"]}]
            yield grounder.messages(image, r["expression"]), json.dumps(boxes)
    elif role == "parser":
        for r in formats.parse_samples(seeds, language=lang):
            text = r["messages"][0]["content"][1]["text"]
            if not text.startswith(PARSE_PROMPT.split("{")[0][:40]):
                raise AssertionError("parse sample does not carry PARSE_PROMPT")
            yield r["messages"][:1], r["answer"]
    elif role == "planner":
        # planner_samples' user turn is already ``planner_content`` (MiraPlanner's own builder)
        for r in _planner_records(seeds, lang, reasoning, planner_edits):
            yield r["messages"][:1], _said(r)
    elif role == "critic":
        critic = EditScoreCritic(vlm)
        for r in formats.critic_samples(seeds, language=lang, n_edits=CRITIC_EDITS):
            sc, pq = _critic_prompts(critic, r)
            yield sc, r["sc"][1]["content"][0]["text"]
            yield pq, r["pq"][1]["content"][0]["text"]
    elif role in ("progress", "progress_wrong"):
        # the critic's SC answer on the whole instruction with none, some or every edit done
        # (the score best-of-N ranks candidates by, and the loop's stop_when_satisfied reads):
        # a few of each seed's critic samples otherwise; "progress_wrong": every edit made but
        # one, made on another object (the result a critic that counts changed cells scores 10)
        critic = EditScoreCritic(vlm)
        wrong = role == "progress_wrong"
        for r in formats.critic_samples(
            seeds,
            language=lang,
            n_edits=CRITIC_EDITS,
            progress_only=not wrong,
            wrong_progress=wrong,
        ):
            sc, _ = _critic_prompts(critic, r)
            yield sc, r["sc"][1]["content"][0]["text"]
    else:
        raise ValueError(f"unknown role {role!r}")


def _planner_records(
    seeds: Sequence[int],
    language: str,
    reasoning: bool | str,
    planner_edits: tuple[int, int] = PLANNER_EDITS,
) -> Iterator[dict[str, Any]]:
    """``formats.planner_samples`` in the answer format ``reasoning`` names: False (bare), True
    (``plan_reason``) or "clauses" (``plan_clauses``), of cases with ``planner_edits`` (fewest,
    most) edits."""
    from agent.microworld import formats

    return formats.planner_samples(
        seeds,
        language=language,  # type: ignore[arg-type]
        n_edits=check_planner_edits(planner_edits),
        reasoning=bool(reasoning),
        clauses=reasoning == "clauses",
    )


def check_planner_edits(planner_edits: Any) -> tuple[int, int]:
    """``planner_edits`` as a (fewest, most) pair of edit counts, ``ValueError`` naming it
    unless 1 <= fewest <= most <= ``MAX_PLANNER_EDITS``."""
    try:
        low, high = (int(x) for x in planner_edits)
    except (TypeError, ValueError):
        raise ValueError(
            f"planner_edits must be a pair (fewest, most), got {planner_edits!r}"
        ) from None
    if not 1 <= low <= high <= MAX_PLANNER_EDITS:
        raise ValueError(
            f"planner_edits must satisfy 1 <= fewest <= most <= {MAX_PLANNER_EDITS}, "
            f"got {planner_edits!r}"
        )
    return low, high


def _critic_prompts(critic: Any, record: dict[str, Any]) -> tuple[Any, Any]:
    """The SC and PQ prompts ``EditScoreCritic.prompts`` builds for a ``critic_samples`` record
    (its source, edited image and instruction)."""
    images = [c["image"] for c in record["sc"][0]["content"] if c["type"] == "image"]
    return critic.prompts(images[0], images[1], _sc_instruction(record))


def _said(record: dict[str, Any]) -> str:
    """The assistant turn's text of a ``formats`` chat record."""
    return record["messages"][1]["content"][0]["text"]


def _user(images: Sequence[Any], text: str) -> list[dict[str, Any]]:
    """A one-turn chat: the user's ``images`` (PIL), then ``text``."""
    content = [{"type": "image", "image": im} for im in images]
    return [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]


def _far(chat: Any, seed: int, language: str) -> Any:
    """``chat`` (images, then a question) laid out as a role template lays out its images,
    the question after that template's own text: MIRA's planner template (text between the
    images and ~100 tokens after them) or EditScore's SC prompt (``<imgK>: `` before each image,
    ~300 tokens after them), on the instruction of another scene (the next seed's), so the
    text names nothing of the answer. A comparison learned on short prompts did not survive
    that text (docs/micro_vlm.md, fifth session)."""
    from agent.microworld.truth import draw_case
    from tools.prompts import render_planner_prompt
    from tools.vlm.editscore_prompts import sc_prompt

    content = chat[0]["content"]
    images, question = content[:-1], content[-1]["text"]
    other = draw_case(seed + 1, n_edits=(1, 4), size=IMAGE_SIZE, language=language)  # type: ignore[arg-type]
    instruction = other[3]
    rng = random.Random(f"far|{seed}|{language}")
    if rng.random() < 0.5:
        texts = render_planner_prompt(instruction).split("<image>")
        if len(images) == 1:  # one image: where the template puts the current one
            texts = [texts[0] + texts[1], texts[2]]
    else:
        texts = [f"<img{i}>: " for i in range(1, len(images) + 1)] + [sc_prompt(instruction)]
    out: list[dict[str, Any]] = []
    for text, image in zip(texts[:-1], images, strict=True):
        out += [{"type": "text", "text": text}, image]
    out.append({"type": "text", "text": f"{texts[-1]}\n{question}"})
    return [{"role": "user", "content": out}]


def _sc_instruction(record: dict[str, Any]) -> str:
    """The edit instruction inside a critic sample's verbatim SC prompt."""
    from tools.vlm.editscore_prompts import sc_prompt

    text = record["sc"][0]["content"][-1]["text"]
    head, tail = sc_prompt("\x00", score_range=25).split("\x00")
    if not (text.startswith(head) and text.endswith(tail)):
        raise AssertionError("critic sample does not carry the verbatim SC prompt")
    return text[len(head) : len(text) - len(tail)]


def render_samples(vlm: Any, samples: Sequence[tuple[Any, str]]) -> list[tuple[str, list, str]]:
    """(prompt text as ``QwenVL.render`` makes it for decoding, its images, answer) per sample."""
    out = []
    for prompt, answer in samples:
        text, imgs = vlm.render(prompt)
        out.append((text, [im.convert("RGB") for im in imgs], answer))
    return out


def encode_rendered(
    processor: Any,
    items: Sequence[tuple[str, list, str]],
    *,
    focus_weight: float = 1.0,
    focus_boxes: bool = False,
) -> dict[str, Any]:
    """CPU tensors of one left-padded batch through the real processor: prompt, answer and
    ``<|im_end|>``; ``labels`` -100 except on the answer tokens. No positions (see ``encode``).
    With ``focus_weight`` != 1, ``label_weights`` (1 on answer tokens, ``focus_weight`` on
    those of an answer's ``FOCUS`` span, and with ``focus_boxes`` of its ``FOCUS_BOXES`` span,
    0 elsewhere) weigh the loss of ``_lm_metrics``."""
    import torch

    tok = processor.tokenizer
    weighted = focus_weight != 1.0
    texts, images, answer_lens, focus = [], [], [], []
    for text, imgs, answer in items:
        tail = answer + "<|im_end|>"
        texts.append(text + tail)
        images.extend(imgs)
        enc = tok(tail, add_special_tokens=False, return_offsets_mapping=weighted)
        answer_lens.append(len(enc["input_ids"]))
        if weighted:
            spans = [m.span() for m in FOCUS.finditer(answer)]
            if focus_boxes:
                spans += [m.span() for m in FOCUS_BOXES.finditer(answer)]
            focus.append([any(a < e and b > s for s, e in spans) for a, b in enc["offset_mapping"]])
    tok.padding_side = "left"
    inputs = dict(processor(text=texts, images=images or None, padding=True, return_tensors="pt"))
    ids = inputs["input_ids"]
    labels = torch.full_like(ids, -100)
    width = ids.shape[1]
    for i, n in enumerate(answer_lens):
        labels[i, width - n :] = ids[i, width - n :]
    inputs["labels"] = labels
    if weighted:
        weights = (labels != -100).float()
        for i, (n, marks) in enumerate(zip(answer_lens, focus, strict=True)):
            weights[i, width - n :] += (focus_weight - 1.0) * torch.tensor(marks).float()
        inputs["label_weights"] = weights
    return inputs


def with_positions(vlm: Any, inputs: dict[str, Any], device: str) -> dict[str, Any]:
    """``inputs`` on ``device`` with ``position_ids`` from ``tools.vlm._decode.rope_positions``:
    the one function the fast decoder's prefill also uses."""
    from tools.vlm._decode import rope_positions

    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["position_ids"] = rope_positions(vlm.model, inputs, inputs["attention_mask"])
    return inputs


def encode(vlm: Any, samples: Sequence[tuple[Any, str]], *, device: str = "cpu") -> dict[str, Any]:
    """One training batch of (prompt, answer) samples: ``render_samples`` ->
    ``encode_rendered`` -> ``with_positions``."""
    return with_positions(vlm, encode_rendered(vlm.processor, render_samples(vlm, samples)), device)


def _lm_metrics(vlm: Any, batch: dict[str, Any]) -> tuple[Any, float, float, int]:
    """(loss tensor, loss value, answer-token accuracy, how many answers have their first token
    right: for a one-word answer such as "yes"/"no", the decision) of one encoded batch."""
    import torch

    labels = batch["labels"]
    skip = ("labels", "mm_token_type_ids", "label_weights")
    args = {k: v for k, v in batch.items() if k not in skip}
    logits = vlm.model(**args).logits[:, :-1].float()  # (B, L-1, V)
    target = labels[:, 1:]
    flat = (logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    if "label_weights" in batch:  # a weighted mean over the answer tokens (encode_rendered)
        weights = batch["label_weights"][:, 1:].reshape(-1)
        each = torch.nn.functional.cross_entropy(*flat, ignore_index=-100, reduction="none")
        loss = (each * weights).sum() / weights.sum()
    else:
        loss = torch.nn.functional.cross_entropy(*flat, ignore_index=-100)
    keep = target != -100
    guess = logits.argmax(-1)
    acc = float((guess[keep] == target[keep]).float().mean()) if keep.any() else 0.0
    first = keep.int().argmax(-1)  # each row's first answer position (answers are not empty)
    rows = torch.arange(len(first))
    first_right = int((guess[rows, first] == target[rows, first]).sum())
    return loss, float(loss.detach()), acc, first_right


def _with_images(batch: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """``batch`` with its images permuted (every image has the same grid: 224 px)."""
    if "pixel_values" not in batch:
        return batch
    n = len(batch["image_grid_thw"])
    pv = batch["pixel_values"].reshape(n, -1, batch["pixel_values"].shape[-1])
    order = order if len(order) == n else shuffled(n)
    return {**batch, "pixel_values": pv[order].reshape(-1, pv.shape[-1])}


def evaluate_lm(vlm: Any, samples: Sequence[tuple[Any, str]], *, batch: int, device: str) -> dict:
    """Held-out loss and answer-token accuracy with TRUE and with SHUFFLED images (means over
    batches), and the share of answers whose first token is right (``*_first_acc``)."""
    import torch

    sums = {"true_loss": 0.0, "true_acc": 0.0, "shuffled_loss": 0.0, "shuffled_acc": 0.0}
    first = {"true_first_acc": 0, "shuffled_first_acc": 0}
    n = 0
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            enc = encode(vlm, samples[i : i + batch], device=device)
            _, loss, acc, right = _lm_metrics(vlm, enc)
            n_img = len(enc.get("image_grid_thw", []))
            _, s_loss, s_acc, s_right = _lm_metrics(vlm, _with_images(enc, shuffled(n_img)))
            sums["true_loss"] += loss
            sums["true_acc"] += acc
            sums["shuffled_loss"] += s_loss
            sums["shuffled_acc"] += s_acc
            first["true_first_acc"] += right
            first["shuffled_first_acc"] += s_right
            n += 1
    means = {k: v / max(n, 1) for k, v in sums.items()}
    shares = {k: v / max(len(samples), 1) for k, v in first.items()}
    return means | shares | {"samples": len(samples)}


# -- stage 1: the vision tower with linear probes -----------------------------------------------
def _probe_batch(processor: Any, pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """CPU tensors: the pairs' images (a0, b0, a1, b1, ...) and their cell labels."""
    import torch

    from agent.microworld.render import render

    images = [render(s) for pair in pairs for s in pair]
    enc = processor.image_processor(images=images, return_tensors="pt")
    labels = {k: [] for k in _vocab()}
    changed = []
    for a, b in pairs:
        for s in (a, b):
            for k, v in cell_labels(s).items():
                labels[k].append(v)
        changed.append(_changed(a, b))
    out = {k: torch.tensor(v) for k, v in labels.items()}
    out["changed"] = torch.tensor(changed)
    out["pixel_values"] = enc["pixel_values"]
    out["image_grid_thw"] = enc["image_grid_thw"]
    return out


def _probe_heads(hidden: int, device: str) -> Any:
    import torch

    heads = {k: torch.nn.Linear(hidden, len(v)) for k, v in _vocab().items()}
    heads["changed"] = torch.nn.Linear(hidden, 2)
    return torch.nn.ModuleDict(heads).to(device)


def _probe_forward(vlm: Any, heads: Any, batch: dict[str, Any], order: list[int] | None = None):
    """(loss, {attribute: accuracy}) of the probes; ``order`` permutes the images (SHUFFLED)."""
    import torch

    feats = vlm.model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    tokens = torch.stack(list(feats.pooler_output)).float()  # (2P, 64, H)
    if order is not None:
        tokens = tokens[order]
    cells = tokens[:, cell_tokens()]  # (2P, 21, H)
    loss, acc = 0.0, {}
    for key in _vocab():
        logits = heads[key](cells)
        loss = loss + torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[key].flatten())
        right = logits.argmax(-1) == batch[key]
        acc[key] = float(right.float().mean())
        # most cells are empty: the accuracy on the objects' cells is the number that matters
        occupied = batch["category"] > 0
        acc[f"{key}_objects"] = float(right[occupied].float().mean()) if occupied.any() else 1.0
    diff = (cells[0::2] - cells[1::2]).abs()
    logits = heads["changed"](diff)
    loss = loss + torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch["changed"].flatten()
    )
    right = logits.argmax(-1) == batch["changed"]
    acc["changed"] = float(right.float().mean())
    moved = batch["changed"] > 0  # most cells do not change: recall on those that did
    acc["changed_cells"] = float(right[moved].float().mean()) if moved.any() else 1.0
    return loss, acc


def evaluate_probe(vlm: Any, heads: Any, seeds: Sequence[int], *, batch: int, device: str) -> dict:
    """Linear-probe accuracy per attribute on ``seeds`` with TRUE and SHUFFLED images."""
    import torch

    pairs = list(_probe_pairs(seeds))
    true: dict[str, float] = {}
    shuf: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            b = {
                k: v.to(device)
                for k, v in _probe_batch(vlm.processor, pairs[i : i + batch]).items()
            }
            _, acc = _probe_forward(vlm, heads, b)
            # shuffle whole pairs, so "changed" also reads another pair's images
            n_pairs = len(pairs[i : i + batch])
            order = [2 * j + t for j in shuffled(n_pairs) for t in (0, 1)]
            _, sacc = _probe_forward(vlm, heads, b, order)
            for k in acc:
                true[k] = true.get(k, 0.0) + acc[k]
                shuf[k] = shuf.get(k, 0.0) + sacc[k]
            n += 1
    return {
        "true": {k: v / n for k, v in true.items()},
        "shuffled": {k: v / n for k, v in shuf.items()},
    }


# -- the loop -----------------------------------------------------------------------------------
def _cosine(step: int, total_guess: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_guess - warmup))))


# the fewest warmup steps of a stage that runs longer than that: the warmup is a tenth of the
# step count guessed from the time per step so far, and slow first steps (DataLoader workers
# starting, a first bfloat16 call) once made that guess small enough for the learning rate to
# reach its peak by step 50 (the ninth session's second call, whose loss was NaN from there on)
MIN_WARMUP = 100


def _run(
    params: list[Any],
    lr: float,
    seconds: float,
    step_fn: Callable[[int], Any],
    log: Callable[[str], None],
    name: str,
    log_every: int,
) -> dict[str, Any]:
    """AdamW with linear warmup (a tenth of the guessed steps, at least ``MIN_WARMUP`` or all of
    them) and a cosine that assumes a constant step time (re-estimated every step from the
    elapsed time), until ``seconds`` have passed; at least one step. ``FloatingPointError`` when
    the loss is not finite, so a diverged stage is never saved."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start, step, losses = time.monotonic(), 0, []
    while True:
        elapsed = time.monotonic() - start
        if step > 0 and elapsed >= seconds:
            break
        guess = max(step + 1, int(seconds / max(elapsed / max(step, 1), 1e-6))) if step else 100
        warmup = max(1, min(guess, max(guess // 10, MIN_WARMUP)))
        for g in opt.param_groups:
            g["lr"] = lr * _cosine(step, guess, warmup)
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{name}: the loss is {losses[-1]} at step {step}")
        if step % log_every == 0:
            log(
                f"{name} step {step} loss {losses[-1]:.4f} grad norm {float(norm):.3g} "
                f"lr {opt.param_groups[0]['lr']:.2e} t {elapsed:.1f}s"
            )
        step += 1
    return {"steps": step, "seconds": time.monotonic() - start, "last_loss": losses[-1]}


def _loader(
    make: Callable[[list[Any]], dict[str, Any]],
    items: list[Any],
    batch: int,
    seed: int,
    workers: int,
    *,
    lengths: Sequence[int] | None = None,
    buckets: int = 1,
) -> Iterator[dict[str, Any]]:
    """Endless CPU batches ``make(chosen items)``, items drawn in shuffled epochs, built by
    ``workers`` DataLoader processes (0: in this process). With ``buckets`` > 1 and the items'
    ``lengths``, ``buckets`` batches are drawn at a time, sorted by length and cut into
    batches of like lengths (given in random order), so a padded batch wastes less compute."""
    import torch

    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets!r}")
    if buckets > 1 and (lengths is None or len(lengths) != len(items)):
        got = "none" if lengths is None else len(lengths)
        raise ValueError(f"buckets > 1 needs one length per item, got {got} for {len(items)} items")

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            info = torch.utils.data.get_worker_info()
            rng = random.Random(f"{seed}|{info.id if info else 0}")
            order: list[int] = []
            while True:
                chosen: list[int] = []
                while len(chosen) < batch * buckets:
                    if not order:
                        order = list(range(len(items)))
                        rng.shuffle(order)
                    chosen.append(order.pop())
                if buckets > 1:
                    chosen.sort(key=lambda i: lengths[i])  # type: ignore[index]
                groups = [chosen[k : k + batch] for k in range(0, len(chosen), batch)]
                rng.shuffle(groups)
                for group in groups:
                    yield make([items[i] for i in group])

    return iter(
        torch.utils.data.DataLoader(
            Batches(), batch_size=None, num_workers=workers, persistent_workers=False
        )
    )


def rendered_length(item: tuple[str, list, str]) -> int:
    """A rough length of a ``render_samples`` item for grouping batches: its characters, plus
    256 for each image (64 merged tokens of about 4 characters)."""
    text, images, answer = item
    return len(text) + len(answer) + 256 * len(images)


def _set_trainable(model: Any, stage: str) -> list[Any]:
    """Which parameters a stage trains; everything else is frozen."""
    names = {
        "vision": lambda n: ".visual." in f".{n}",
        "language": lambda n: ".visual." not in f".{n}" or ".merger." in n,
        "roles": lambda n: ".visual." not in f".{n}" or ".merger." in n,
        "critic": lambda n: "lora_" in n,
    }[stage]
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(bool(names(n)) and (stage == "critic" or "lora_" not in n))
        if p.requires_grad:
            params.append(p)
    return params


_POOL_VLM: Any = None  # the model whose classes build prompts, seen by forked pool workers


PLANNER_DRAWS = ("balanced", "random")


def planner_class(record: dict[str, Any]) -> str:
    """A planner sample's answer class: "fix" (the state after a mistake), "stop", or the
    place in the instruction of the first pending edit ("0", "1", ...)."""
    from agent.prompts import STOP_TOKEN

    if record["mistake"] is not None:
        return "fix"
    if record["answer"] == STOP_TOKEN:
        return "stop"
    done = set(record["state"])
    return str(min(i for i in range(len(done) + 1) if i not in done))


def draw_by_class(records: Sequence[dict[str, Any]], k: int, rng: random.Random) -> list[Any]:
    """``k`` of a scene's planner ``records`` (fewer if it has fewer), each drawn by picking an
    answer class at random (``planner_class``, among those left), then a record of that class."""
    by_class: dict[str, list[Any]] = {}
    for r in records:
        by_class.setdefault(planner_class(r), []).append(r)
    out = []
    while len(out) < k and by_class:
        name = rng.choice(sorted(by_class))
        group = by_class[name]
        out.append(group.pop(rng.randrange(len(group))))
        if not group:
            del by_class[name]
    return out


def _balanced_planner(
    seed: int,
    language: str,
    k: int,
    reasoning: bool | str = False,
    planner_edits: tuple[int, int] = PLANNER_EDITS,
) -> list[Any]:
    """``k`` planner samples of ``seed`` drawn by answer class (``draw_by_class``)."""
    rng = random.Random(f"pool|planner-balanced|{seed}|{language}")
    records = list(_planner_records([seed], language, reasoning, planner_edits))
    return [(r["messages"][:1], _said(r)) for r in draw_by_class(records, k, rng)]


def _seed_samples(
    job: tuple[str, int, str, int, bool, bool | str, tuple[int, int]],
) -> list[Any]:
    role, seed, language, per_seed, balanced, reasoning, planner_edits = job
    if role == "planner" and balanced:
        return _balanced_planner(seed, language, per_seed, reasoning, planner_edits)
    got = list(
        _role_samples(
            _POOL_VLM, role, [seed], language, reasoning=reasoning, planner_edits=planner_edits
        )
    )
    random.Random(f"pool|{role}|{seed}|{language}").shuffle(got)
    return got[:per_seed]


# roles whose samples number one per scene
ONE_PER_SCENE = ("describe", "compare", "parser", "pending", "check", "progress_wrong", *FAR)
# roles with fewer samples per scene than ``_pool``'s ``per_seed``: a pool draws this many from
# each, so it still reaches its limit ("progress": 2 or 3 states per scene)
PER_SEED = {"progress": 2}
# roles whose scenes sometimes give no sample ("progress_wrong": no object fits ``one_wrong``):
# a pool draws this many times the scenes it needs, so it still reaches its limit
SPARE_SCENES = {"progress_wrong": 2}


def _pool(
    vlm: Any,
    roles: Sequence[str],
    seeds: Sequence[int],
    language: str,
    limit: int,
    *,
    per_seed: int = 4,
    workers: int = 0,
    balanced: bool = False,
    reasoning: bool | str = False,
    planner_edits: tuple[int, int] = PLANNER_EDITS,
) -> list[Any]:
    """Up to ``limit`` samples per role, at most ``per_seed`` (drawn at random) from each seed,
    so a pool spans many scenes; built by ``workers`` forked processes (0: here). Roles with
    one sample per scene (``ONE_PER_SCENE``) draw ``limit`` scenes. ``balanced``: planner
    samples are drawn by answer class (``_balanced_planner``); ``reasoning``: planner answers
    reason first (``formats.plan_reason``; "clauses": ``formats.plan_clauses``);
    ``planner_edits``: the fewest and most edits of a planner sample's case."""
    global _POOL_VLM
    _POOL_VLM = vlm
    out: list[Any] = []
    for role in roles:
        k = 1 if role in ONE_PER_SCENE else min(per_seed, PER_SEED.get(role, per_seed))
        jobs = [
            (role, seed, language, k, balanced, reasoning, planner_edits)
            for seed in seeds[: -(-limit // k) * SPARE_SCENES.get(role, 1)]
        ]
        if workers > 0 and len(jobs) > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_seed_samples, jobs, chunksize=8)
        else:
            parts = [_seed_samples(job) for job in jobs]
        out.extend([x for part in parts for x in part][:limit])
    return out


def planner_format(settings: VLMSettings | dict[str, Any]) -> str:
    """The planner answer format a run's settings (or a manifest's "settings") train: "bare",
    "reasoned" (``formats.plan_reason``) or "clauses" (``formats.plan_clauses``)."""
    get = settings.get if isinstance(settings, dict) else lambda k: getattr(settings, k)
    if get("planner_clauses"):
        return "clauses"
    return "reasoned" if get("planner_reasoning") else "bare"


_FORMAT_FLAGS = {
    "bare": "neither flag",
    "reasoned": "--planner-reasoning",
    "clauses": "--planner-clauses",
}


def reasoning_change(init: str | Path, settings: VLMSettings) -> str | None:
    """A warning when a roles stage would train ``init``'s planner in another answer format
    (``planner_format``; not inherited from the folder), else None."""
    manifest = Path(init) / MANIFEST
    if "roles" not in settings.stages or not manifest.is_file():
        return None
    was = planner_format(json.loads(manifest.read_text()).get("settings", {}))
    now = planner_format(settings)
    if was == now:
        return None
    return (
        f"warning: {init} learned {was} planner answers; this run trains {now} ones"
        f" ({_FORMAT_FLAGS[now]} given)"
    )


def train_vlm(
    out: str | Path,
    *,
    settings: VLMSettings = GPU_SETTINGS,
    init: str | Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Run ``settings.stages`` (each on its wall-clock budget), evaluate each on validation
    seeds (true vs shuffled images), save a loadable folder to ``out`` with ``metrics.json``.
    ``init``: a folder saved by an earlier run (model, tokenizer, processor, critic adapter and
    metrics reused); exactly ``settings.stages`` run, whatever the folder lists as done."""
    import torch

    from agent.microworld.splits import seeds as split_seeds

    run_start = time.monotonic()
    out = Path(out)
    device = settings.device if torch.cuda.is_available() or settings.device == "cpu" else "cpu"
    if init is not None:
        vlm, done, metrics = load_folder(init)
        note = reasoning_change(init, settings)
        if note:
            log(note)
    else:
        tok = build_tokenizer(corpus(settings.model.tokenizer_seeds), settings.model)
        vlm = build_model(settings.model, build_processor(tok))
        done, metrics = [], {}
    train = list(split_seeds("train", settings.train_seeds, offset=settings.seed_offset))
    val = list(split_seeds("validation", settings.val_seeds))
    test = list(split_seeds("test", settings.val_seeds))  # the probe's reported table only
    # every sample pool is built by forked processes BEFORE the model touches the GPU (a
    # process forked from one holding a CUDA context may hang)
    pools: dict[str, tuple[list[Any], dict[str, dict[str, list[Any]]]]] = {}
    for stage in settings.stages:
        if stage != "vision":
            started = time.monotonic()
            pools[stage] = _stage_pools(vlm, stage, settings, train, val)
            took = time.monotonic() - started
            log(f"{stage}: {len(pools[stage][0])} training samples ({took:.0f} s)")
    vlm.model.to(device).train()
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda") and settings.dtype == "bfloat16"
        else torch.autocast("cpu", enabled=False)
    )
    for stage in settings.stages:
        seconds = stage_seconds(settings, stage, time.monotonic() - run_start)
        log(f"stage {stage}: {seconds:.0f} s")
        with amp:
            if stage == "vision":
                heads = _probe_heads(vlm.model.config.text_config.hidden_size, device)
                params = _set_trainable(vlm.model, "vision")
                pairs = list(_probe_pairs(train[: settings.probe_seeds]))
                processor = vlm.processor
                batches = _loader(
                    lambda chosen: _probe_batch(processor, chosen),
                    pairs,
                    max(1, settings.batch // 2),
                    0,
                    settings.workers,
                )

                def step_fn(i: int, batches=batches, heads=heads) -> Any:
                    b = {k: v.to(device) for k, v in next(batches).items()}
                    return _probe_forward(vlm, heads, b)[0]

                run = _run(
                    params + list(heads.parameters()),
                    settings.lr_vision,
                    seconds,
                    step_fn,
                    log,
                    stage,
                    settings.log_every,
                )
                for split, chosen in (("validation", val), ("test", test)):
                    run[f"probe_{split}"] = evaluate_probe(
                        vlm, heads, chosen, batch=settings.batch, device=device
                    )
            else:
                if stage == "critic" and CRITIC_ADAPTER not in vlm.adapters:
                    vlm.add_adapter(CRITIC_ADAPTER, lora_config(settings.lora_r))
                adapter = CRITIC_ADAPTER if stage == "critic" else None
                vlm._set_state(adapter)
                params = _set_trainable(vlm.model, stage)
                pool, eval_pools = pools[stage]
                processor = vlm.processor
                weight, boxes = settings.focus_weight, settings.focus_boxes
                rendered = render_samples(vlm, pool)
                batches = _loader(
                    lambda chosen: encode_rendered(
                        processor, chosen, focus_weight=weight, focus_boxes=boxes
                    ),
                    rendered,
                    settings.batch,
                    1,
                    settings.workers,
                    lengths=[rendered_length(item) for item in rendered],
                    buckets=settings.length_buckets,
                )

                def step_fn(i: int, batches=batches) -> Any:
                    return _lm_metrics(vlm, with_positions(vlm, next(batches), device))[0]

                lr = settings.lr_lora if stage == "critic" else settings.lr
                run = _run(params, lr, seconds, step_fn, log, stage, settings.log_every)
                vlm.model.eval()
                run["validation"] = {
                    lang: {
                        role: evaluate_lm(vlm, samples, batch=settings.batch, device=device)
                        for role, samples in by_role.items()
                    }
                    for lang, by_role in eval_pools.items()
                }
                vlm.model.train()
                vlm._set_state(None)
        metrics[stage] = run
        log(f"stage {stage} done: {json.dumps(run)[:400]}")
        if stage not in done:
            done.append(stage)
        # saved after every stage: a call cut off later still returns the stages it finished
        metrics["text_only_baselines"] = TEXT_ONLY
        save_folder(vlm, out, settings=settings, done=done, metrics=metrics)
    return metrics


FINISH_SECONDS = 60.0  # a stage's evaluation and save on the GPU took 20-45 s


def stage_seconds(settings: VLMSettings, stage: str, elapsed: float) -> float:
    """A stage's training seconds: its own budget, cut so that the run's ``budget`` still
    leaves time to evaluate and save it; a stage that would get no time gets one step (0)."""
    seconds = settings.seconds.get(stage, 0.0)
    if settings.budget is not None:
        seconds = min(seconds, max(0.0, settings.budget - elapsed - FINISH_SECONDS))
    return seconds


STAGE_ROLES = {
    "language": ["describe", "compare", *FAR],
    "roles": ["grounder", "parser", "planner", "pending", "check"],
    "critic": ["critic"],
}
# perception tasks mixed into a later stage's training pool (as a share of one role's samples),
# so fine-tuning on the long role prompts does not overwrite reading the scene (the first roles
# run decoded near text-only after a language stage that read every object)
REHEARSAL = {"roles": {"describe": 0.25, "compare": 0.25, "compare_far": 0.25}}
# roles of a later stage that a stage trains into the base weights too when ``role_shares``
# names them, e.g. ``critic=1`` in the roles stage: the critic's samples learned by the whole
# language model (evaluated there without the adapter), where the LoRA alone never used images;
# ``progress=1``: more of the critic's whole-instruction samples (``_role_samples``' "progress");
# ``progress_wrong=1``: whole-instruction samples with one edit made on the wrong object
INTO_BASE = {"roles": ("critic", "progress", "progress_wrong")}


def check_role_shares(shares: dict[str, float]) -> None:
    """``ValueError`` naming the first entry of ``role_shares`` that is no role of a stage or
    no finite share >= 0 (0: the role is left out of its stage, pool and evaluation)."""
    known = {r for rs in [*STAGE_ROLES.values(), *INTO_BASE.values()] for r in rs}
    for role, share in shares.items():
        if role not in known:
            raise ValueError(f"unknown role {role!r} (one of {sorted(known)})")
        if not (math.isfinite(share) and share >= 0):
            raise ValueError(f"{role!r} must be a finite share >= 0, got {share!r}")


def _stage_pools(
    vlm: Any, stage: str, settings: VLMSettings, train: Sequence[int], val: Sequence[int]
) -> tuple[list[Any], dict[str, dict[str, list[Any]]]]:
    """(training samples on train seeds and train language, {language: {role: validation
    samples}}) of a language-model stage."""
    check_role_shares(settings.role_shares)
    roles = STAGE_ROLES[stage] + [r for r in INTO_BASE.get(stage, ()) if r in settings.role_shares]
    roles = [r for r in roles if settings.role_shares.get(r, 1.0) > 0]
    if not roles:
        raise ValueError(f"role_shares leave the {stage} stage no role: {settings.role_shares!r}")
    rehearse = REHEARSAL.get(stage, {})
    if settings.planner_draw not in PLANNER_DRAWS:
        raise ValueError(
            f"planner_draw must be one of {PLANNER_DRAWS}, got {settings.planner_draw!r}"
        )
    if not (math.isfinite(settings.focus_weight) and settings.focus_weight > 0):
        raise ValueError(f"focus_weight must be a finite number > 0, got {settings.focus_weight!r}")
    balanced = settings.planner_draw == "balanced"
    planner_edits = check_planner_edits(settings.planner_edits)
    # what _role_samples takes: False, True (plan_reason) or "clauses" (plan_clauses)
    reasoning: bool | str = {"bare": False, "reasoned": True, "clauses": "clauses"}[
        planner_format(settings)
    ]
    shares = {role: settings.role_shares.get(role, 1.0) for role in roles}
    per_share = settings.pool_samples / (sum(shares.values()) + sum(rehearse.values()))
    pool = []
    for role in roles:
        limit = int(per_share * shares[role])
        pool += _pool(
            vlm,
            [role],
            train,
            "train",
            limit,
            workers=settings.workers,
            balanced=balanced,
            reasoning=reasoning,
            planner_edits=planner_edits,
        )
    limit = int(per_share)  # one role's count at share 1, which rehearsal shares are of
    for role, share in rehearse.items():
        # other scenes than the roles' own (the end of the train seeds), train language
        seeds = list(reversed(train))
        pool += _pool(vlm, [role], seeds, "train", int(limit * share), workers=settings.workers)
    evals = {
        lang: {
            role: _pool(
                vlm,
                [role],
                val,
                lang,
                settings.eval_samples,
                workers=settings.workers,
                reasoning=reasoning,
                planner_edits=planner_edits,
            )
            for role in roles
        }
        for lang in ("train", "heldout")
    }
    return pool, evals


# -- folders ------------------------------------------------------------------------------------
def lora_config(r: int) -> Any:
    """The critic's LoRA on the language model's attention and MLP projections."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )


def save_folder(
    vlm: Any, out: Path, *, settings: VLMSettings, done: list[str], metrics: dict
) -> Path:
    """The base model at ``out`` (loadable by ``load_qwen_vl``), the critic LoRA (peft format) at
    ``out/editscore`` when trained, ``metrics.json`` and ``micro_vlm.json``."""
    out.mkdir(parents=True, exist_ok=True)
    model = vlm.model
    has_lora = CRITIC_ADAPTER in vlm.adapters
    if has_lora:
        model.save_pretrained(out / CRITIC_ADAPTER, adapter_name=CRITIC_ADAPTER)
        model.disable_adapters()
    # base weights only: peft's layers hold the base weight under ``base_layer``
    state = {
        k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k
    }
    clone = _plain_copy(vlm, state)
    save_micro_vlm(
        clone,
        out,
        config=settings.model,
        extra={"stages_done": done, "settings": _jsonable(asdict(settings))},
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def _plain_copy(vlm: Any, state: dict[str, Any]) -> Any:
    """A ``QwenVL`` with no adapter layers holding ``state`` (for saving the base)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tools.vlm._qwen import QwenVL

    model = Qwen2_5_VLForConditionalGeneration(vlm.model.config)
    model.load_state_dict(state, strict=True)
    model.generation_config = vlm.model.generation_config
    return QwenVL(model, vlm.processor, family="qwen2.5", name="micro-vlm")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def load_folder(
    path: str | Path, *, device: str = "cpu", grounder: bool = False
) -> tuple[Any, list[str], dict]:
    """(QwenVL in float32 on ``device`` with the critic adapter if saved, stages done, metrics)
    of a folder written by ``train_vlm``, through the project's ``load_qwen_vl`` path pieces.
    ``grounder``: also the folder's ``grounder`` adapter when it has one (evaluation; training
    and ``merge-lora`` start from the base and the critic adapter only)."""
    from tools.models import LoadOptions
    from tools.vlm._qwen import _load

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    vlm = _load(
        str(path), str(path), LoadOptions(device=device, dtype="float32").resolved(), name=str(path)
    )
    for adapter in (CRITIC_ADAPTER, GROUNDER_ADAPTER) if grounder else (CRITIC_ADAPTER,):
        if (path / adapter).is_dir():
            vlm.load_adapter(adapter, path / adapter)
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return vlm, list(manifest.get("stages_done", [])), metrics


def settings_for(name: str, **changes: Any) -> VLMSettings:
    """``SMOKE_SETTINGS`` or ``GPU_SETTINGS`` with ``changes`` (``seconds`` scales every stage)."""
    base = SMOKE_SETTINGS if name == "smoke" else GPU_SETTINGS
    seconds = changes.pop("seconds", None)
    if seconds is not None:
        total = sum(base.seconds.values())
        changes["seconds"] = {k: v * seconds / total for k, v in base.seconds.items()}
    return replace(base, **changes)
