"""``mira-bench``: run editing strategies over a dataset, score them, write a report.

    mira-bench [--dataset microworld|PATH] [--n N] [--split benchmark|validation|test]
               [--offset K] [--language train|heldout] [--edits N|LO-HI] [--size PX]
               [--strategy single-shot,best-of-n,agent] [--budget N] [--seed S]
               [--planner oracle|heuristic|NAME] [--editor oracle|noisy|NAME]
               [--critic oracle|noisy|NAME] [--grounder oracle|NAME] [--critic-error E[,E...]]
               [--p-wrong P] [--p-bleed P] [--p-noop P] [--preset NAME] [--max-steps N]
               [--max-retries N] [--out DIR] [--html-samples K] [--quiet]
               [--ray [ADDRESS]] [--ray-workers N]

Datasets: ``microworld`` (the procedural benchmark of ``agent.microworld``: exact ground
truth; cases are the seeds ``--offset .. --offset+n-1`` of the ``--split`` range, benchmark by
default, words from the ``--language`` split), or a folder / JSONL of (image, instruction,
optional masks and target) so real benchmarks plug in (they run with ``--preset``'s backends).

The protocol cannot flatter the agent: ``best-of-n`` (the full instruction, ``--budget`` tries
with new seeds, the same critic picks) and ``agent`` get the same editor-call budget
(``--budget``, default 10; the agent's run ends when it is spent); ``single-shot`` is one call.
``roundtrip`` is the reference ceiling beside them: the editor's autoencoder round trip of the
ground truth (micro-world, a FLUX-family diffusion editor such as ``micro-editor``; marked an
upper bound, as it reads the truth).
Every component can be swapped: ``oracle`` (reads the scene truth and the case's structured
edits: rows using one are upper bounds, marked in the table), ``noisy`` (editor: a model's
mistakes at set rates; critic: the oracle critic with its verdict flipped at rate
``--critic-error``, deterministically per input; a comma list gives one row per rate),
``heuristic`` (planner: splits the words), or a backend name of ``tools.registry`` / a preset
name (its backend for that role). Every result keeps its trace (the agent's steps, the
best-of-n tries).

Writes into ``--out``: ``options.json`` (the run's options: a rerun with other options is
refused, so records of two setups never mix; ``--n`` may grow), ``results.jsonl`` (one line
per sample and row, appended and flushed as each finishes; a rerun skips what is there, so an
interrupted run resumes), ``images/<id>/``, ``summary.md`` (the table, also printed) and
``index.html`` (source / ground truth / result thumbnails for the first ``--html-samples``
samples).

``--ray`` spreads the runs over Ray actors (``agent/distributed.py``): the same records in the
same file, resumable the same way; without it nothing changes.

Exit status: 0 done; 2 a bad option (or a strategy the dataset cannot run); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.config import PRESETS
from tools._io import write_atomic

if TYPE_CHECKING:
    from PIL import Image

    from agent.microworld.truth import Case

__all__ = [
    "main",
    "build_parser",
    "Sample",
    "Row",
    "rows_of",
    "microworld_samples",
    "folder_samples",
    "jsonl_samples",
    "run_bench",
    "summarise",
    "STRATEGIES",
]

PROG = "mira-bench"
STRATEGIES = ("single-shot", "best-of-n", "agent", "mirage", "mira+mirage", "roundtrip")
#: Rows with no critic: one row each, whatever ``--critic-error`` lists. ``roundtrip`` is no
#: strategy but a reference ceiling: the editor's autoencoder round trip of the ground truth
#: (micro-world, a FLUX-family diffusion editor); it reads the truth, so it is marked an upper
#: bound.
NO_CRITIC = ("single-shot", "roundtrip")
#: Strategies that need a diffusion pipeline to regionalise (MIRAGE): a preset's editor, or on
#: the micro-world a diffusion editor backend (e.g. ``micro-editor``) with a VLM grounder.
REGIONAL = ("mirage", "mira+mirage")
RESULTS = "results.jsonl"
#: The options of the run in ``--out`` (all but --out, --quiet, --html-samples, --n).
OPTIONS = "options.json"


class _Refused(Exception):
    """A bad option, reported as one line and exit status 2."""


# -- datasets ---------------------------------------------------------------------------------
@dataclass
class Sample:
    """One benchmark input. ``case`` is set for micro-world samples (exact ground truth);
    external samples may carry ``masks`` (paths of single-channel PNGs, nonzero = where an
    edit is allowed; scored by their bounding boxes) and a ``target`` image path."""

    id: str
    instruction: str
    load: Callable[[], Image.Image] = field(repr=False)
    case: Case | None = None
    masks: list[Path] = field(default_factory=list)
    target: Path | None = None


def microworld_samples(
    n: int,
    *,
    split: str = "benchmark",
    offset: int = 0,
    n_edits: int | tuple[int, int] = 3,
    size: int = 224,
    language: str = "train",
) -> Iterator[Sample]:
    """The micro-world cases of seeds ``offset .. offset+n-1`` of ``split``'s seed range
    (``agent.microworld.splits``), ids ``mw-<seed>``, words from ``language``."""
    from agent.microworld.render import render
    from agent.microworld.splits import seeds
    from agent.microworld.truth import make_case

    for seed in seeds(split, n, offset=offset):  # type: ignore[arg-type]
        case = make_case(seed, n_edits=n_edits, size=size, language=language)  # type: ignore[arg-type]
        yield Sample(
            id=case.id,
            instruction=case.instruction,
            load=lambda case=case: render(case.scene),
            case=case,
        )


def _opener(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")

    return load


def folder_samples(folder: str | os.PathLike[str]) -> Iterator[Sample]:
    """``X.png``/``.jpg``/``.webp`` with its instruction in ``X.txt``; optional masks
    ``X.mask*.png`` and target ``X.target.png``."""
    root = Path(folder)
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp") or "." in path.stem:
            continue
        text = path.with_suffix(".txt")
        if not text.is_file():
            raise _Refused(f"{path} has no instruction file {text.name}")
        target = path.with_name(f"{path.stem}.target.png")
        yield Sample(
            id=path.stem,
            instruction=text.read_text().strip(),
            load=_opener(path),
            masks=sorted(root.glob(f"{path.stem}.mask*.png")),
            target=target if target.is_file() else None,
        )


def jsonl_samples(path: str | os.PathLike[str]) -> Iterator[Sample]:
    """One JSON object a line: ``image``, ``instruction``, optional ``id``, ``masks`` (list of
    paths) and ``target``; paths relative to the file's folder."""
    path = Path(path)
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        image = path.parent / row["image"]
        yield Sample(
            id=str(row.get("id", i)),
            instruction=row["instruction"],
            load=_opener(image),
            masks=[path.parent / m for m in row.get("masks", [])],
            target=path.parent / row["target"] if row.get("target") else None,
        )


