"""MIRA stage 2: GRPO on the planner, rewarded by executing each sampled step.

TRL's ``GRPOTrainer`` with a peft LoRA on the SFT planner (the micro VLM folder's base, whose
roles stage is the planner SFT). MIRA's recipe is the default (MIRA supplementary, B.1): 200
steps, a group of G = 5 sampled answers per input, learning rate 5e-6, KL coefficient
beta = 0.04, reward lambda_sc x SC + lambda_pq x PQ with 2.0 and 0.5 (``MIRA_GRPO``).

One input is a planner state of the micro-world (``formats.planner_samples``: the original
image, the current image, the full instruction; clean states and states after a mistake). For
each sampled answer, ``StepReward``:

- parses it with the planner's own parser (``parse_mira_output``); unparseable output gets the
  minimum reward, 0;
- executes a ``NEXT_EDITING_INSTRUCTION`` with the editor on the current image; ``<stop>``
  keeps the current image;
- judges the resulting image against the **full** instruction from the original image, so a
  step and a stop are judged by the same question ("how far is the whole request done?"):
  ``source="critic"``: the EditScore critic (as MIRA), SC and PQ of its critique, an invalid
  critique gets the minimum; ``source="exact"``: the micro-world scorer (an oracle reward),
  SC = 10 x min(mean edit progress, consistency), consistency = 1 - the changed fraction of the
  rest over the model-tolerant limit (clipped to 0..1), and PQ = 10: the micro-world has no
  measure of naturalness, and a constant in every sample of a group changes no advantage.

The result is a LoRA adapter folder (peft format) that ``MiraPlanner.from_pretrained(base,
lora=...)`` loads with no special case, plus ``grpo.json`` (settings, reward curve, KL).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from agent.micro import PLANNER_NEW_TOKENS
from agent.train.vlm import PLANNER_EDITS, check_planner_edits

__all__ = [
    "MIRA_GRPO",
    "reading_editor",
    "GRPOSettings",
    "StepReward",
    "planner_prompts",
    "train_grpo",
]

#: MIRA supplementary, B.1 (stage 2)
MIRA_GRPO = {"steps": 200, "group": 5, "lr": 5e-6, "beta": 0.04, "lambda_sc": 2.0, "lambda_pq": 0.5}
REWARD_SOURCES = ("critic", "exact")
ADAPTER = "mira-planner"  # tools.vlm.planner.MIRA_LORA_ADAPTER: the name MiraPlanner loads it as


@dataclass(frozen=True)
class GRPOSettings:
    """One GRPO run. ``prompts_per_step`` inputs, each sampled ``group`` times, per step."""

    steps: int = MIRA_GRPO["steps"]
    group: int = MIRA_GRPO["group"]
    lr: float = MIRA_GRPO["lr"]
    beta: float = MIRA_GRPO["beta"]
    lambda_sc: float = MIRA_GRPO["lambda_sc"]
    lambda_pq: float = MIRA_GRPO["lambda_pq"]
    # subtracted from a step's reward, not a stop's (0: MIRA's reward). Without it a step that
    # changes nothing once every edit is done scores as a stop does, so GRPO cannot teach
    # stopping (the exact reward's SC is equal for both)
    step_cost: float = 0.0
    # taken from a stop judged not done (SC below DONE_SC; 0: MIRA's reward). With a step
    # cost, one step's reward ranks an early stop above a step that changes nothing (without
    # one they tie), but in the loop a wasted step can be retried and a stop ends the request
    # unfinished: with step_cost alone a planner whose steps often miss learns to stop
    # everywhere (docs/grpo.md)
    early_stop_penalty: float = 0.0
    reward: str = "critic"
    prompts_per_step: int = 2
    lora_r: int = 16
    lora_alpha: int = 32
    # the micro planner's own limit: a reasoned answer (cell lists first) needs more than 64
    max_completion_length: int = PLANNER_NEW_TOKENS
    temperature: float = 1.0
    train_seeds: int = 200
    states_per_seed: int = 2  # planner states drawn from each scene (a scene has about 14)
    # the fewest and most edits of the cases the states come from (the SFT planner's
    # ``VLMSettings.planner_edits``; the shipped one trained on 2-5 last)
    planner_edits: tuple[int, int] = PLANNER_EDITS
    seed_offset: int = 0
    save_every: int = 25  # steps between saves of the adapter and grpo.json
    language: str = "train"
    editor_seed: int = 0
    seconds: float | None = None  # wall-clock budget; None: run every step
    # a step (or the start) that takes longer than this writes every thread's stack to stderr,
    # again each time as long, so a hang shows where it is (the first GPU run stalled after
    # step 25 with nothing logged); None: never
    stall_seconds: float | None = 300.0
    device: str = "cpu"
    dtype: str = "float32"  # of the policy's weights (bfloat16 for a 7B planner)
    seed: int = 0

    def check(self) -> None:
        """``ValueError`` naming the first bad setting and its value."""
        for name in (
            "steps",
            "group",
            "prompts_per_step",
            "lora_r",
            "max_completion_length",
            "train_seeds",
            "states_per_seed",
            "save_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.group < 2:
            raise ValueError(f"group must be >= 2 (GRPO compares samples), got {self.group!r}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("beta", "lambda_sc", "lambda_pq", "step_cost", "early_stop_penalty"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.reward not in REWARD_SOURCES:
            raise ValueError(f"reward must be one of {REWARD_SOURCES}, got {self.reward!r}")
        if self.language not in ("train", "heldout"):
            raise ValueError(f"language must be 'train' or 'heldout', got {self.language!r}")
        check_planner_edits(self.planner_edits)
        if not isinstance(self.seed_offset, int) or self.seed_offset < 0:
            raise ValueError(f"seed_offset must be an integer >= 0, got {self.seed_offset!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("seconds", "stall_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        if self.stall_seconds is not None and not self.stall_seconds <= threading.TIMEOUT_MAX:
            # a longer wait raises inside the watchdog thread, which then watches nothing
            raise ValueError(
                f"stall_seconds must be at most {threading.TIMEOUT_MAX:.0f} (None: no watchdog), "
                f"got {self.stall_seconds!r}"
            )


# -- inputs --------------------------------------------------------------------------------------
SIZE = 224  # the planner samples' images (formats.planner_samples' default)


def planner_prompts(
    seeds: Sequence[int],
    *,
    language: str = "train",
    per_seed: int | None = None,
    edits: tuple[int, int] = PLANNER_EDITS,
) -> list[dict[str, Any]]:
    """GRPO inputs from the micro-world planner states of ``seeds`` (the SFT samples' states,
    clean and after mistakes) of cases with ``edits`` (fewest, most) edits, at most ``per_seed``
    of each scene (drawn at random, seeded; None: all): ``prompt`` (the planner's chat with
    image placeholders), ``images`` ([original, current]) and ``case`` (JSON: the sample's id,
    seed, language, the case's shape, instruction, the reference answer, the scene the current
    image shows)."""
    import random

    from agent.microworld import formats

    edits = check_planner_edits(edits)
    records = []
    for seed in seeds:
        got = list(formats.planner_samples([seed], language=language, n_edits=edits, size=SIZE))  # type: ignore[arg-type]
        if per_seed is not None:
            random.Random(f"grpo|{seed}|{language}").shuffle(got)
            got = got[:per_seed]
        records.extend(got)
    out = []
    for r in records:
        content, images = [], []
        for part in r["messages"][0]["content"]:
            if part["type"] == "image":
                images.append(part["image"])
                content.append({"type": "image"})
            else:
                content.append(part)
        case = {
            "id": r["id"],  # the planner sample's id: which state this input is
            "seed": r["seed"],
            "language": language,
            "n_edits": list(edits),
            "size": SIZE,
            "instruction": r["instruction"],
            "reference": r["answer"],
            "scene": r["scene"],  # what the current image shows (a partial edit: before it)
        }
        out.append(
            {
                "prompt": [{"role": "user", "content": content}],
                "images": images,
                "case": json.dumps(case),
            }
        )
    return out


def reading_editor(inputs: Sequence[dict[str, Any]]) -> Any:
    """A ``ReadingEditor`` (the words executed exactly, no model) that knows the current image
    of every input: an editor with no weights and no diffusers, for the exact-executor runs."""
    from agent.microworld.scene import Scene
    from agent.microworld.tools import ReadingEditor

    editor = ReadingEditor()
    for row in inputs:
        editor.add(row["images"][1], Scene.model_validate(json.loads(row["case"])["scene"]))
    return editor


# -- reward --------------------------------------------------------------------------------------
def exact_sc(result: Any, case: dict[str, Any]) -> float:
    """The exact micro-world SC (0..10) of ``result`` for the case a GRPO input names:
    10 x min(mean edit progress, consistency)."""
    from agent.microworld.scoring import Thresholds, score_case
    from agent.microworld.truth import make_case

    lo, hi = case["n_edits"]
    c = make_case(case["seed"], n_edits=(lo, hi), size=case["size"], language=case["language"])
    if c.instruction != case["instruction"]:
        raise ValueError(
            f"seed {case['seed']} with n_edits {(lo, hi)}, size {case['size']}: its instruction "
            f"{c.instruction!r} is not the input's {case['instruction']!r}"
        )
    score = score_case(c, result)
    limit = Thresholds().max_changed_fraction_tolerant
    consistency = min(1.0, max(0.0, 1.0 - score.changed_fraction / limit))
    return 10.0 * min(score.pf, consistency)


def _text(completion: Any) -> str:
    """A completion's text: TRL passes a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(c.get("text", "") for c in content if c.get("type") == "text")
    return "".join(parts)


