"""``mira-edit``: run the editing agent on one image from the command line.

    mira-edit IMAGE "INSTRUCTION" [--preset NAME] [--strategy NAME] [--out PATH]
              [--max-steps N] [--seed N] [--artifacts DIR] [--force] [--quiet]

Writes the result PNG (``--out``, default ``<input stem>_edited.png`` in the current
directory), the trace ``<out stem>.trace.json`` next to it, and the output of every tried edit,
accepted or not, under ``<out stem>_steps/``. Nothing is written when the options or the input
are refused, and the input file is only ever read. The output folder is made and reserved
(a staging folder) before any model work; the outputs are written there and published together
(``agent/_outputs.py``), so an interrupt leaves all of them or none.

With no ``--preset`` it runs ``micro``: the shipped micro models (``agent.micro``), which know
the micro-world's scenes and words only (a notice on stderr says so).

Exit status: 0 the run finished (any stop reason but ``error``); 1 the run ended on a tool
error (the best image so far is still written) or an output could not be written; 2 a bad
option or input, or an output that would be overwritten; 130 interrupted.

Importing this module stays light: langgraph, PIL, numpy and tqdm load only when ``main`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from agent._outputs import publish, recover, stage
from agent.config import PRESETS, AgentConfig
from tools._io import write_atomic
from tools.errors import InvalidInputError, ToolError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tools.artifacts import ArtifactStore

__all__ = ["main", "build_parser"]

PROG = "mira-edit"
#: The preset when none is named: the project's own micro models (``agent.micro``), learned
#: parts that edit for real, on the micro-world's images.
DEFAULT_PRESET = "micro"
STRATEGIES: tuple[str, ...] = get_args(AgentConfig.model_fields["strategy"].annotation)

#: AgentConfig field -> the option that sets it (for validation messages).
_OPTION_OF = {
    "preset": "--preset",
    "strategy": "--strategy",
    "max_steps": "--max-steps",
    "seed": "--seed",
    "artifacts_dir": "--artifacts",
}

DRY_RUN_NOTICE = (
    "note: preset 'dry-run' runs the real agent loop with test doubles, not models: its edits "
    "are painted colour tints over the half of the image the instruction names, and its critic "
    "only checks that pixels changed. The result shows the loop working, not image editing."
)


TINY_NOTICE = (
    "note: preset 'tiny' runs every real backend class (FLUX.2 [klein] editor, Qwen3-VL grounder, "
    "EditScore critic) on tiny random weights: the images are noise and the critic's answers "
    "are unreadable (so edits are rejected). It proves the wiring, not editing quality."
)


MICRO_NOTICE = (
    "note: preset 'micro' runs the project's own micro models (weights/), trained only on the "
    "micro-world: 224 px scenes of simple shapes on a grid, with its train-split words. On "
    "other images or wording their edits mean little; name a real stack with --preset."
)

#: The notice each preset prints before it runs (stderr; --quiet keeps it).
NOTICES = {"dry-run": DRY_RUN_NOTICE, "tiny": TINY_NOTICE, "micro": MICRO_NOTICE}


def _not_installed(config: AgentConfig, exc: Exception) -> str:
    """The one-line refusal of a stack whose package or shipped model folder is missing."""
    hint = "" if config.preset == "dry-run" else "; --preset dry-run runs without models"
    return f"--preset {config.preset}: {type(exc).__name__}: {exc}{hint}"


class _Refused(Exception):
    """A refusal reported as one line and exit status 2."""


def _default(field: str) -> Any:
    return AgentConfig.model_fields[field].default


#: ``--stop-when-satisfied off``: the option set to None, so no preset fills it
_OFF = "off"


def _score_or_off(text: str) -> float | str:
    if text == _OFF:
        return _OFF
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"expected a score from 0 to 10 or 'off', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Edit IMAGE step by step as INSTRUCTION says: a planner picks each atomic "
        "edit, an editor applies it, a critic scores it, and the agent accepts, retries or "
        "rolls it back.",
        epilog="Outputs: --out (a PNG), <out stem>.trace.json next to it (stop reason, scores, "
        "every step, the config) and <out stem>_steps/stepNN_tryM_{accepted,rejected}.png, the "
        "output of every tried edit (M counts tries of step NN from 1). Exit status: 0 done, "
        "1 the run ended on a tool error (best image so far written) or writing failed, "
        "2 bad option or input / output exists, 130 interrupted.",
    )
    parser.add_argument("image", metavar="IMAGE", help="the image to edit (a path; read only)")
    parser.add_argument(
        "instruction",
        metavar="INSTRUCTION",
        help="what to do, possibly several edits in one sentence",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="stack of backends (default: %(default)s, the shipped micro models, which know "
        "the micro-world's scenes only; 'dry-run' uses test doubles that paint tints, not "
        "models)",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=None,
        help=f"how edits are made (default: {_default('strategy')})",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help="result PNG (default: ./<input stem>_edited.png)",
    )
    parser.add_argument(
        "--max-steps",
        metavar="N",
        type=int,
        default=None,
        help=f"most atomic edits the planner may issue (default: {_default('max_steps')})",
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=None,
        help=f"base seed of the edits (default: {_default('seed')})",
    )
    parser.add_argument(
        "--one-shot-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the whole instruction in one editor call first, then let the planner correct "
        "it or stop (default: the preset's; on for micro, off for the others)",
    )
    parser.add_argument(
        "--stop-when-satisfied",
        metavar="SCORE",
        type=_score_or_off,
        default=None,
        help="end the run once the critic scores the whole instruction SCORE (0-10) or more; "
        "'off' never (default: the preset's; 10 for micro, off for the others)",
    )
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        default=None,
        help="root of the agent's content-addressed image store (default: "
        "$XDG_CACHE_HOME/mira-agent/artifacts, i.e. ~/.cache/...; the images "
        "you need are copied next to --out anyway)",
    )
    parser.add_argument(
        "--backend-option",
        metavar="BACKEND.KEY=VALUE",
        action="append",
        default=[],
        help="an option for a backend's factory, e.g. "
        "mira-7b.checkpoint=/models/mira-7b or flux2-klein-9b.model=/models/klein "
        "(repeatable; see AgentConfig.backend_options)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite --out, its trace and its _steps/ images if they exist",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write <out stem>.report.html: one self-contained page of the run (source, "
        "each tried edit with planner text, tool, seed, scores, verdict, regions, result)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no per-step lines (the summary, errors and "
        "the preset's notice are still printed)",
    )
    return parser


# -- helpers ----------------------------------------------------------------------------------
def _err(message: str) -> None:
    print(f"{PROG}: error: {_printable(message)}", file=sys.stderr)


#: C0 and C1 controls (ESC starts terminal escape sequences), DEL, and the Unicode format
#: characters that reorder or hide text (bidi overrides, zero-width marks).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    """``text`` with every control character shown escaped (``\\x1b``), never sent raw to
    the terminal: an instruction or a planner's output cannot move the cursor or recolour."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}",
        str(text),
    )