# -- strategies -------------------------------------------------------------------------------
@dataclass
class Outcome:
    image: Image.Image
    steps: int
    stop_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: the agent's whole output (full step records with image refs), for the trajectory page;
    #: not written into results.jsonl.
    trajectory: dict[str, Any] | None = None


@dataclass(frozen=True)
class Row:
    """One row of the table: a strategy run with one critic error rate."""

    label: str
    strategy: str
    epsilon: float | None = None


def rows_of(strategies: Sequence[str], critic: str, errors: Sequence[float]) -> list[Row]:
    """The table's rows: single-shot once (it has no critic), every other strategy once per
    critic error rate when the critic is ``noisy``."""
    rows = []
    for strategy in strategies:
        if critic != "noisy" or strategy in NO_CRITIC:
            rows.append(Row(strategy, strategy))
            continue
        for eps in errors:
            label = strategy if len(errors) == 1 else f"{strategy} (critic error {eps:g})"
            rows.append(Row(label, strategy, eps))
    return rows


def _upper_bound(row: Row, args: argparse.Namespace) -> bool:
    """Whether a micro-world row uses an oracle component (its number is an upper bound): the
    editor, the critic (a noisy one at error 0 is the oracle) for rows that use one, the
    planner for agent rows. (The grounder only serves MIRAGE, which the micro-world refuses.)
    The round trip of the ground truth reads the truth: always an upper bound."""
    if row.strategy == "roundtrip":
        return True
    used = [args.editor]
    if row.strategy != "single-shot":
        used.append("oracle" if args.critic == "noisy" and row.epsilon == 0 else args.critic)
    if row.strategy not in ("single-shot", "best-of-n"):
        used.append(args.planner)
    return "oracle" in used


class _Budgeted:
    """An editor that allows ``budget`` calls per run (``reset`` starts a run); the call after
    the last raises ``FatalToolError``, which ends an agent run on its last accepted image."""

    def __init__(self, editor: Any, budget: int) -> None:
        self.editor, self.budget, self.calls = editor, budget, 0
        self.name = getattr(editor, "name", type(editor).__name__)

    def reset(self) -> None:
        self.calls = 0

    def edit(self, image: Image.Image, instruction: str, **kwargs: Any) -> Any:
        from tools.errors import FatalToolError

        if self.calls >= self.budget:
            raise FatalToolError(f"editor-call budget of {self.budget} spent", tool=self.name)
        self.calls += 1
        return self.editor.edit(image, instruction, **kwargs)


def _component(role: str, name: str, **options: Any) -> Any:
    """A backend from ``tools.registry`` by name, or a preset's backend for ``role``, built
    with ``options``."""
    from tools.registry import available, build

    if name in PRESETS:
        value = PRESETS[name]["editors" if role == "editor" else role]
        name = value[0] if isinstance(value, list) else value  # type: ignore[assignment,index]
    if name not in available(role):  # type: ignore[arg-type]
        raise ValueError(
            f"--{role} {name!r}: not oracle/noisy/heuristic, a preset or a {role} "
            f"backend ({', '.join(available(role))})"
        )  # type: ignore[arg-type]
    try:
        return build(role, name, **options)  # type: ignore[arg-type]
    except TypeError as exc:  # only a backend that has no device option: other errors propagate
        if "device" in options and "unexpected keyword argument 'device'" in str(exc):
            raise ValueError(
                f"--device {options['device']!r}: --{role} {name!r} takes none"
            ) from None
        raise