class StepReward:
    """TRL reward function: lambda_sc x SC + lambda_pq x PQ of the image each sampled answer
    leads to (see the module docstring), less ``step_cost`` for a step, and less
    ``early_stop_penalty`` for a stop judged not done (SC below ``DONE_SC``); the minimum stays
    the floor. ``editor``: has ``edit(image, instruction, seed=)``;
    ``critic``: has ``critique(source, edited, instruction)`` (needed for ``source="critic"``).
    ``last`` keeps the per-sample details of the latest call (decision, SC, PQ, reward)."""

    MINIMUM = 0.0
    DONE_SC = 9.0  # a stop's SC (0..10) from which the request counts as done

    def __init__(
        self,
        editor: Any,
        *,
        source: str = "critic",
        critic: Any = None,
        lambda_sc: float = MIRA_GRPO["lambda_sc"],
        lambda_pq: float = MIRA_GRPO["lambda_pq"],
        step_cost: float = 0.0,
        early_stop_penalty: float = 0.0,
        editor_seed: int = 0,
    ) -> None:
        if source not in REWARD_SOURCES:
            raise ValueError(f"source must be one of {REWARD_SOURCES}, got {source!r}")
        if source == "critic" and critic is None:
            raise ValueError("source='critic' needs a critic (critic=None given)")
        self.editor, self.critic, self.source = editor, critic, source
        for name, value in (("step_cost", step_cost), ("early_stop_penalty", early_stop_penalty)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.lambda_sc, self.lambda_pq, self.editor_seed = lambda_sc, lambda_pq, editor_seed
        self.step_cost, self.early_stop_penalty = step_cost, early_stop_penalty
        self.__name__ = f"{source}_step_reward"  # TRL names its logged reward columns by this
        self.last: list[dict[str, Any]] = []
        # every critic-judged sample of the run: [the critic's SC (None: no verdict), the
        # exact SC of the same image], the per-sample measure of reward hacking
        self.sc_pairs: list[list[float | None]] = []

    def judge(self, original: Any, result: Any, case: dict[str, Any]) -> tuple[float, float] | None:
        """(SC, PQ) on 0..10 of ``result`` as the answer to the whole case; None: no verdict."""
        if self.source == "critic":
            critique = self.critic.critique(original, result, case["instruction"])
            if not critique.valid:
                return None
            return float(critique.semantic_consistency), float(critique.perceptual_quality)
        return exact_sc(result, case), 10.0

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        images: Sequence[Sequence[Any]],
        case: Sequence[str],
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float]:
        from tools.errors import PlannerOutputError, ToolError
        from tools.vlm.planner import parse_mira_output

        exact: list[float] = []  # beside a critic's reward: the exact SC of the same images
        rewards, self.last = [], []
        for completion, (original, current), info in zip(completions, images, case, strict=True):
            info = json.loads(info)
            text = _text(completion)
            try:
                decision = parse_mira_output(text)
            except PlannerOutputError:
                self.last.append({"answer": text, "decision": "unparseable", "reward": 0.0})
                rewards.append(self.MINIMUM)
                continue
            if decision.stop:
                result = current
            else:
                try:
                    result = self.editor.edit(current, decision.instruction, seed=self.editor_seed)
                except ToolError as e:  # the editor refused this instruction: no image
                    self.last.append(
                        {"answer": text, "decision": "editor_error", "error": str(e), "reward": 0.0}
                    )
                    rewards.append(self.MINIMUM)
                    continue
            verdict = self.judge(original, result, info)
            if self.source == "critic" and "seed" in info:
                exact.append(exact_sc(result, info))
                self.sc_pairs.append([None if verdict is None else verdict[0], exact[-1]])
            reward = (
                self.MINIMUM
                if verdict is None
                else self.lambda_sc * verdict[0] + self.lambda_pq * verdict[1]
            )
            if not decision.stop:
                reward = max(self.MINIMUM, reward - self.step_cost)
            elif verdict is not None and verdict[0] < self.DONE_SC:
                reward = max(self.MINIMUM, reward - self.early_stop_penalty)
            self.last.append(
                {
                    "answer": text,
                    "decision": "stop" if decision.stop else "step",
                    "sc_pq": verdict,
                    "reward": reward,
                }
            )
            rewards.append(reward)
        if log_metric is not None and exact:
            # the critic's reward against the exact score of the same images: reward hacking
            log_metric("exact_sc", sum(exact) / len(exact))
        return rewards