def _one_line(text: str) -> str:
    return _printable(" ".join(str(text).split()))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        message = error.get("msg", "invalid value")
        if field in _OPTION_OF:
            value = error.get("input")
            parts.append(f"{_OPTION_OF[field]} {value}: {message}")
        elif field:
            parts.append(f"{field}: {message}")
        else:
            parts.append(message)
    return _one_line("; ".join(parts))


def _local_path(image: str) -> Path | None:
    """The file behind IMAGE when it is a path or a file:// URI, else None (a data: URL)."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]+):", image)
    if match is None:
        return Path(os.path.expanduser(image))  # "~nobody" stays as given
    if match.group(1).lower() == "file":
        return Path(unquote(urlparse(image).path))
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError, ValueError):  # a link loop; a NUL byte: the input check says
        return False


def _display(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Outputs:
    """The three outputs derived from --out, and the checks made before any work."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        self.trace = self.out.with_name(f"{self.out.stem}.trace.json")
        self.steps_dir = self.out.with_name(f"{self.out.stem}_steps")

    def check(self, input_path: Path | None, *, force: bool) -> None:
        recover(self.out, self.steps_dir, self.trace)  # a killed run's publication first
        if self.out.suffix.lower() != ".png":
            raise _Refused(f"--out {_display(self.out)} must end in .png (the result is a PNG)")
        if input_path is not None:
            if _same_file(self.out, input_path):
                raise _Refused(
                    f"--out {_display(self.out)} is the input image; the input is "
                    "never overwritten: choose another --out"
                )
            if _same_file(self.trace, input_path) or _same_file(self.steps_dir, input_path.parent):
                raise _Refused(
                    f"the outputs of --out {_display(self.out)} would overwrite the "
                    "input image: choose another --out"
                )
        if self.out.is_dir():
            raise _Refused(f"--out {_display(self.out)} is a directory; give a file name")
        if self.steps_dir.exists() and not self.steps_dir.is_dir():
            raise _Refused(f"{_display(self.steps_dir)} exists and is not a directory")
        if self.out.parent.exists() and not self.out.parent.is_dir():
            raise _Refused(
                f"--out {_display(self.out)}: {_display(self.out.parent)} is not a directory"
            )
        if force:
            return
        for path in (self.out, self.trace):
            if os.path.lexists(path):
                raise _Refused(f"{_display(path)} already exists; pass --force to overwrite it")
        if self.steps_dir.is_dir() and any(self.steps_dir.iterdir()):
            raise _Refused(
                f"{_display(self.steps_dir)} already exists and is not empty; pass "
                "--force to overwrite it"
            )

    def step_file(self, record: dict[str, Any]) -> Path:
        verdict = "accepted" if record["accepted"] else "rejected"
        return self.steps_dir / f"step{record['step']:02d}_try{record['attempt'] + 1}_{verdict}.png"