class _Runner:
    """Builds the tools once and runs one row on one sample."""

    def __init__(self, args: argparse.Namespace, out: Path, rows: Sequence[Row] = ()) -> None:
        from agent.config import AgentConfig
        from tools.artifacts import ArtifactStore

        self.args = args
        self.rows = {r.label: r for r in rows}
        self.store = ArtifactStore(out / "artifacts")
        options: dict[str, Any] = {"seed": args.seed}
        if args.max_retries is not None:
            options["max_retries_per_step"] = args.max_retries
        # the rows name the loop settings themselves (a preset's, e.g. micro's, are not taken):
        # a row is what its options say, and resuming a run cannot change it
        options["one_shot_first"] = bool(args.one_shot_first)
        options["stop_when_satisfied"] = args.stop_when_satisfied
        self.microworld = args.dataset == "microworld"
        self.budget = args.budget
        #: the micro-world's learned backends' placement (--device); oracle and noisy tools
        #: have none
        self.placement: dict[str, Any] = {} if args.device is None else {"device": args.device}
        self._critics: dict[float | None, Any] = {}
        if self.microworld:
            from agent.microworld.tools import World

            # beside a learned editor the oracle tools match its images to the case's states
            self.world = World(snap=args.editor not in ("oracle", "noisy"))
            # the editor budget is the binding limit: steps and tool calls may use all of it
            options.setdefault("max_tool_calls", 10_000)
            options["max_steps"] = args.max_steps if args.max_steps is not None else args.budget
            self.config = AgentConfig(**options)
            self.editor = self._editor(args.editor)
            self.planner = self._planner(args.planner)
            self.grounder = self._grounder(args.grounder)
        else:
            from tools.registry import build

            if args.max_steps is not None:
                options["max_steps"] = args.max_steps
            self.config = AgentConfig(preset=args.preset, **options)
            self.editor = build("editor", self.config.editors[0])
        self.budgeted = _Budgeted(self.editor, self.budget)
        self._agents: dict[str, Any] = {}
        self._sampler: Any = None  # the roundtrip row's (built by _roundtrip_sampler)
        for row in rows:  # build critics now, so a bad name is refused before any work
            if self.microworld and row.strategy not in NO_CRITIC:
                self.critic(row.epsilon)
            if row.strategy == "roundtrip":
                self._roundtrip_sampler()  # refused now when the editor has no autoencoder
            if self.microworld and row.strategy in REGIONAL:
                if not getattr(self.editor, "supports_mirage", False):
                    raise ValueError(
                        f"--strategy {row.strategy!r} needs a diffusion editor with a MIRAGE "
                        f"sampler (FLUX.2, Kontext, Qwen-Image-Edit, e.g. micro-editor); "
                        f"--editor {args.editor!r} has none"
                    )
                if not hasattr(type(self.grounder), "vlm"):
                    raise ValueError(
                        f"--strategy {row.strategy!r} parses and grounds with the grounder's "
                        f"VLM (e.g. --grounder micro-grounder); --grounder {args.grounder!r} "
                        f"has none"
                    )

    def _roundtrip_sampler(self) -> Any:
        """The MIRAGE sampler whose ``roundtrip`` the ``roundtrip`` row uses (built once);
        ``ValueError`` naming the editor when it has none."""
        if self._sampler is None:
            if not self.microworld:
                raise ValueError(
                    "--strategy 'roundtrip' needs the micro-world's ground truth "
                    f"(--dataset microworld); --dataset {self.args.dataset!r} has none"
                )
            sampler = None
            if getattr(self.editor, "supports_mirage", False):
                sampler, _ = self.editor.mirage_sampler()
            if not hasattr(sampler, "roundtrip"):
                raise ValueError(
                    "--strategy 'roundtrip' needs a FLUX-family diffusion editor (its "
                    f"autoencoder; e.g. micro-editor); --editor {self.args.editor!r} has none"
                )
            self._sampler = sampler
        return self._sampler

    # -- components (micro-world) ------------------------------------------------------------
    def _editor(self, name: str) -> Any:
        from agent.microworld.tools import NoisyEditor, OracleEditor

        if name == "oracle":
            return OracleEditor(self.world)
        if name == "noisy":
            a = self.args
            return NoisyEditor(self.world, p_wrong=a.p_wrong, p_bleed=a.p_bleed, p_noop=a.p_noop)
        return _component("editor", name, **self.placement)

    def _planner(self, name: str) -> Any:
        from agent.microworld.tools import HeuristicPlanner, OraclePlanner

        lora = self.args.planner_lora
        if lora is not None and name != "micro-planner":
            raise ValueError(
                f"--planner-lora {lora!r} is a micro planner adapter: it needs --planner "
                f"micro-planner, got --planner {name!r}"
            )
        if name == "oracle":
            return OraclePlanner(self.world)
        if name == "heuristic":
            return HeuristicPlanner()
        if lora is None:  # the backend's default: the shipped adapter on the shipped base
            return _component("planner", name, **self.placement)
        return _component("planner", name, lora=False if lora == "none" else lora, **self.placement)

    def _grounder(self, name: str) -> Any:
        from agent.microworld.tools import OracleGrounder

        if name == "oracle":
            return OracleGrounder(self.world)
        return _component("grounder", name, **self.placement)

    def critic(self, epsilon: float | None) -> Any:
        if epsilon not in self._critics:
            from agent.microworld.tools import NoisyCritic, OracleCritic

            name = self.args.critic if self.microworld else None
            if name == "oracle":
                critic = OracleCritic(self.world, tolerant=self.world.snap)
            elif name == "noisy":
                critic = NoisyCritic(
                    self.world,
                    epsilon=epsilon or 0.0,
                    seed=self.args.seed,
                    threshold=self.config.min_step_score,
                )
            elif name is not None:
                critic = _component("critic", name, **self.placement)
            else:
                from tools.registry import build

                critic = build("critic", self.config.critic)
            self._critics[epsilon] = critic
        return self._critics[epsilon]

    def source(self, sample: Sample) -> Image.Image:
        return self.world.add(sample.case) if self.microworld else sample.load()

    # -- strategies ---------------------------------------------------------------------------
    def __call__(self, label: str, sample: Sample, source: Image.Image) -> Outcome:
        row = self.rows.get(label, Row(label, label))
        strategy = row.strategy
        self.budgeted.reset()
        if strategy == "single-shot":
            image = self.budgeted.edit(
                source,
                sample.instruction,
                seed=self.config.seed,
                num_inference_steps=self.config.num_inference_steps,
                guidance_scale=self.config.guidance_scale,
            )
            return Outcome(image=image, steps=1, stop_reason="single_shot")
        if strategy == "best-of-n":
            return self._best_of_n(row, sample, source)
        if strategy == "roundtrip":
            from agent.microworld.truth import intermediate

            assert sample.case is not None  # _roundtrip_sampler refused other datasets
            image = self._roundtrip_sampler().roundtrip(intermediate(sample.case))
            return Outcome(image=image, steps=0, stop_reason="roundtrip")
        if label not in self._agents:  # "agent" is the config's own strategy (mira)
            from agent.config import AgentConfig
            from agent.factory import create_edit_agent

            config = (
                self.config
                if strategy == "agent"
                else AgentConfig.model_validate(
                    {**self.config.model_dump(exclude_unset=True), "strategy": strategy}
                )
            )
            # MIRAGE needs the diffusion editor itself (it regionalises its pipeline), so its
            # rows are bounded by max_steps, not wrapped in the editor-call budget
            components: dict[str, Any] = {} if strategy in REGIONAL else {"editors": self.budgeted}
            if self.microworld and strategy in REGIONAL:
                components["editors"] = self.editor
            if self.microworld:
                components.update(
                    planner=self.planner, grounder=self.grounder, critic=self.critic(row.epsilon)
                )
            self._agents[label] = create_edit_agent(config, artifacts=self.store, **components)
        out = self._agents[label].invoke(
            {"image": self.store.put(source), "instruction": sample.instruction}
        )
        edits = [s for s in out["steps"] if s["kind"] == "edit"]
        stop = out["stop_reason"]
        if stop == "error" and self.budgeted.calls >= self.budget:
            stop = "editor_budget"
        trace = [
            {k: s.get(k) for k in ("kind", "step", "attempt", "accepted", "reason")}
            | {
                "instruction": (s.get("args") or {}).get("instruction"),
                "overall": ((s.get("scores") or {}).get("step") or {}).get("overall"),
            }
            for s in out["steps"]
        ]
        return Outcome(
            image=self.store.open(out["result"]),
            # MIRAGE rows edit through the pipeline itself, not the budget wrapper: count their
            # edit steps (one regional call each) instead of the wrapper's calls
            steps=len(edits) if strategy in REGIONAL else self.budgeted.calls,
            stop_reason=stop,
            extra={"accepted": sum(1 for s in edits if s["accepted"]), "trace": trace},
            trajectory=dict(out),
        )

    def _best_of_n(self, row: Row, sample: Sample, source: Image.Image) -> Outcome:
        """``budget`` tries of the full instruction (seeds seed, seed+1, ...); the critic's
        highest valid Overall wins (the first on ties; the first try when none is valid)."""
        critic = self.critic(row.epsilon)
        best, best_score, trace = None, None, []
        for k in range(self.budget):
            image = self.budgeted.edit(
                source,
                sample.instruction,
                seed=self.config.seed + k,
                num_inference_steps=self.config.num_inference_steps,
                guidance_scale=self.config.guidance_scale,
            )
            c = critic.critique(source, image, sample.instruction)
            trace.append(
                {
                    "try": k,
                    "seed": self.config.seed + k,
                    "valid": c.valid,
                    "overall": c.overall if c.valid else None,
                }
            )
            if best is None or (c.valid and (best_score is None or c.overall > best_score)):
                best, best_score = image, (c.overall if c.valid else None)
        return Outcome(
            image=best,
            steps=self.budgeted.calls,
            stop_reason="best_of_n",  # type: ignore[arg-type]
            extra={
                "trace": trace,
                "picked": max(range(len(trace)), key=lambda i: (trace[i]["overall"] or -1, -i)),
            },
        )


