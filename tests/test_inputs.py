"""Bad and unusual inputs: clear errors before any model work, the input file never touched."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import numpy as np
import pytest
from _badfiles import png_with_size
from PIL import Image

from agent import InvalidInputError
from agent.images import load_image
from agent.testing import ScriptedCritic, ScriptedPlanner, make_test_image

LIMIT = 10_000_000


def fingerprint(path) -> tuple[str, float]:
    return hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.fixture
def untouched_agent(make_agent):
    """An agent whose tools fail the test if they are ever called."""
    planner, critic = ScriptedPlanner([]), ScriptedCritic([])
    agent = make_agent(planner, critic)
    yield agent
    assert planner.calls == [] and critic.calls == [], "model work started on bad input"


@pytest.mark.parametrize("instruction", ["", "   \n\t ", None, 42])
def test_empty_or_non_text_instruction(untouched_agent, image_path, instruction):
    with pytest.raises(InvalidInputError, match="instruction"):
        untouched_agent.invoke({"image": image_path, "instruction": instruction})


def test_too_long_instruction(make_agent, image_path):
    agent = make_agent(ScriptedPlanner([]), ScriptedCritic([]), max_instruction_chars=10)
    with pytest.raises(InvalidInputError, match="max_instruction_chars"):
        agent.invoke({"image": image_path, "instruction": "make everything much redder"})


def test_not_an_image(untouched_agent, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    before = fingerprint(path)
    with pytest.raises(InvalidInputError, match="not an image"):
        untouched_agent.invoke({"image": str(path), "instruction": "make it red"})
    assert fingerprint(path) == before


def test_truncated_file(untouched_agent, tmp_path):
    buf = io.BytesIO()
    make_test_image(128, 96).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InvalidInputError, match="truncated or corrupt"):
        untouched_agent.invoke({"image": str(path), "instruction": "make it red"})


def test_missing_file_and_directory(untouched_agent, tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        untouched_agent.invoke({"image": str(tmp_path / "nope.png"), "instruction": "x"})
    with pytest.raises(InvalidInputError, match="not a file"):
        untouched_agent.invoke({"image": str(tmp_path), "instruction": "x"})


def test_pixel_limit_checked_before_decoding(make_agent, tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    agent = make_agent(ScriptedPlanner([]), ScriptedCritic([]), max_input_pixels=50_000)
    with pytest.raises(InvalidInputError, match=r"300x200 = 60000 pixels.*max_input_pixels=50000"):
        agent.invoke({"image": str(path), "instruction": "x"})


@pytest.mark.parametrize(
    "uri", ["http://example.com/cat.png", "https://x/y.png", "ftp://h/f.png", "s3://bucket/key.png"]
)
def test_network_schemes_refused(untouched_agent, uri):
    with pytest.raises(InvalidInputError, match="is not allowed"):
        untouched_agent.invoke({"image": uri, "instruction": "x"})


def test_scheme_allow_list_is_configurable(make_agent, image_path):
    agent = make_agent(ScriptedPlanner([]), ScriptedCritic([]), allowed_uri_schemes=("file",))
    data = "data:image/png;base64," + base64.b64encode(open(image_path, "rb").read()).decode()
    with pytest.raises(InvalidInputError, match="'data' is not allowed"):
        agent.invoke({"image": data, "instruction": "x"})


def test_remote_file_uri_refused(untouched_agent):
    with pytest.raises(InvalidInputError, match="remote host"):
        untouched_agent.invoke({"image": "file://otherhost/etc/img.png", "instruction": "x"})


@pytest.mark.parametrize(
    "bad",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png,rawbytes",
        "data:image/png;base64,@@@not-base64@@@",
    ],
)
def test_bad_data_urls(untouched_agent, bad):
    with pytest.raises(InvalidInputError, match="data URL"):
        untouched_agent.invoke({"image": bad, "instruction": "x"})


@pytest.mark.parametrize("bad", [123, b"bytes", ["a.png"], {"uri": "file:///x.png"}])
def test_wrong_types(untouched_agent, bad):
    with pytest.raises(InvalidInputError):
        untouched_agent.invoke({"image": bad, "instruction": "x"})


def test_every_accepted_form_gives_the_same_stored_source(make_agent, image_path, store):
    agent = make_agent(ScriptedPlanner(["<stop>"] * 4), ScriptedCritic([]))
    raw = open(image_path, "rb").read()
    forms = [
        image_path,
        "file://" + image_path,
        "data:image/png;base64," + base64.b64encode(raw).decode(),
    ]
    results = [agent.invoke({"image": f, "instruction": "x"})["result"] for f in forms]
    results.append(agent.invoke({"image": results[0], "instruction": "x"})["result"])  # an ImageRef
    assert len({r["sha256"] for r in results}) == 1


def _load(img: Image.Image, tmp_path, fmt="PNG", **save) -> Image.Image:
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt, **save)
    before = fingerprint(path)
    out = load_image(str(path), max_pixels=LIMIT)
    assert fingerprint(path) == before
    assert out.mode == "RGB"
    return out


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    out = np.asarray(_load(Image.fromarray(arr), tmp_path))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert 120 <= out[4, 0, 0] <= 135  # mid-grey stays mid-grey (clipping would give 255)


def test_cmyk(tmp_path):
    out = _load(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path, fmt="JPEG", quality=100)
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # CMYK (0,1,1,0) is red


def test_palette_with_transparency_flattens_on_white(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([10, 200, 10] + [0, 0, 0] * 255)
    img.info["transparency"] = 0
    assert _load(img, tmp_path).getpixel((1, 1)) == (255, 255, 255)
    opaque = Image.new("P", (8, 8), 0)
    opaque.putpalette([10, 200, 10] + [0, 0, 0] * 255)
    assert _load(opaque, tmp_path).getpixel((1, 1)) == (10, 200, 10)


def test_rgba_half_transparent_composited_on_white(tmp_path):
    out = _load(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), tmp_path)
    assert all(126 <= c <= 128 for c in out.getpixel((0, 0)))


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 deg clockwise turn
    out = _load(img, tmp_path, fmt="JPEG", exif=exif, quality=100)
    assert out.size == (20, 40)
    b = out.getpixel((10, 3))
    assert b[2] > 200 and b[0] < 60  # the left strip is now at the top


def test_greyscale_and_bilevel(tmp_path):
    assert _load(Image.new("L", (4, 4), 77), tmp_path).getpixel((0, 0)) == (77, 77, 77)
    assert _load(Image.new("1", (4, 4), 1), tmp_path).getpixel((0, 0)) == (255, 255, 255)


def test_plain_paths_count_as_file_scheme(make_agent, image_path):
    agent = make_agent(ScriptedPlanner([]), ScriptedCritic([]), allowed_uri_schemes=("data",))
    with pytest.raises(InvalidInputError, match="'file' is not allowed"):
        agent.invoke({"image": image_path, "instruction": "x"})


# -- the input gate: sizes, bombs, OS errors (issue 15) ----------------------------------------
def test_decompression_bomb_header_is_a_typed_error(untouched_agent, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_size(40_000, 40_000))  # 1.6 GP: PIL's DecompressionBombError
    before = fingerprint(path)
    with pytest.raises(InvalidInputError, match="max_input_pixels"):
        untouched_agent.invoke({"image": str(path), "instruction": "make it red"})
    assert fingerprint(path) == before


def test_text_chunk_bomb_is_a_typed_error(untouched_agent, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", "a" * 20_000_000, zip=True)  # ~20 kB on disk, 20 MB unpacked
    path = tmp_path / "text-bomb.png"
    make_test_image(8, 8).save(path, pnginfo=info)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(InvalidInputError, match="not an image PIL can read"):
        untouched_agent.invoke({"image": str(path), "instruction": "make it red"})


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "sparse.png"
    with open(path, "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GB, sparse: nothing on disk
    import builtins

    real_open = builtins.open

    def no_read(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise AssertionError("the oversized file was opened")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_read)
    with pytest.raises(InvalidInputError, match=r"max_input_bytes=") as info:
        load_image(str(path), max_pixels=LIMIT)
    assert repr(str(path)) in str(info.value)


def test_small_byte_limit_applies_to_files_and_data_urls(image_path):
    with pytest.raises(InvalidInputError, match="max_input_bytes=100"):
        load_image(image_path, max_pixels=LIMIT, max_bytes=100)
    data = base64.b64encode(open(image_path, "rb").read()).decode()
    with pytest.raises(InvalidInputError, match="max_input_bytes=100"):
        load_image(f"data:image/png;base64,{data}", max_pixels=LIMIT, max_bytes=100)


def test_unreadable_file_is_a_typed_error_naming_the_path(image_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if os.fspath(file) == image_path:
            raise PermissionError(13, "Permission denied", image_path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(InvalidInputError, match="Permission denied") as info:
        load_image(image_path, max_pixels=LIMIT)
    assert repr(image_path) in str(info.value)


def test_name_too_long_and_symlink_loop_are_typed_errors(tmp_path):
    long_name = str(tmp_path / ("x" * 300 + ".png"))
    with pytest.raises(InvalidInputError, match="cannot be read") as info:
        load_image(long_name, max_pixels=LIMIT)
    assert "File name too long" in str(info.value)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(InvalidInputError, match="cannot be read") as info:
        load_image(str(loop), max_pixels=LIMIT)
    assert repr(str(loop)) in str(info.value)


def test_a_directory_or_fifo_is_not_a_regular_file(tmp_path):
    with pytest.raises(InvalidInputError, match="not a file"):
        load_image(str(tmp_path), max_pixels=LIMIT)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="not a file"):
        load_image(str(fifo), max_pixels=LIMIT)


def test_animation_gives_its_first_frame_and_says_so(tmp_path, make_agent):
    from agent.images import FIRST_FRAME_NOTE

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = load_image(str(path), max_pixels=LIMIT)
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert "3 frames" in image.info[FIRST_FRAME_NOTE]
    agent = make_agent(ScriptedPlanner(["<stop>"]), ScriptedCritic([]))
    stream = agent.stream({"image": str(path), "instruction": "make it red"}, stream_mode="custom")
    events = [e for e in stream if e.get("event") == "run_start"]
    assert "first frame" in events[0]["input_note"]


# -- issue 15: served-mode file policy ---------------------------------------------------------
def test_file_roots_allow_only_files_under_them_with_one_error_text(tmp_path, image_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inside = allowed / "in.png"
    make_test_image(16, 16).save(inside)
    assert load_image(str(inside), max_pixels=LIMIT, file_roots=[allowed]).size == (16, 16)
    assert load_image(inside.as_uri(), max_pixels=LIMIT, file_roots=[allowed]).size == (16, 16)
    link = allowed / "escape.png"
    link.symlink_to(image_path)  # a link inside a root to a file outside it
    texts = []
    for path in (image_path, str(allowed / "missing.png"), str(link), "/etc/passwd"):
        with pytest.raises(InvalidInputError) as info:
            load_image(path, max_pixels=LIMIT, file_roots=[allowed])
        texts.append(str(info.value).replace(repr(path), "PATH"))
    assert len(set(texts)) == 1 and "not found or not allowed" in texts[0]
    with pytest.raises(InvalidInputError, match="not found or not allowed"):
        load_image(str(inside), max_pixels=LIMIT, file_roots=())


def test_the_served_graph_reads_no_file_unless_configured(tmp_path, monkeypatch, image_path):
    import importlib

    monkeypatch.setenv("MIRA_ARTIFACTS_DIR", str(tmp_path / "served"))
    monkeypatch.delenv("MIRA_FILE_ROOTS", raising=False)
    import agent.studio

    studio = importlib.reload(agent.studio)
    with pytest.raises(InvalidInputError, match="not found or not allowed"):
        studio.graph.invoke({"image": image_path, "instruction": "make the left side red"})
    data = base64.b64encode(open(image_path, "rb").read()).decode()
    done = studio.graph.invoke(
        {"image": f"data:image/png;base64,{data}", "instruction": "make the left side red"}
    )
    assert done["stop_reason"] == "planner_stop"
    again = studio.graph.invoke({"image": done["result"], "instruction": "make it blue"})
    assert again["stop_reason"] == "planner_stop"  # an ImageRef of the store still works
    monkeypatch.setenv("MIRA_FILE_ROOTS", os.path.dirname(image_path))
    studio = importlib.reload(agent.studio)
    assert studio.graph.invoke({"image": image_path, "instruction": "make it red"})["result"]
    monkeypatch.delenv("MIRA_FILE_ROOTS")
    importlib.reload(agent.studio)
