"""``mira-train``: train the project's micro models.

    mira-train editor --settings smoke|gpu --out DIR [--init DIR] [--state DIR] [--seconds S]

``--settings smoke`` is the CPU configuration the tests run (seconds); ``gpu`` the shipped
one. A run stops on its wall-clock budget (``--seconds``), validates, and saves a loadable
pipeline folder; ``--init`` goes on from such a folder, ``--state`` keeps the optimiser too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mira-train", description="Train the project's micro models.")
    sub = p.add_subparsers(dest="command", required=True)
    ed = sub.add_parser("editor", help="the micro FLUX.2 [klein] editor")
    ed.add_argument(
        "--settings",
        choices=("smoke", "gpu"),
        default="gpu",
        help="model and run size (default: %(default)s)",
    )
    ed.add_argument("--out", required=True, type=Path, help="folder for the trained pipeline")
    ed.add_argument("--init", type=Path, default=None, help="pipeline folder to go on from")
    ed.add_argument("--state", type=Path, default=None, help="folder of the full training state")
    ed.add_argument("--seconds", type=float, default=None, help="wall-clock budget of this run")
    ed.add_argument("--records", type=int, default=None, help="training records in the pool")
    ed.add_argument("--batch", type=int, default=None, help="editor batch size")
    ed.add_argument("--lr", type=float, default=None, help="editor learning rate")
    ed.add_argument(
        "--seed-offset",
        type=int,
        default=None,
        help="skip this many train seeds (a resumed run can see new cases)",
    )
    ev = sub.add_parser("eval-editor", help="the editor table of a saved micro editor")
    ev.add_argument("--model", required=True, type=Path, help="the saved pipeline folder")
    ev.add_argument("--split", choices=("validation", "test", "benchmark"), default="test")
    ev.add_argument(
        "--seeds", type=int, default=300, help="cases per language (default: %(default)s)"
    )
    ev.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "eval-editor":
        return _eval_editor(args)
    from agent.train.editor import GPU_SETTINGS, SMOKE_SETTINGS, train_editor

    settings = SMOKE_SETTINGS if args.settings == "smoke" else GPU_SETTINGS
    changes = {
        k: v
        for k, v in (
            ("seconds", args.seconds),
            ("n_records", args.records),
            ("batch", args.batch),
            ("lr", args.lr),
            ("seed_offset", args.seed_offset),
        )
        if v is not None
    }
    for name, value in changes.items():
        if isinstance(value, (int, float)) and value < 0:
            print(
                f"mira-train: --{name.replace('_', '-')} must be >= 0, got {value!r}",
                file=sys.stderr,
            )
            return 2
    if args.init is not None and not (args.init / "micro_editor.json").is_file():
        print(f"mira-train: --init {str(args.init)!r} holds no micro_editor.json", file=sys.stderr)
        return 2
    settings = replace(settings, **changes)
    train_editor(
        args.out,
        settings=settings,
        init=args.init,
        state=args.state,
        log=lambda m: print(m, flush=True),
    )
    return 0


def _eval_editor(args: argparse.Namespace) -> int:
    import json

    if not (args.model / "micro_editor.json").is_file():
        print(
            f"mira-train: --model {str(args.model)!r} holds no micro_editor.json", file=sys.stderr
        )
        return 2
    if args.seeds < 1:
        print(f"mira-train: --seeds must be >= 1, got {args.seeds!r}", file=sys.stderr)
        return 2
    from agent.train.editor import evaluate_editor

    table = evaluate_editor(
        args.model, split=args.split, n_seeds=args.seeds, log=lambda m: print(m, flush=True)
    )
    text = json.dumps(table, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