def _execute(runner: _Runner, strategy: str, sample: Sample, source: Image.Image) -> Outcome:
    """One run of one strategy (a seam for tests that count runs)."""
    return runner(strategy, sample, source)


# -- scoring ----------------------------------------------------------------------------------
def _score(sample: Sample, source: Image.Image, result: Image.Image) -> dict[str, Any]:
    from agent.microworld.scoring import score_case, score_edits

    if sample.case is not None:
        return score_case(sample.case, result).as_dict()
    if not sample.masks:
        return {}
    import numpy as np
    from PIL import Image

    boxes = []
    for path in sample.masks:  # each mask becomes its bounding box, like the micro-world's cells
        with Image.open(path) as im:
            ys, xs = np.nonzero(np.asarray(im.convert("L")) > 127)
        if len(xs):
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    if sample.target is None:  # no ground truth: only consistency means something
        expected = source
    else:
        with Image.open(sample.target) as im:
            expected = im.convert("RGB")
    out = score_edits(source, result, expected, boxes).as_dict()
    if sample.target is None:
        out.update(
            edits=[],
            pf=None,
            edits_passed=None,
            success=None,
            success_strict=None,
            success_tolerant=None,
        )
    return out


# -- files ------------------------------------------------------------------------------------
def load_results(path: Path) -> list[dict[str, Any]]:
    """The records of a results file. A line that does not parse (a run killed mid-write
    leaves a truncated last line) is dropped, and the file is rewritten without it so that
    appends start on a clean line."""
    if not path.is_file():
        return []
    records, bad = [], False
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
            if not line.endswith("\n") or not isinstance(record, dict):
                raise ValueError("incomplete line")
            records.append(record)
        except ValueError:
            bad = True
    if bad:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def _case(runner: _Runner, strategy: str, sample: Sample) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one strategy on one sample: its record and the images to save under
    ``images/<id>/`` (file name -> PIL image; the source and truth only if not there yet)."""
    source = runner.source(sample)
    t0 = time.perf_counter()
    outcome = _execute(runner, strategy, sample, source)
    elapsed = time.perf_counter() - t0
    files = {
        "source": "source.png",
        "result": f"{re.sub(r'[^A-Za-z0-9.-]+', '_', strategy).strip('_')}.png",
    }
    images: dict[str, Any] = {files["source"]: source, files["result"]: outcome.image}
    images[_PAGE] = _trajectory_page(runner, sample, strategy, source, outcome)
    if sample.case is not None:
        from agent.microworld.truth import intermediate

        files["truth"] = "truth.png"
        images["truth.png"] = intermediate(sample.case)
    record = {
        "id": sample.id,
        "strategy": strategy,
        "instruction": sample.instruction,
        "n_edits": len(sample.case.edits) if sample.case else None,
        "kinds": [e.kind for e in sample.case.edits] if sample.case else None,
        "seed": sample.case.seed if sample.case else None,
        "ref_kinds": list(sample.case.ref_kinds) if sample.case else None,
        "language": sample.case.language if sample.case else None,
        **_score(sample, source, outcome.image),
        "steps": outcome.steps,
        "stop_reason": outcome.stop_reason,
        "time_s": round(elapsed, 4),
        **outcome.extra,
        "images": {k: f"images/{sample.id}/{v}" for k, v in files.items()},
        "trajectory": f"trajectories/{sample.id}/{Path(files['result']).stem}.html",
        "finished_at": time.time(),
    }
    return record, images


def _save_images(out: Path, record: dict[str, Any], images: dict[str, Any]) -> None:
    """Save a run's images next to the results (the result always; source and truth once)."""
    images = dict(images)
    page = images.pop(_PAGE, None)
    if page is not None:  # the run's trajectory page, before the record that links to it
        (out / record["trajectory"]).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out / record["trajectory"], page.encode())
    folder = out / "images" / record["id"]
    folder.mkdir(parents=True, exist_ok=True)
    result = Path(record["images"]["result"]).name
    for name, image in images.items():
        if name == result or not (folder / name).exists():
            image.save(folder / name)