# -- training ------------------------------------------------------------------------------------
#: GRPO as MIRA describes it, pinned rather than left to TRL's defaults: the per-sequence mean
#: of the clipped surrogate (TRL 1.13 defaults to "dapo", a token-level normalisation), rewards
#: normalised within each group, one optimisation pass per generation, PPO clip 0.2
TRL_GRPO = {"loss_type": "grpo", "scale_rewards": "group", "num_iterations": 1, "epsilon": 0.2}
_LOGGED = (
    "step",
    "reward",
    "reward_std",
    "kl",
    "loss",
    "learning_rate",
    "completions/mean_length",
    "exact_sc",
    "epoch",
    # groups whose sampled answers all got one reward (no advantage), and sampling entropy
    "frac_reward_zero_std",
    "entropy",
)


def _save(trainer: Any, out: Path, summary: dict[str, Any]) -> None:
    """The adapter (``out/mira-planner``, swapped in whole) and ``out/grpo.json`` (atomic)."""
    from tools._io import replace_folder, write_atomic

    # no embedding layers are trained: "auto" asks the Hugging Face Hub about a base that is
    # not a local folder, a network call on a machine that may have none
    replace_folder(
        out / ADAPTER,
        lambda staging: cast(Any, trainer.model).save_pretrained(
            str(staging), save_embedding_layers=False
        ),
    )
    write_atomic(out / "grpo.json", json.dumps(summary, indent=2) + "\n")


