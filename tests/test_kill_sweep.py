"""Kill sweep (issue 15): SIGINT, SIGTERM and SIGKILL at random points of a ``mira-edit`` run.

After SIGINT or SIGTERM the outputs are all there or none is. After SIGKILL the next run
first finishes or drops what the killed one left, so after it the outputs are all there or
none, and no staging folder or temporary store file is left. Seeded, bounded: a few seconds a
kill on 2 cores.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.testing import make_test_image

OUTPUTS = ("res.png", "res.trace.json", "res_steps")
KILLS = 6  # two of each signal: about 30 s on 2 cores


def _outputs(work: Path) -> list[str]:
    return [name for name in OUTPUTS if os.path.lexists(work / name)]


def _leftovers(work: Path, store: Path) -> list[str]:
    staging = [p.name for p in work.iterdir() if p.name.startswith(".res.mira-")]
    temps = [p.name for p in store.glob("*/.*.tmp")] if store.exists() else []
    return staging + temps


def _clear(work: Path) -> None:
    import shutil

    for name in OUTPUTS:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


@pytest.mark.slow
def test_kill_sweep_leaves_all_or_nothing(tmp_path):
    work, store = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    picture = work / "pic.png"
    make_test_image(64, 48).save(picture)
    before = picture.read_bytes()
    cmd = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]
    cmd += [str(picture), "make the left side red, then make the right side blue"]
    cmd += ["--preset", "dry-run", "--out", str(work / "res.png"), "--artifacts", str(store), "-q"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *extra], env=env, cwd=work, capture_output=True, text=True, timeout=120
        )

    t0 = time.monotonic()
    assert run().returncode == 0
    full = time.monotonic() - t0
    _clear(work)

    rng = random.Random(15)
    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    outcomes = []
    for i in range(KILLS):
        sig = sigs[i % 3]
        proc = subprocess.Popen(
            cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.3 * full, 1.05 * full))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        present = _outputs(work)
        if sig != signal.SIGKILL:
            assert present in ([], list(OUTPUTS)), (sig, present, err)
            if proc.returncode == 0:
                assert present == list(OUTPUTS)
        else:  # the next run (no --force) finishes or drops a killed publication first
            nxt = run()
            assert nxt.returncode in (0, 2), nxt.stderr
            assert "Traceback" not in nxt.stderr
            assert _outputs(work) in ([], list(OUTPUTS)), (sig, _outputs(work))
        forced = run("--force")  # opens the store: temp files of the killed run are removed
        assert forced.returncode == 0, forced.stderr
        assert _outputs(work) == list(OUTPUTS)
        assert _leftovers(work, store) == [], (sig, _leftovers(work, store))
        assert picture.read_bytes() == before
        outcomes.append((sig.name, proc.returncode, len(present)))
        _clear(work)
    assert len(outcomes) == KILLS
    print("kill sweep (signal, exit status, outputs present):", outcomes)