# -- progress ---------------------------------------------------------------------------------
class _Progress:
    """A tqdm bar over planner steps (to stderr), fed by the graph's custom stream events."""

    def __init__(self, max_steps: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self.quiet = quiet
        self._tqdm = tqdm
        # disable=None: no bar when stderr is not a terminal (logs, CI); --quiet: never.
        self.bar = tqdm(
            total=max_steps,
            unit="step",
            file=sys.stderr,
            disable=True if quiet else None,
            dynamic_ncols=True,
            leave=False,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]",
        )

    def _line(self, text: str) -> None:
        if not self.quiet:
            self._tqdm.write(_printable(text), file=sys.stderr)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "plan":
            if event.get("stop"):
                self._line(f"step {event['step']}: planner stops")
                return
            self.bar.n = max(0, event["step"] - 1)
            instruction = _one_line(event.get("instruction") or "")
            if len(instruction) > 32:
                instruction = instruction[:31] + "…"
            self.bar.set_description(f"step {event['step']} {instruction!r}", refresh=False)
            self.bar.set_postfix_str("planned")
        elif kind == "step_start":
            self.bar.set_postfix_str(f"try {event['attempt'] + 1} {event['tool']}")
        elif kind == "tool_progress":
            self.bar.set_postfix_str(
                f"try {event['attempt'] + 1} {event['tool']} {event['done']}/{event['total']}"
            )
        elif kind == "step_end":
            verdict = "accepted" if event.get("accepted") else "rejected"
            if event.get("accepted"):
                self.bar.n = event["step"]
                self.bar.refresh()
            self._line(
                f"step {event['step']} try {event['attempt'] + 1}: {verdict} "
                f"({_one_line(event.get('reason', ''))})"
            )

    def close(self) -> None:
        self.bar.close()