class _Watchdog:
    """The stall watchdog: a daemon thread that, once a step has run longer than ``seconds``
    since the last ``arm``, writes every other thread's stack to stderr (``sys.__stderr__``),
    and again every ``seconds`` until re-armed or closed. It reads the stacks through
    ``sys._current_frames`` with the GIL held, which is safe while other threads run
    (``faulthandler``'s watchdog reads them without the GIL and crashed a test run). A thread
    stuck in C code that keeps the GIL silences it; CUDA waits and I/O release the GIL."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mira-grpo-watchdog", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        self._deadline = time.monotonic() + self.seconds

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def _run(self) -> None:
        import sys
        import traceback

        while not self._closed.wait(max(0.0, self._deadline - time.monotonic())):
            if time.monotonic() < self._deadline:
                continue  # re-armed while waiting
            names = {t.ident: t.name for t in threading.enumerate()}
            lines = [f"Timeout ({self.seconds} s): no GRPO step ended; every thread's stack:\n"]
            for ident, frame in sys._current_frames().items():
                if ident != threading.get_ident():
                    lines.append(f"Thread {names.get(ident, '?')} ({ident}), most recent last:\n")
                    lines += traceback.format_stack(frame)
            stream = sys.__stderr__
            if stream is not None:
                stream.write("".join(lines))
                stream.flush()
            self._deadline = time.monotonic() + self.seconds


def train_grpo(
    model: str | Path,
    out: str | Path,
    *,
    reward: Callable[..., list[float]],
    settings: GRPOSettings = GRPOSettings(),
    inputs: list[dict[str, Any]] | None = None,
    adapter: str | Path | None = None,
    clock_start: float | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """GRPO with a LoRA on the planner base at ``model`` (a micro VLM folder or any local
    Qwen2.5-VL / Qwen3-VL folder with its processor, e.g. a MIRA SFT checkpoint); writes the
    adapter to ``out/mira-planner`` and ``out/grpo.json`` (settings, TRL's loss settings, per
    step the reward's mean and std, KL, loss, learning rate, the share of groups with one
    reward and the sampling entropy), every ``save_every`` steps and
    at the end, also when training fails or is interrupted (``stopped`` says why).
    ``inputs``: GRPO inputs as ``planner_prompts`` makes them (default: ``states_per_seed``
    states of each of the train split's first ``train_seeds`` seeds after ``seed_offset``, in
    ``language``). ``reward``: a ``StepReward``, or any TRL reward function (called with
    ``prompts``, ``completions``, ``images`` and ``case``). ``adapter``: a planner LoRA folder
    (e.g. the shipped ``weights/micro-planner``) merged into the micro VLM ``model`` before the
    run, so GRPO starts from that planner; the new LoRA is on the merged weights (``mira-train
    merge-lora`` twice, then ``extract-lora`` against ``model``, gives one adapter for
    ``model``). ``settings.seconds`` counts from ``clock_start`` (a ``time.monotonic()``
    reading; default: this call), so loading and drawing the states spend the budget too."""
    clock_start = time.monotonic() if clock_start is None else clock_start
    settings.check()
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    from agent.microworld.splits import seeds as split_seeds
    from agent.train.vlm import lora_config
    from tools.models import LoadOptions, resolve_local
    from tools.vlm._qwen import _load

    out = Path(out)
    if inputs is None:
        seeds = list(split_seeds("train", settings.train_seeds, offset=settings.seed_offset))
        inputs = planner_prompts(
            seeds,
            language=settings.language,
            per_seed=settings.states_per_seed,
            edits=settings.planner_edits,
        )
    if not inputs:
        raise ValueError("inputs is empty: GRPO needs at least one planner state")
    name = getattr(reward, "__name__", type(reward).__name__)
    log(f"grpo: {len(inputs)} planner states, reward {name}")
    # a private copy through the project's loader (no torchvision needed); the shared
    # ``load_qwen_vl`` cache is not used: training changes the model
    path = resolve_local(model, what="GRPO planner")
    options = LoadOptions(device="cpu", dtype=settings.dtype).resolved()
    if adapter is None:
        vlm = _load(path, path, options, name=str(model))
    else:  # the planner adapter merged first (a micro VLM folder and a plain LoRA)
        from agent.train.lora_extract import merge_lora

        with tempfile.TemporaryDirectory(prefix="mira-grpo-start-") as start:
            merged = str(merge_lora(path, adapter, Path(start) / "planner"))
            vlm = _load(merged, merged, options, name=f"{model} + {adapter}")
        log(f"grpo: planner adapter {adapter} merged into {model}")
    policy, processor = vlm.model, vlm.processor
    processor.tokenizer.padding_side = "left"  # TRL generates from left-padded prompts
    scratch = tempfile.TemporaryDirectory(prefix="mira-grpo-")
    config = GRPOConfig(
        output_dir=scratch.name,  # nothing is saved there (save_strategy "no"): see _save
        learning_rate=settings.lr,
        beta=settings.beta,
        num_generations=settings.group,
        per_device_train_batch_size=settings.group * settings.prompts_per_step,
        gradient_accumulation_steps=1,
        max_steps=settings.steps,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # below 1: a fraction of max_steps (MIRA: warmup 0.1)
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=settings.device == "cpu",
        bf16=settings.dtype == "bfloat16",
        seed=settings.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        gradient_checkpointing=False,  # a micro model: memory is no issue, time is
        **TRL_GRPO,
    )
    lora = lora_config(settings.lora_r)  # the critic's: the language model's projections only
    lora.lora_alpha = settings.lora_alpha
    lora.task_type = "CAUSAL_LM"
    started = time.monotonic()

    def summary(stopped: str) -> dict[str, Any]:
        history = [
            {k: v for k, v in row.items() if k in _LOGGED}
            for row in trainer.state.log_history
            if "reward" in row
        ]
        return {
            "model": str(model),
            "adapter": None if adapter is None else str(adapter),
            "settings": asdict(settings),
            "trl": {**TRL_GRPO, "warmup": 0.1, "scheduler": "cosine"},
            "steps": trainer.state.global_step,
            # a wall-clock budget may end the run before the cosine schedule does
            "schedule_complete": trainer.state.global_step >= settings.steps,
            "stopped": stopped,
            "seconds": round(time.monotonic() - started, 1),  # training only: s per step
            "reward": name,
            "inputs": len(inputs),
            "history": history,
            # a critic reward's [critic SC, exact SC] of every judged sample (StepReward)
            "sc_pairs": list(getattr(reward, "sc_pairs", [])),
        }

    class Progress(TrainerCallback):
        """Stops after the step that passes ``settings.seconds``; saves every ``save_every``
        steps and at that stop, once the step's metrics are logged (``on_step_end`` comes
        before the trainer logs the step), so a run killed while winding down keeps it."""

        due: str | None = None  # the save the step that ended owes: "running" or "seconds"

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if watchdog is not None:
                watchdog.arm()  # the next step has its own time
            if settings.seconds is not None and time.monotonic() - clock_start >= settings.seconds:
                control.should_training_stop = True
                self.due = "seconds"
            elif state.global_step % settings.save_every == 0:
                self.due = "running"

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.due is not None:
                _save(trainer, out, summary(self.due))
                self.due = None

    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[cast(Any, reward)],
        args=config,
        train_dataset=Dataset.from_list(inputs),  # images become datasets' Image feature
        processing_class=processor,
        peft_config=lora,
        callbacks=[Progress()],
    )
    watchdog = None if settings.stall_seconds is None else _Watchdog(settings.stall_seconds)
    try:
        with scratch:
            trainer.train()
    except BaseException as e:  # a crash or an interrupt still leaves the steps done so far
        if trainer.state.global_step > 0:
            _save(trainer, out, summary(f"error: {type(e).__name__}: {e}"))
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
    stopped = "steps" if trainer.state.global_step >= settings.steps else "seconds"
    result = summary(stopped)
    _save(trainer, out, result)
    log(f"grpo: {result['steps']} steps in {result['seconds']} s")
    return result


def settings_for(**changes: Any) -> GRPOSettings:
    """``GRPOSettings`` with ``changes``, checked."""
    settings = replace(GRPOSettings(), **changes)
    settings.check()
    return settings
