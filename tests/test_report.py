"""The trajectory report of one run (``mira-edit --report``) and the bench index page: what
they hold, and what renders in headless Chromium (Debian's ``chromium``, installed by
``make setup``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent import bench, cli
from agent.report import trajectory_html
from agent.testing import PaintEditor, PixelChangeCritic, SplitPlanner, make_test_image

INSTRUCTION = "make the left side red, then make the right side blue"


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if shutil.which("apt-get") is None:
            pytest.skip("chromium is not installed and apt is unavailable to install it")
        pytest.fail("chromium is not installed: run `make setup` (apt-get install chromium)")
    return found


def render(url: str, *, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (``--dump-dom``), or a screenshot of it."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    if screenshot is not None:
        args += ["--window-size=1200,1400", f"--screenshot={screenshot}"]
    else:
        args += ["--dump-dom"]
    done = subprocess.run(args + [url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def run_cli(tmp_path: Path) -> Path:
    image = tmp_path / "in.png"
    make_test_image(96, 64).save(image)
    out = tmp_path / "out.png"
    argv = [str(image), INSTRUCTION, "--preset", "dry-run", "--out", str(out), "--report", "-q"]
    assert cli.main([*argv, "--artifacts", str(tmp_path / "art")]) == 0
    return tmp_path / "out.report.html"


def test_mira_edit_report_is_one_self_contained_page(tmp_path):
    page = run_cli(tmp_path)
    text = page.read_text()
    sources = re.findall(r'src="([^"]+)"', text)
    assert len(sources) == 6  # source, result, and before/after of both edits
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text and "file://" not in text
    for needle in (
        "make the left side red",
        "NEXT_EDITING_INSTRUCTION",  # the planner's own words
        "seed ",
        "step score",
        "accepted",
        "planner_stop",
        "plan_s",
    ):
        assert needle in text, needle
    # refused without --force when it exists
    image = tmp_path / "in.png"
    argv = [str(image), INSTRUCTION, "--preset", "dry-run", "--out", str(tmp_path / "out.png")]
    assert cli.main([*argv, "--report", "--artifacts", str(tmp_path / "art"), "-q"]) == 2


def test_regions_are_drawn_on_the_image(make_agent, image_path, store):
    out = make_agent(SplitPlanner(), PixelChangeCritic(), editors=PaintEditor()).invoke(
        {"image": image_path, "instruction": "make it red", "boxes": [[4, 6, 20, 18]]}
    )
    text = trajectory_html(
        instruction="make it red",
        source=out["result"],
        result=out["result"],
        steps=out["steps"],
        stop_reason=out["stop_reason"],
        store=store,
    )
    assert '<rect class="user" x="4" y="6" width="16" height="12">' in text
    assert "user region [4, 6, 20, 18]" in text


def test_trajectory_page_renders_in_chromium(tmp_path):
    page = run_cli(tmp_path)
    dom = render(page.as_uri())
    assert "2 of 2 tried edits accepted" in dom
    assert len(re.findall(r"<section class=\"step accepted\"", dom)) == 2
    shot = tmp_path / "trajectory.png"
    render(page.as_uri(), screenshot=shot)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 110) & (pixels[..., 2] < 110)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 110) & (pixels[..., 1] < 150)
    assert red.sum() > 2000 and blue.sum() > 2000  # the painted edits are on screen


def test_bench_index_links_every_cell_and_has_summary_and_failures_view(tmp_path):
    out = tmp_path / "bench"
    argv = ["--n", "4", "--edits", "2", "--editor", "noisy", "--out", str(out), "-q"]
    assert bench.main([*argv, "--strategy", "single-shot,agent"]) == 0
    index = out / "index.html"

    dom = render(index.as_uri())
    summary = re.search(r'<table id="summary">(.*?)</table>', dom, re.S).group(1)
    assert summary.count("<tr>") == 3  # header, single-shot, agent
    assert ">single-shot<" in summary and ">agent<" in summary
    links = re.findall(r'<a href="(trajectories/[^"]+)">', dom)
    assert len(links) == 4 * 2  # every result cell of the grid
    for link in links:
        assert (out / link).is_file()
    first = render((out / links[0]).as_uri())
    assert "Steps" in first and "mira-bench: mw-0" in first

    rows = re.findall(r'<tr class="(ok|failed)"[^>]*>', dom)
    assert "failed" in rows and "ok" in rows, rows  # the noisy editor fails some samples
    assert not re.search(r'<tr class="[^"]*"[^>]* hidden', dom)  # all shown by default
    failures = render(index.as_uri() + "#failures")
    assert "Showing failures only" in failures
    for cls, attrs in re.findall(r'<tr class="(ok|failed)"([^>]*)>', failures):
        assert ("hidden" in attrs) == (cls == "ok"), (cls, attrs)
