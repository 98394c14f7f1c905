"""The fuzz and bad-input corpus (issue 15), through the API and the CLI.

Every kind of ``_badfiles.CORPUS`` (made by code, in tmp_path) must give a typed error
(``InvalidInputError``; exit 2 with one line for the CLI) or a correct run; never another
exception or a traceback. The input folder is byte-for-byte unchanged afterwards, and a refusal
leaves no output file and no new file in the artifact store. Property tests (hypothesis) do
the same for arbitrary bytes and names.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import tempfile
from pathlib import Path

import pytest
from _badfiles import CORPUS, Kind
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from agent import AgentConfig, ArtifactStore, InvalidInputError, create_edit_agent
from agent.cli import main
from agent.images import load_image

LIMIT = 4096 * 4096
INSTRUCTION_KINDS = {"empty instruction", "blank instruction", "too long instruction"}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` (links and special files not followed or read)."""
    found: dict[str, tuple[str, int]] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = os.lstat(path)
            if stat.S_ISREG(st_.st_mode) and st_.st_blocks * 512 >= min(st_.st_size, 1):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISREG(st_.st_mode):  # sparse: never read it whole
                digest = f"sparse:{st_.st_size}"
            elif stat.S_ISLNK(st_.st_mode):
                digest = "link:" + os.readlink(path)
            else:
                digest = "dir" if stat.S_ISDIR(st_.st_mode) else "special"
            found[str(path.relative_to(root))] = (digest, st_.st_mtime_ns)
    return found


def test_the_corpus_has_at_least_40_kinds():
    names = [k.name for k in CORPUS]
    assert len(set(names)) == len(names) >= 40
    assert sum(k.expect == "refuse" for k in CORPUS) >= 40


@pytest.fixture
def world(tmp_path):
    inputs, store, out = tmp_path / "inputs", tmp_path / "store", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    return inputs, store, out


@pytest.mark.parametrize("kind", CORPUS, ids=lambda k: k.name)
def test_corpus_through_the_api(kind: Kind, world):
    inputs, store_root, _ = world
    image = kind.make(inputs)
    store = ArtifactStore(store_root)
    agent = create_edit_agent(AgentConfig(preset="dry-run", max_steps=1), artifacts=store)
    before_inputs, before_store = snapshot(inputs), snapshot(store_root)
    if kind.expect == "refuse":
        with pytest.raises(InvalidInputError):
            agent.invoke({"image": image, "instruction": kind.instruction})
        assert snapshot(store_root) == before_store, "a refusal left a file in the store"
    else:
        final = agent.invoke({"image": image, "instruction": kind.instruction})
        assert final["stop_reason"] in ("planner_stop", "budget_exhausted")
        result = store.open(final["result"])
        assert result.mode == "RGB" and result.width >= 1
    assert snapshot(inputs) == before_inputs, "the input was modified"


@pytest.mark.parametrize("kind", [k for k in CORPUS if not k.api_only], ids=lambda k: k.name)
def test_corpus_through_the_cli(kind: Kind, world, capsys, monkeypatch):
    inputs, store_root, out = world
    monkeypatch.chdir(out)
    image = kind.make(inputs)
    argv = [image, kind.instruction, "--preset", "dry-run", "--out", str(out / "result.png")]
    argv += ["--artifacts", str(store_root), "--max-steps", "1", "-q"]
    before_inputs, before_store = snapshot(inputs), snapshot(store_root)
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "\x1b" not in captured.err + captured.out
    if kind.expect == "refuse":
        assert code == 2, captured.err
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mira-edit: error:"), captured.err
        assert os.listdir(out) == [], "a refusal left an output"
        assert snapshot(store_root) == before_store, "a refusal left a file in the store"
    else:
        assert code == 0, captured.err
        assert sorted(os.listdir(out)) == ["result.png", "result.trace.json", "result_steps"]
        with Image.open(out / "result.png") as result:
            assert result.mode == "RGB"
    assert snapshot(inputs) == before_inputs, "the input was modified"


# -- property tests ------------------------------------------------------------------------------
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _accepted_or_typed(image) -> None:
    try:
        result = load_image(image, max_pixels=LIMIT, max_bytes=1 << 20)
    except InvalidInputError:
        return
    assert result.mode == "RGB" and result.width >= 1 and result.height >= 1


@_FAST
@given(st.binary(max_size=2048))
def test_any_bytes_are_an_image_or_a_typed_error(data):
    _accepted_or_typed(f"data:image/png;base64,{base64.b64encode(data).decode()}")


@_FAST
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_damaged_png_is_an_image_or_a_typed_error(flips):
    data = bytearray(_png_bytes())
    for at, value in flips:
        data[at % len(data)] = value
    _accepted_or_typed(f"data:image/png;base64,{base64.b64encode(bytes(data)).decode()}")


@_FAST
@given(st.text(max_size=300))
def test_any_text_as_image_is_read_only_or_refused(text):
    with tempfile.TemporaryDirectory() as folder:  # relative names land in an empty folder
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            _accepted_or_typed(text)
        finally:
            os.chdir(cwd)


_STORE = ArtifactStore(tempfile.mkdtemp(prefix="mira-fuzz-store-"))
_KNOWN = _STORE.put(Image.new("RGB", (4, 4), (1, 2, 3)))["sha256"]


@_FAST
@given(st.one_of(st.text(max_size=80), st.text("0123456789abcdefABCDEF\n./%", max_size=70)))
def test_store_names_are_exact_hashes_or_refused(name):
    try:
        path = _STORE.path(name)
    except ValueError:
        assert len(name) != 64 or any(c not in "0123456789abcdef" for c in name)
        return
    except FileNotFoundError:
        assert len(name) == 64 and set(name) <= set("0123456789abcdef")
        return
    assert name == _KNOWN and path.parent.parent == _STORE.root


@_FAST
@given(st.text("0123456789abcdef\n\r\t %./\\0Ag", min_size=60, max_size=70))
def test_the_http_route_answers_only_exact_names(name):
    from urllib.parse import quote

    from starlette.testclient import TestClient

    from agent.http import create_app

    with TestClient(create_app(_STORE.root)) as client:
        r = client.get("/artifacts/" + quote(name, safe="") + ".png")
    if name == _KNOWN:
        assert r.status_code == 200
    else:
        assert r.status_code in (400, 404), (name, r.status_code)