# -- the command ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mira-edit`` with ``argv`` (``sys.argv[1:]`` when None); returns the exit status."""
    args = build_parser().parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: staged outputs are removed, published ones stay whole.
    previous = _on_sigterm(_interrupt)
    try:
        return _run(args)
    except _Refused as exc:
        _err(_one_line(str(exc)))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; nothing written")
        return 130
    finally:
        _on_sigterm(previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _on_sigterm(handler: Any) -> Any:
    """Set the SIGTERM handler (main thread only; elsewhere nothing changes)."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"preset": args.preset}
    for option, field in (
        ("strategy", "strategy"),
        ("max_steps", "max_steps"),
        ("seed", "seed"),
        ("artifacts", "artifacts_dir"),
        ("one_shot_first", "one_shot_first"),
        ("stop_when_satisfied", "stop_when_satisfied"),
    ):
        value = getattr(args, option)
        if value is not None:
            options[field] = value
    if options.get("stop_when_satisfied") == _OFF:
        options["stop_when_satisfied"] = None
    backend_options: dict[str, dict[str, str]] = {}
    for item in args.backend_option:
        name, dot, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (name and dot and key and eq):
            raise _Refused(f"--backend-option {item!r}: expected BACKEND.KEY=VALUE")
        backend_options.setdefault(name, {})[key] = value
    if backend_options:
        options["backend_options"] = backend_options
    try:
        config = AgentConfig(**options)
    except ValidationError as exc:
        raise _Refused(_validation_message(exc)) from None

    input_path = _local_path(args.image)
    if args.out is not None:
        out = Path(os.path.expanduser(args.out))
    else:
        stem = input_path.stem if input_path is not None and input_path.stem else "image"
        out = Path(f"{stem}_edited.png")
    outputs = _Outputs(out)
    outputs.check(input_path, force=args.force)
    report = _report_path(outputs, args)
    if report is not None and not args.force and os.path.lexists(report):
        raise _Refused(f"{_display(report)} already exists; pass --force to overwrite it")

    # The input's checks, before any work or any write (the graph repeats them).
    from tools.images import FIRST_FRAME_NOTE, check_instruction, load_image

    try:
        instruction = check_instruction(args.instruction, max_chars=config.max_instruction_chars)
        checked = load_image(
            args.image,
            allowed_schemes=config.allowed_uri_schemes,
            max_pixels=config.max_input_pixels,
            max_bytes=config.max_input_bytes,
            file_roots=config.allowed_file_roots,
        )
    except InvalidInputError as exc:
        raise _Refused(str(exc)) from None
    input_note: str | None = checked.info.get(FIRST_FRAME_NOTE)
    if input_note:
        print(f"note: {_printable(input_note)}", file=sys.stderr)
    image: str = str(input_path.resolve()) if input_path is not None else args.image

    from agent.factory import create_edit_agent
    from tools.artifacts import ArtifactStore, default_artifacts_dir

    root = config.artifacts_dir if config.artifacts_dir is not None else default_artifacts_dir()
    try:
        store = ArtifactStore(root)
    except OSError as exc:
        raise _Refused(
            f"--artifacts {str(root)!r}: cannot create the artifact store: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    if not os.access(store.root, os.W_OK | os.X_OK):
        raise _Refused(f"--artifacts {str(store.root)!r}: the folder is not writable")
    try:  # a stack that cannot work (e.g. a strategy its backends do not support) is refused
        agent = create_edit_agent(config, artifacts=store)
    except (ValueError, TypeError, ToolError) as exc:  # ToolError: e.g. model weights missing
        raise _Refused(f"--preset {config.preset} --strategy {config.strategy}: {exc}") from None
    except (ImportError, FileNotFoundError) as exc:  # a package or shipped folder not installed
        raise _Refused(_not_installed(config, exc)) from None

    # The outputs' place is made and reserved before any model work: an unwritable --out
    # folder is refused now, not after the run.
    try:
        staging = stage(outputs.out)
    except OSError as exc:
        raise _Refused(
            f"--out {str(outputs.out)!r}: cannot write in {str(outputs.out.parent)!r}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    try:
        return _edit_and_publish(
            agent, outputs, staging, store, args, config, image, instruction, input_note
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when published


def _edit_and_publish(
    agent: Any,
    outputs: _Outputs,
    staging: Path,
    store: ArtifactStore,
    args: argparse.Namespace,
    config: AgentConfig,
    image: str,
    instruction: str,
    input_note: str | None,
) -> int:
    if config.preset in NOTICES:
        print(NOTICES[config.preset], file=sys.stderr)

    progress = _Progress(config.max_steps, quiet=args.quiet)
    final: dict[str, Any] | None = None
    try:
        for mode, data in agent.stream(
            {"image": image, "instruction": instruction}, stream_mode=["custom", "values"]
        ):
            if mode == "custom" and isinstance(data, dict):
                progress(data)
            elif mode == "values":
                final = data
    except InvalidInputError as exc:
        raise _Refused(str(exc)) from None
    except ImportError as exc:  # a backend imports its packages on first use (e.g. diffusers)
        raise _Refused(_not_installed(config, exc)) from None
    except ToolError as exc:  # one the graph did not turn into a stop reason
        tool = f"{exc.tool}: " if exc.tool else ""
        _err(_one_line(f"{tool}{type(exc).__name__}: {exc}; nothing written"))
        return 1
    finally:
        progress.close()
    if final is None or "result" not in final or "stop_reason" not in final:
        _err("the agent returned no result")
        return 1

    try:
        written = _write_outputs(
            outputs,
            staging,
            final,
            store,
            config=config,
            image=image,
            instruction=instruction,
            input_note=input_note,
        )
        publish(staging, outputs.out, outputs.steps_dir, outputs.trace)
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else ""
        why = exc.strerror or str(exc)
        _err(_one_line(f"cannot write the outputs{where}: {why}; nothing written"))
        return 1
    report = _report_path(outputs, args)
    if report is not None:
        from agent.report import trajectory_html

        page = trajectory_html(
            title=f"mira-edit: {outputs.out.name}",
            instruction=instruction,
            source=final.get("source"),
            result=final["result"],
            steps=final.get("steps", []),
            stop_reason=final["stop_reason"],
            scores=final.get("scores"),
            elapsed_s=final.get("elapsed_s"),
            store=store,
        )
        try:
            write_atomic(report, page.encode())
        except OSError as exc:
            _err(_one_line(f"cannot write the report: {exc}"))
            return 1
    _summary(final, outputs, written)
    if report is not None:
        print(f"report: {_display(report)}")
    return 1 if final["stop_reason"] == "error" else 0


def _report_path(outputs: _Outputs, args: argparse.Namespace) -> Path | None:
    """``<out stem>.report.html`` with ``--report``, else None."""
    return outputs.out.with_name(f"{outputs.out.stem}.report.html") if args.report else None


def _accepted(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in steps if s.get("kind") == "edit" and s.get("accepted")]


def _stop_record(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record that ended the run (a stop or an error), or None (e.g. critic_satisfied)."""
    return steps[-1] if steps and steps[-1].get("kind") != "edit" else None


def _write_outputs(
    outputs: _Outputs,
    staging: Path,
    final: dict[str, Any],
    store: ArtifactStore,
    *,
    config: AgentConfig,
    image: str,
    instruction: str,
    input_note: str | None = None,
) -> list[Path]:
    """Write every output into ``staging`` (``publish`` moves them into place together)."""
    steps = [dict(s) for s in final.get("steps", [])]
    written: list[Path] = []
    for record in steps:
        record["output_file"] = None
        if record.get("output"):
            path = outputs.step_file(record)
            write_atomic(staging / "steps" / path.name, store.read_bytes(record["output"]))
            record["output_file"] = os.path.relpath(path, outputs.out.parent)
            written.append(path)

    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("mira-agent")
    except PackageNotFoundError:
        package_version = None
    stop_record = _stop_record(steps)
    trace = {
        "mira_agent_version": package_version,
        "instruction": instruction,
        "input": image,
        "input_note": input_note,
        "output": str(outputs.out),
        "stop_reason": final["stop_reason"],
        "stop_detail": stop_record.get("reason") if stop_record else None,
        "accepted_edits": len(_accepted(steps)),
        "tried_edits": sum(1 for s in steps if s.get("kind") == "edit"),
        "scores": final.get("scores", {}),
        "result": final["result"],
        "source": final.get("source"),
        "tool_calls": final.get("tool_calls"),
        "elapsed_s": final.get("elapsed_s"),
        "artifacts_dir": str(store.root),
        "config": config.model_dump(mode="json"),
        "steps": steps,
    }
    write_atomic(staging / "trace.json", (json.dumps(trace, indent=2, default=str) + "\n").encode())
    write_atomic(staging / "result.png", store.read_bytes(final["result"]))
    return written


def _summary(final: dict[str, Any], outputs: _Outputs, written: list[Path]) -> None:
    steps = final.get("steps", [])
    accepted = _accepted(steps)
    tried = sum(1 for s in steps if s.get("kind") == "edit")
    stop_record = _stop_record(steps)
    detail = (
        f" ({_one_line(stop_record['reason'])})"
        if stop_record and stop_record.get("reason")
        else ""
    )
    lines = [
        f"stop reason: {final['stop_reason']}{detail}",
        f"accepted edits: {len(accepted)} of {tried} tried",
    ]
    lines += [
        f"  {i}. {_one_line(s['args'].get('instruction', '?'))}" for i, s in enumerate(accepted, 1)
    ]
    overall = (final.get("scores") or {}).get("overall")
    if overall is not None:
        lines.append(f"score: {overall:.2f} / 10")
    lines += [
        f"result: {_printable(_display(outputs.out))}",
        f"trace:  {_printable(_display(outputs.trace))}",
        f"steps:  {_printable(_display(outputs.steps_dir))}/ ({len(written)} images)",
    ]
    print("\n".join(lines))
