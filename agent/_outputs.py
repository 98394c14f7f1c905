"""All-or-nothing publication of the CLI's outputs (result PNG, trace, steps folder).

Everything is written into a staging folder ``.<out stem>.mira-<pid>-<random>`` next to
``--out``, made before any model work (so an unwritable place is refused up front). When all
is written, a ``PUBLISH`` marker is put in the staging folder and the outputs are renamed into
place with SIGINT/SIGTERM held back: an interrupt leaves either every output or none. A
SIGKILL between two renames leaves a marked staging folder: the next run for the same
``--out`` finishes that publication (rolls forward) before anything else; an unmarked staging
folder of a dead process is removed. Renames replace a symbolic link at an output path,
never the file it points at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from tools._io import pid_alive

__all__ = ["stage", "publish", "recover", "STAGING_PATTERN"]

#: Name of a staging folder: ``.<stem>.mira-<pid>-<random>``.
STAGING_PATTERN = re.compile(r"^\.(?P<stem>.*)\.mira-(?P<pid>\d+)-[A-Za-z0-9_]+$")
_MARKER = "PUBLISH"
#: What the CLI writes into ``<out stem>_steps/``; only such files are replaced by --force.
STEP_FILE = re.compile(r"^step\d+_try\d+_(?:accepted|rejected)\.png$")


def stage(out: Path) -> Path:
    """Make the staging folder for ``out`` (raises ``OSError`` when the folder is unwritable)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.mira-{os.getpid()}-", dir=out.parent))
    (staging / "steps").mkdir()
    return staging


def recover(out: Path, steps_dir: Path, trace: Path) -> None:
    """Finish (marked) or remove (unmarked) the staging folders of dead runs for ``out``."""
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = STAGING_PATTERN.match(entry.name)
        if match is None or match["stem"] != out.stem or pid_alive(int(match["pid"])):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        if (entry / _MARKER).is_file():
            _rename_all(entry, out, steps_dir, trace)
        shutil.rmtree(entry, ignore_errors=True)


def publish(staging: Path, out: Path, steps_dir: Path, trace: Path) -> None:
    """Move the staged outputs into place, all of them, with SIGINT and SIGTERM held back.

    Python runs signal handlers in the main thread between bytecodes, so recording handlers
    installed here hold both signals back whatever thread the kernel delivered them to. A
    signal that came during publication is dropped: the outputs are complete by then.
    """
    held: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, f: held.append(s))
    try:
        fd = os.open(staging / _MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fsync(fd)
        os.close(fd)
        _rename_all(staging, out, steps_dir, trace)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _rename_all(staging: Path, out: Path, steps_dir: Path, trace: Path) -> None:
    """Idempotent: each move happens only if its source is still in the staging folder."""
    new_steps = staging / "steps"
    if new_steps.is_dir():
        if steps_dir.is_symlink():
            steps_dir.unlink()  # the link itself, never what it points at
        elif steps_dir.is_dir():
            for old in steps_dir.iterdir():  # keep what is not ours, drop our old images
                if not (STEP_FILE.match(old.name) and old.is_file()):
                    os.replace(old, new_steps / old.name)
            os.replace(steps_dir, staging / "old-steps")
        os.replace(new_steps, steps_dir)
    if (staging / "trace.json").exists():
        os.replace(staging / "trace.json", trace)
    if (staging / "result.png").exists():
        os.replace(staging / "result.png", out)
