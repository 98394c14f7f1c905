"""The content-addressed store: round trips, dedup, atomic writes, path safety."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from agent import ArtifactStore
from agent.testing import make_test_image


def test_round_trip_and_content_address(store):
    img = make_test_image(30, 20)
    ref = store.put(img)
    path = store.path(ref)
    assert ref["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.is_relative_to(store.root) and ref["uri"] == path.as_uri()
    assert (ref["width"], ref["height"]) == (30, 20)
    assert np.array_equal(np.asarray(store.open(ref)), np.asarray(img))


def test_same_pixels_stored_once_and_no_temp_files_left(store):
    a = store.put(make_test_image(16, 16))
    b = store.put(make_test_image(16, 16))
    c = store.put(make_test_image(16, 16, seed=3))
    assert a == b and a["sha256"] != c["sha256"]
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 2 and not any(p.name.startswith(".") for p in files)  # no temporary left


def test_non_rgb_is_stored_as_rgb(store):
    ref = store.put(make_test_image(8, 8).convert("L"))
    assert store.open(ref).mode == "RGB"


def test_masks(store):
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    ref = store.put_mask(mask)
    assert np.array_equal(store.open_mask(ref), mask)
    with pytest.raises(ValueError, match="HxW"):
        store.put_mask(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("sha", ["../../etc/passwd", "ab" * 31, "AB" * 32, "g" * 64, ""])
def test_malformed_hashes_refused(store, sha):
    with pytest.raises(ValueError, match="sha256"):
        store.path(sha)


def test_ref_pointing_outside_the_root_refused(store, tmp_path):
    ref = store.put(make_test_image(8, 8))
    outside = tmp_path / "elsewhere" / f"{ref['sha256']}.png"
    outside.parent.mkdir()
    outside.write_bytes(store.path(ref).read_bytes())
    for uri in (
        outside.as_uri(),
        store.root.as_uri() + "/../elsewhere/" + outside.name,
        "http://example.com/" + outside.name,
    ):
        with pytest.raises(ValueError):
            store.open({**ref, "uri": uri})


def test_symlink_escape_refused(store, tmp_path):
    ref = store.put(make_test_image(8, 8))
    other = ArtifactStore(tmp_path / "other")
    evil = other.root / ref["sha256"][:2]
    evil.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(store.path(ref).parent, evil)  # other's shard dir points into store
    with pytest.raises((ValueError, FileNotFoundError)):
        other.path(ref["sha256"])


def test_unknown_and_corrupt_artifacts(store):
    with pytest.raises(FileNotFoundError, match="not in the store"):
        store.path("0" * 64)
    ref = store.put(make_test_image(8, 8))
    store.path(ref).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="corrupt"):
        store.open(ref)
    assert not store.contains("0" * 64)


def test_temp_files_of_killed_writers_are_cleaned_at_start_up(tmp_path):
    import subprocess
    import sys

    from agent.testing import make_test_image

    store = ArtifactStore(tmp_path / "s")
    ref = store.put(make_test_image(8, 8))
    shard = store.path(ref).parent
    dead = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    stale = shard / f".{ref['sha256']}.png.{dead}.k3j2h1.tmp"
    live = shard / f".{ref['sha256']}.png.{os.getpid()}.a1b2c3.tmp"
    stale.write_bytes(b"half a png")
    live.write_bytes(b"being written")
    ArtifactStore(tmp_path / "s")
    assert not stale.exists()
    assert live.exists()  # a live writer's file is never touched


# -- issue 15: a self-healing store that trusts nothing on disk --------------------------------
def test_put_rewrites_a_corrupt_artifact(store):
    image = make_test_image(8, 8)
    ref = store.put(image)
    path = store.path(ref)
    good = path.read_bytes()
    path.write_bytes(b"bit rot")
    with pytest.raises(ValueError, match="corrupt"):
        store.read_bytes(ref)
    assert store.put(image) == ref
    assert path.read_bytes() == good and store.read_bytes(ref) == good


def test_a_link_inside_the_store_never_serves_another_image(store):
    a = store.put(make_test_image(8, 8, seed=1))
    b = store.put(make_test_image(8, 8, seed=2))
    path_a = store.path(a)
    path_a.unlink()
    path_a.symlink_to(store.path(b))  # hash A now points at image B
    with pytest.raises(ValueError, match="link"):
        store.read_bytes(a)
    assert not store.contains(a)
    store.put(make_test_image(8, 8, seed=1))  # put() replaces the link with the real file
    assert not path_a.is_symlink()
    assert hashlib.sha256(store.read_bytes(a)).hexdigest() == a["sha256"]
    assert hashlib.sha256(store.read_bytes(b)).hexdigest() == b["sha256"]


def test_a_fifo_or_folder_at_an_artifact_name_is_refused_then_healed(store):
    image = make_test_image(8, 8)
    ref = store.put(image)
    path = store.path(ref)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        store.read_bytes(ref)
    assert store.put(image) == ref and store.read_bytes(ref)
    path.unlink()
    path.mkdir()
    assert store.put(image) == ref and store.read_bytes(ref)


def test_a_name_with_a_trailing_newline_is_not_a_hash(store):
    ref = store.put(make_test_image(8, 8))
    with pytest.raises(ValueError, match="not a sha256"):
        store.path(ref["sha256"] + "\n")
