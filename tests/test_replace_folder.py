"""``tools._io.replace_folder``: a folder written whole or not at all (the planner adapter,
merged micro VLM folders and GRPO adapters are written through it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools._io import replace_folder


def _write(text: str):
    def fill(staging: Path) -> None:
        (staging / "a.txt").write_text(text)

    return fill


def test_new_folder_replaces_the_old_whole(tmp_path):
    out = tmp_path / "model"
    replace_folder(out, _write("one"))
    (out / "stale.txt").write_text("old")
    replace_folder(out, _write("two"))
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "two"
    assert out.stat().st_mode & 0o777 != 0o700  # not mkdtemp's private mode
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_fill_or_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "model"
    replace_folder(out, _write("one"))

    def broken(staging: Path) -> None:
        (staging / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_folder(out, broken)
    assert (out / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    rename = Path.rename

    def failing(self, target):  # the staging folder cannot take out's place
        if self.name.startswith(".model-"):
            raise OSError("rename refused")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="rename refused"):
        replace_folder(out, _write("two"))
    assert (out / "a.txt").read_text() == "one"  # the old one is back
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
