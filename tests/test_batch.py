"""``mira-batch``: a folder of images in, edited images and resumable records out."""

from __future__ import annotations

import json

from agent.batch import main
from agent.testing import make_test_image


def _folder(root, n: int = 2):
    root.mkdir()
    for i in range(n):
        make_test_image(48, 48).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text("make the left side red")
    return root


def test_batch_writes_each_result_and_resumes(tmp_path, capsys):
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "-q"]) == 0
    assert "mira-batch: 2 of 2 images" in capsys.readouterr().out
    assert (out / "img0.png").is_file() and (out / "img1.png").is_file()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["img0", "img1"]
    make_test_image(48, 48).save(folder / "img2.png")
    (folder / "img2.txt").write_text("make the right side blue")
    assert main([str(folder), "--out", str(out), "-q"]) == 0
    again = (out / "results.jsonl").read_text().splitlines()
    assert again[:2] == lines and len(again) == 3  # only the new image ran


def test_batch_refuses_bad_arguments(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"IN_DIR {str(tmp_path / 'nope')!r} is not a folder" in capsys.readouterr().err
    folder = _folder(tmp_path / "in")
    assert main([str(folder), "--out", str(folder)]) == 2
    assert "must not be IN_DIR" in capsys.readouterr().err
    assert main([str(folder), "--out", str(tmp_path / "o"), "--ray-workers", "2"]) == 2
    assert "--ray-workers must be >= 1 and go with --ray, got 2" in capsys.readouterr().err