def _todo(
    samples: Sequence[Sample], strategies: Sequence[str], path: Path, quiet: bool
) -> list[tuple[str, Sample]]:
    """The runs of ``samples`` x ``strategies`` not in the results file yet."""
    done = {(r.get("strategy"), r.get("id")) for r in load_results(path)}
    todo = [(st, s) for s in samples for st in strategies if (st, s.id) not in done]
    if done and not quiet:
        print(
            f"{PROG}: resuming: {len(samples) * len(strategies) - len(todo)} of "
            f"{len(samples) * len(strategies)} runs already in {path}",
            file=sys.stderr,
        )
    return todo


def _progress(total: int, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="run",
        file=sys.stderr,
        disable=True if quiet else None,
        dynamic_ncols=True,
    )


def _records_of(
    samples: Sequence[Sample], strategies: Sequence[str], path: Path
) -> list[dict[str, Any]]:
    """The records of ``samples`` x ``strategies`` in the results file, in file order."""
    wanted = {(st, s.id) for s in samples for st in strategies}
    return [r for r in load_results(path) if (r.get("strategy"), r.get("id")) in wanted]


def run_bench(
    samples: Sequence[Sample],
    strategies: Sequence[str],
    out: Path,
    runner: _Runner,
    *,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run what is not in ``out/results.jsonl`` yet; returns the records of ``samples``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    todo = _todo(samples, strategies, path, quiet)
    with open(path, "a") as f, _progress(len(todo), quiet) as bar:
        for strategy, sample in todo:
            bar.set_postfix_str(f"{strategy} {sample.id}", refresh=False)
            record, images = _case(runner, strategy, sample)
            _save_images(out, record, images)
            f.write(json.dumps(record) + "\n")
            f.flush()
            bar.update(1)
    return _records_of(samples, strategies, path)


#: Key of a run's trajectory page (HTML text) among the files ``_case`` returns.
_PAGE = "<trajectory page>"


def _trajectory_page(
    runner: _Runner, sample: Sample, strategy: str, source: Image.Image, outcome: Outcome
) -> str:
    """The run's trajectory page (``agent/report.py``): the agent's whole trace, or the tries
    of a strategy that is not the agent's."""
    from agent.report import trajectory_html

    run = outcome.trajectory or {}
    notes = [] if run else [n for n in outcome.extra.get("trace") or [] if isinstance(n, dict)]
    return trajectory_html(
        title=f"{PROG}: {sample.id} / {strategy}",
        instruction=sample.instruction,
        source=run.get("source") or runner.store.put(source),
        result=run.get("result") or runner.store.put(outcome.image),
        steps=run.get("steps") or [],
        stop_reason=str(outcome.stop_reason),
        scores=run.get("scores"),
        elapsed_s=run.get("elapsed_s"),
        store=runner.store,
        notes=notes,
    )


# -- report -----------------------------------------------------------------------------------
def _mean(values: list[Any]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def summarise(
    records: list[dict[str, Any]], strategies: Sequence[str], *, upper_bound: Sequence[str] = ()
) -> str:
    """Markdown: one row per strategy (row label), then prompt following per edit type. Rows
    named in ``upper_bound`` say "yes" in the last column (they use an oracle component)."""
    lines = [
        "| strategy | samples | PF (edits done) | PF score | consistent | PSNR out of target (dB) "
        "| success | success (tolerant) | editor calls | time / sample (s) | upper bound |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    kinds: dict[str, dict[str, list[bool]]] = {}
    for strategy in strategies:
        rs = [r for r in records if r["strategy"] == strategy]
        if not rs:
            continue
        consistent = _mean([r.get("consistent") for r in rs])
        lines.append(
            " | ".join(
                [
                    f"| {strategy}",
                    str(len(rs)),
                    _fmt(_mean([r.get("edits_passed") for r in rs]), ".1%"),
                    _fmt(_mean([r.get("pf") for r in rs]), ".3f"),
                    _fmt(consistent, ".1%"),
                    _fmt(_mean([r.get("psnr") for r in rs]), ".1f"),
                    _fmt(_mean([r.get("success") for r in rs]), ".1%"),
                    _fmt(_mean([r.get("success_tolerant") for r in rs]), ".1%"),
                    _fmt(_mean([r["steps"] for r in rs]), ".2f"),
                    _fmt(_mean([r["time_s"] for r in rs]), ".3f"),
                    "yes" if strategy in upper_bound else "no",
                ]
            )
            + " |"
        )
        for r in rs:
            for e in r.get("edits") or []:
                kinds.setdefault(strategy, {}).setdefault(e["kind"], []).append(e["passed"])
    if kinds:
        names = sorted({k for per in kinds.values() for k in per})
        lines += [
            "",
            "Edits done, by type:",
            "",
            "| strategy | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for strategy, per in kinds.items():
            lines.append(
                f"| {strategy} | "
                + " | ".join(_fmt(_mean(per.get(k, [])), ".1%") for k in names)
                + " |"
            )
    lines += _picks(records, strategies)
    return "\n".join(lines) + "\n"


def _picks(records: list[dict[str, Any]], strategies: Sequence[str]) -> list[str]:
    """How each best-of-N row's critic chose: the cases where it gave every try one score
    (so the first try, the single shot, is kept) and those where it picked another try."""
    out = []
    for strategy in strategies:
        rs = [r for r in records if r["strategy"] == strategy and "picked" in r]
        if not rs:
            continue
        tied = sum(len({t["overall"] for t in r["trace"]}) == 1 for r in rs)
        other = sum(r["picked"] != 0 for r in rs)
        out.append(f"| {strategy} | {len(rs)} | {tied} | {other} |")
    if not out:
        return []
    return [
        "",
        "Best-of-N, how the critic chose:",
        "",
        "| strategy | samples | one score for every try | picked another try than the first |",
        "|---|---:|---:|---:|",
        *out,
    ]


def write_html(
    records: list[dict[str, Any]],
    samples: Sequence[Sample],
    strategies: Sequence[str],
    out: Path,
    *,
    limit: int,
) -> Path:
    """``out/index.html``: the summary table, then a grid of source / ground truth / each
    strategy's result; every result links to its trajectory page; ``#failures`` shows only
    the samples some strategy failed."""
    from agent.report import bench_index_html

    by = {(r["id"], r["strategy"]): r for r in records}
    summary = []
    for st in strategies:
        rs = [r for r in records if r["strategy"] == st]
        if not rs:
            continue
        summary.append(
            {
                "strategy": st,
                "samples": len(rs),
                "success": _fmt(_mean([r.get("success") for r in rs]), ".1%"),
                "edits done": _fmt(_mean([r.get("edits_passed") for r in rs]), ".1%"),
                "consistent": _fmt(_mean([r.get("consistent") for r in rs]), ".1%"),
                "editor calls": _fmt(_mean([r["steps"] for r in rs]), ".2f"),
                "time / sample (s)": _fmt(_mean([r["time_s"] for r in rs]), ".3f"),
                "failures": sum(1 for r in rs if r.get("success") is False),
            }
        )
    rows = []
    for sample in samples[:limit]:
        first = next((by[(sample.id, st)] for st in strategies if (sample.id, st) in by), None)
        if first is None:
            continue
        cells = [
            {"image": first["images"].get("source"), "link": None, "verdict": "", "note": ""},
            {"image": first["images"].get("truth"), "link": None, "verdict": "", "note": ""},
        ]
        failed = False
        for st in strategies:
            r = by.get((sample.id, st))
            if r is None:
                cells.append({"image": None, "link": None, "verdict": "", "note": ""})
                continue
            done = sum(e["passed"] for e in r.get("edits") or [])
            verdict = {True: "success", False: "fail", None: ""}[r.get("success")]
            failed = failed or r.get("success") is False
            steps = f"{r['steps']} step{'' if r['steps'] == 1 else 's'}"
            note = (
                f"{done}/{len(r.get('edits') or [])} edits, "
                f"{'consistent' if r.get('consistent') else 'changed elsewhere'}, {steps}"
                if r.get("edits")
                else steps
            )
            link = r.get("trajectory")
            cells.append(
                {
                    "image": r["images"]["result"],
                    "link": link if link and (out / link).is_file() else None,
                    "verdict": verdict,
                    "note": note,
                }
            )
        rows.append(
            {"id": sample.id, "instruction": sample.instruction, "failed": failed, "cells": cells}
        )
    page = bench_index_html(
        title=f"{PROG}: {len(rows)} of {len(samples)} samples",
        summary=summary,
        columns=["source", "ground truth", *strategies],
        rows=rows,
        total=len(samples),
    )
    path = out / "index.html"
    write_atomic(path, page.encode())
    return path


# -- the command ------------------------------------------------------------------------------
def _edits(text: str) -> int | tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        value = (int(lo), int(hi)) if hi else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LO-HI, got {text!r}") from None
    bounds = value if isinstance(value, tuple) else (value, value)
    if not 1 <= bounds[0] <= bounds[1] <= 5:
        raise argparse.ArgumentTypeError(f"edits must lie in 1..5, got {text!r}")
    return value


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and ``--ray-workers N`` (agent/distributed.py)."""
    ray = p.add_argument_group("Ray (pip install 'mira-agent[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="spread the runs over Ray actors, one per GPU (or CPU slot), each loading its "
        "models once: a new local cluster, or the one at ADDRESS ('auto', 'ray://host:10001')",
    )
    ray.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="number of Ray actors (default: the cluster's GPUs, else its CPUs)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run editing strategies over a dataset "
        "and score them (see docs/microworld.md).",
    )
    p.add_argument(
        "--dataset",
        default="microworld",
        help="'microworld' (default), a folder of X.png + X.txt, or a .jsonl file",
    )
    p.add_argument("--out", default="bench_out", help="output folder (default: %(default)s)")
    p.add_argument(
        "--strategy",
        default="single-shot,best-of-n,agent",
        help=f"comma-separated, of {', '.join(STRATEGIES)} (default: %(default)s)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=10,
        help="editor calls per sample for best-of-n and agent (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="tool seed: editor seeds, the noisy critic's errors (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="micro-world: where the learned backends run, cpu, cuda or cuda:N (default: "
        "each backend's own; the micro models' is cpu)",
    )
    mw = p.add_argument_group("micro-world")
    mw.add_argument("--n", type=int, default=100, help="number of cases (default: %(default)s)")
    mw.add_argument(
        "--split",
        choices=("benchmark", "validation", "test"),
        default="benchmark",
        help="seed range the cases come from (default: %(default)s; never train)",
    )
    mw.add_argument("--offset", type=int, default=0, help="first seed's offset in the split")
    mw.add_argument(
        "--language",
        choices=("train", "heldout"),
        default="train",
        help="language split of the instructions (default: %(default)s)",
    )
    mw.add_argument("--edits", type=_edits, default=3, help="edits per case: N or LO-HI in 1..5")
    mw.add_argument(
        "--size", type=int, default=224, help="canvas pixels, 64..512 (default: %(default)s)"
    )
    mw.add_argument("--planner", default="oracle", help="oracle | heuristic | backend/preset name")
    mw.add_argument(
        "--planner-lora",
        default=None,
        help="the planner adapter of --planner micro-planner: a folder (mira-train grpo's "
        "mira-planner, extract-lora's), or 'none' for the shared weights' own planner "
        "(default: the shipped weights/micro-planner on the shipped micro VLM)",
    )
    mw.add_argument("--editor", default="noisy", help="oracle | noisy | backend/preset name")
    mw.add_argument("--critic", default="oracle", help="oracle | noisy | backend/preset name")
    mw.add_argument("--grounder", default="oracle", help="oracle | backend/preset name")
    mw.add_argument(
        "--critic-error",
        default="0.1",
        help="noisy critic: rate(s) of wrong verdicts, comma-separated (default: %(default)s)",
    )
    mw.add_argument("--p-wrong", type=float, default=0.15, help="noisy: edit the wrong object")
    mw.add_argument("--p-bleed", type=float, default=0.15, help="noisy: also edit a neighbour")
    mw.add_argument("--p-noop", type=float, default=0.1, help="noisy: change nothing")
    ext = p.add_argument_group("folder / JSONL datasets")
    ext.add_argument("--preset", choices=sorted(PRESETS), default="dry-run")
    agent = p.add_argument_group("agent")
    agent.add_argument("--max-steps", type=int, default=None, help="AgentConfig.max_steps")
    agent.add_argument(
        "--max-retries", type=int, default=None, help="AgentConfig.max_retries_per_step"
    )
    agent.add_argument(
        "--stop-when-satisfied",
        type=float,
        default=None,
        help="AgentConfig.stop_when_satisfied: end the loop once the critic's full-instruction "
        "Overall reaches this (0..10; rows agent, mirage and mira+mirage)",
    )
    agent.add_argument(
        "--one-shot-first",
        action="store_true",
        default=None,  # absent from the options of runs made before it existed: None resumes
        help="AgentConfig.one_shot_first: the loop's first edit is the whole instruction, then "
        "the planner corrects or stops (rows agent and mira+mirage; mirage is one step anyway)",
    )
    p.add_argument("--html-samples", type=int, default=24, help="samples shown in index.html")
    add_ray_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mira-bench`` with ``argv`` (``sys.argv[1:]`` when None); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args, list(sys.argv[1:] if argv is None else argv))
    except _Refused as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


#: Options that do not change the records, so a rerun may differ in them: what is shown, how
#: many cases (--n may grow: a record is keyed by its sample), and where cases run (one
#: process or Ray workers give equal records, tests/test_ray.py).
_NEUTRAL_OPTIONS = ("out", "quiet", "html_samples", "n", "ray", "ray_workers")
#: AgentConfig field -> the option that sets it (for one-line validation messages).
_OPTION_OF = {
    "max_steps": "--max-steps",
    "max_retries_per_step": "--max-retries",
    "seed": "--seed",
    "stop_when_satisfied": "--stop-when-satisfied",
}


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        option = _OPTION_OF.get(field, field)
        parts.append(f"{option} {error.get('input')!r}: {error.get('msg', 'invalid value')}")
    return " ".join("; ".join(parts).split())


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {k: v for k, v in sorted(vars(args).items()) if k not in _NEUTRAL_OPTIONS},
            default=str,
        )
    )


def _check_options(args: argparse.Namespace, out: Path) -> None:
    """Refuse to resume a run in ``out`` made with other options (its records would mix)."""
    path = out / OPTIONS
    if not path.is_file():
        if (out / RESULTS).is_file() and (out / RESULTS).stat().st_size:
            raise _Refused(
                f"--out {str(out)!r} holds results but no {OPTIONS}: its options are "
                "unknown, so it cannot be resumed; choose a new --out"
            )
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _Refused(f"--out {str(out)!r}: cannot read {OPTIONS}: {exc}") from None
    now = _options(args)
    changed = [
        f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
    ]
    if changed:
        raise _Refused(
            f"--out {str(out)!r} holds a run made with other options: {', '.join(changed)}; "
            "rerun with the same options to resume, or choose a new --out"
        )


def _save_options(args: argparse.Namespace, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OPTIONS).is_file():
        write_atomic(out / OPTIONS, json.dumps(_options(args), indent=2) + "\n")


def _resolve_planner_lora(args: argparse.Namespace) -> None:
    """Name in ``args.planner_lora`` the adapter the micro planner will run with, so the run's
    options record it: the one given, else the shipped planner adapter when the micro VLM is
    the base it was cut against, else "none" (the shared weights' own planner)."""
    if args.planner_lora is not None:
        return
    from agent.micro import micro_vlm_folder, shipped_planner_lora

    try:
        shipped = shipped_planner_lora(micro_vlm_folder())
    except FileNotFoundError as exc:
        raise _Refused(" ".join(str(exc).split())) from None
    args.planner_lora = "none" if shipped is None else str(shipped)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    for s in strategies:
        if s not in STRATEGIES:
            raise _Refused(f"--strategy {s!r}: one of {', '.join(STRATEGIES)}")
        if s in REGIONAL and args.dataset == "microworld" and args.editor in ("oracle", "noisy"):
            raise _Refused(
                f"--strategy {s!r} runs MIRAGE, which needs a FLUX diffusion editor; the "
                f"micro-world's {args.editor} editor is not one. Name a diffusion editor "
                "backend (e.g. --editor micro-editor --grounder micro-grounder), or use a "
                "folder/JSONL --dataset with a --preset whose editor is FLUX.2 or Kontext"
            )
    loop_rows = [s for s in strategies if s in ("agent", *REGIONAL)]
    for option, value in (
        ("--one-shot-first", args.one_shot_first),
        ("--stop-when-satisfied", args.stop_when_satisfied),
    ):
        if value is not None and not loop_rows:
            raise _Refused(
                f"{option} sets the loop (rows agent, mirage, mira+mirage); --strategy "
                f"{args.strategy!r} has none"
            )
    if not strategies:
        raise _Refused("--strategy names no strategy")
    if args.planner_lora is not None and args.dataset != "microworld":
        raise _Refused(
            f"--planner-lora {args.planner_lora!r} serves --planner micro-planner on the "
            f"micro-world; --dataset {args.dataset!r} takes its planner from --preset"
        )
    if args.budget < 1:
        raise _Refused(f"--budget must be >= 1, got {args.budget}")
    if args.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise _Refused(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.device is not None and args.dataset != "microworld":
        raise _Refused(
            f"--device places the micro-world's learned backends; --dataset {args.dataset!r} "
            "runs the preset's backends, placed by their own defaults"
        )
    if args.ray_workers is not None and (args.ray is None or args.ray_workers < 1):
        raise _Refused(f"--ray-workers must be >= 1 and go with --ray, got {args.ray_workers}")
    try:
        errors = [float(e) for e in args.critic_error.split(",") if e.strip()]
    except ValueError:
        raise _Refused(
            f"--critic-error must be numbers in [0, 1], got {args.critic_error!r}"
        ) from None
    if not errors or not all(0 <= e <= 1 for e in errors):
        raise _Refused(f"--critic-error must be numbers in [0, 1], got {args.critic_error!r}")
    if args.dataset == "microworld":
        if args.n < 1:
            raise _Refused(f"--n must be >= 1, got {args.n}")
        if args.offset < 0:
            raise _Refused(f"--offset must be >= 0, got {args.offset}")
        if not 64 <= args.size <= 512:
            raise _Refused(f"--size must be in 64..512, got {args.size}")
        samples = list(
            microworld_samples(
                args.n,
                split=args.split,
                offset=args.offset,
                n_edits=args.edits,
                size=args.size,
                language=args.language,
            )
        )
        rows = rows_of(strategies, args.critic, errors)
        upper = [r.label for r in rows if _upper_bound(r, args)]
    else:
        path = Path(args.dataset)
        if path.is_dir():
            samples = list(folder_samples(path))
        elif path.suffix == ".jsonl" and path.is_file():
            samples = list(jsonl_samples(path))
        else:
            raise _Refused(
                f"--dataset {args.dataset!r}: not 'microworld', a folder or a .jsonl file"
            )
        rows, upper = [Row(s, s) for s in strategies], []
    if args.dataset == "microworld" and args.planner == "micro-planner":
        _resolve_planner_lora(args)
    out = Path(args.out)
    _check_options(args, out)
    try:
        runner = _Runner(args, out, rows)
    except ValidationError as exc:
        raise _Refused(_validation_message(exc)) from None
    except ValueError as exc:
        raise _Refused(" ".join(str(exc).split())) from None
    _save_options(args, out)
    labels = [r.label for r in rows]
    if args.ray is None:
        records = run_bench(samples, labels, out, runner, quiet=args.quiet)
    else:  # the runner above checked the options; each actor builds its own
        from functools import partial

        from agent.distributed import run_bench_ray

        records = run_bench_ray(
            samples,
            labels,
            out,
            partial(_Runner, args, out, rows),
            address=None if args.ray == "local" else args.ray,
            workers=args.ray_workers,
            quiet=args.quiet,
        )
    table = summarise(records, labels, upper_bound=upper)
    if upper:
        table += (
            '\nRows with "upper bound: yes" use an oracle component: it reads the scene '
            "truth and the case's structured edits, not the image or the words.\n"
        )
    command = " ".join(shlex.quote(a) for a in [PROG, *argv])
    write_atomic(out / "summary.md", f"# {PROG} summary\n\n`{command}`\n\n{table}")
    write_html(records, samples, labels, out, limit=args.html_samples)
    print(table, end="")
    print(f"results: {out / RESULTS}\nsummary: {out / 'summary.md'}\nreport:  {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
