"""File writing shared by the artifact store, the CLI and the benchmark runner."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["pid_alive", "replace_folder", "write_atomic", "stale_temp_files"]

#: ``.<name>.<pid>.<random>.tmp``: the temporary files of ``write_atomic``.
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync'd, then
    ``os.replace``: readers see the old file or the whole new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder(out: str | os.PathLike[str], fill: Callable[[Path], None]) -> None:
    """Make the folder ``out`` whole or not at all: ``fill`` writes into a staging folder beside
    it, which then takes the place of ``out``. The old ``out`` is kept aside until the new one
    is in place and put back when the swap fails; the staging folder never stays behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    old = out.parent / f".{out.name}.old"
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
        fill(staging)
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        try:
            staging.rename(out)
        except BaseException:
            if old.exists() and not out.exists():
                old.rename(out)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process always does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``write_atomic`` temporary files in ``folder`` left by processes that are gone
    (killed mid-write); a live writer's files are never listed."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not pid_alive(int(match["pid"])):
            found.append(Path(entry.path))
    return found
