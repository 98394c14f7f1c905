"""The read-only artifact route of ``agent/http.py``, in process (starlette TestClient)."""

from __future__ import annotations

import hashlib
import importlib

import pytest
from starlette.testclient import TestClient

from agent import ArtifactStore
from agent.testing import make_test_image


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "art"
    monkeypatch.setenv("MIRA_ARTIFACTS_DIR", str(path))
    return path


@pytest.fixture
def http(root):
    """The module, imported once MIRA_ARTIFACTS_DIR points into tmp_path (importing it imports
    agent.studio, which builds the dry-run graph on the store root)."""
    return importlib.import_module("agent.http")


@pytest.fixture
def client(http):
    # The module-level app: it resolves MIRA_ARTIFACTS_DIR on each request.
    with TestClient(http.app) as c:
        yield c


@pytest.fixture
def ref(root):
    return ArtifactStore(root).put(make_test_image(32, 24))


def test_serves_a_stored_png_byte_identical(client, ref, root):
    on_disk = ArtifactStore(root).path(ref).read_bytes()
    for url in (f"/artifacts/{ref['sha256']}.png", f"/artifacts/{ref['sha256']}"):
        r = client.get(url)
        assert r.status_code == 200, r.text
        assert r.content == on_disk
        assert hashlib.sha256(r.content).hexdigest() == ref["sha256"]
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-length"] == str(len(on_disk))
        assert "immutable" in r.headers["cache-control"]
        assert r.headers["etag"] == f'"{ref["sha256"]}"'
        assert r.headers["x-content-type-options"] == "nosniff"


def test_head_gives_headers_without_body(client, ref, root):
    r = client.head(f"/artifacts/{ref['sha256']}.png")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(ArtifactStore(root).path(ref).stat().st_size)


def test_if_none_match_gives_304(client, ref):
    url = f"/artifacts/{ref['sha256']}.png"
    for header in (f'"{ref["sha256"]}"', f'W/"{ref["sha256"]}"', f'"x", "{ref["sha256"]}"', "*"):
        r = client.get(url, headers={"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_unknown_hash_is_404(client, ref):
    unknown = hashlib.sha256(b"not stored").hexdigest()
    assert client.get(f"/artifacts/{unknown}.png").status_code == 404
    assert client.head(f"/artifacts/{unknown}.png").status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "abc.png",  # short
        "A" * 64 + ".png",  # uppercase hex
        "g" * 64 + ".png",  # not hex
        "a" * 65 + ".png",  # too long
        "a" * 64 + ".jpg",  # other extension
        "a" * 64 + ".png.png",
        "%20" + "a" * 64 + ".png",  # leading space
        "...png",
    ],
)
def test_malformed_names_are_400(client, ref, name):
    r = client.get(f"/artifacts/{name}")
    assert r.status_code == 400, (name, r.status_code, r.text)


def test_uppercase_of_a_stored_hash_is_refused(client, ref):
    r = client.get(f"/artifacts/{ref['sha256'].upper()}.png")
    assert r.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/..%2F..%2Fetc%2Fpasswd.png",
        "/artifacts/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/artifacts/%2e%2e/x.png",
        "/artifacts/..",
        "/artifacts/%2e%2e",
        "/artifacts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/artifacts/..%5C..%5Cetc%5Cpasswd.png",
        "/artifacts/%2Fetc%2Fpasswd",
        "/artifacts//etc/passwd",
        "/artifacts/x/../../etc/passwd.png",
    ],
)
def test_traversal_attempts_are_refused(client, ref, path):
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"root:" not in r.content


def test_a_stored_file_is_found_only_by_its_own_hash(client, ref, root):
    # The two-level layout <aa>/<sha>.png is not addressable through the URL.
    sha = ref["sha256"]
    assert client.get(f"/artifacts/{sha[:2]}/{sha}.png").status_code == 404
    assert client.get(f"/artifacts/{sha[:2]}%2F{sha}.png").status_code in (400, 404)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_write_methods_are_405(client, ref, root, method):
    url = f"/artifacts/{ref['sha256']}.png"
    r = client.request(method, url, content=b"x")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert ArtifactStore(root).read_bytes(ref)  # still there, intact


def test_follows_the_env_var_at_request_time(client, ref, tmp_path, monkeypatch):
    url = f"/artifacts/{ref['sha256']}.png"
    assert client.get(url).status_code == 200
    monkeypatch.setenv("MIRA_ARTIFACTS_DIR", str(tmp_path / "elsewhere"))
    assert client.get(url).status_code == 404
    assert not (tmp_path / "elsewhere").exists()  # serving never creates the root


def test_create_app_with_an_explicit_root(http, tmp_path):
    store = ArtifactStore(tmp_path / "explicit")
    ref = store.put(make_test_image(8, 8, seed=3))
    with TestClient(http.create_app(store.root)) as c:
        assert c.get(f"/artifacts/{ref['sha256']}.png").content == store.path(ref).read_bytes()


def test_corrupt_artifact_is_500_not_served(client, ref, root):
    path = ArtifactStore(root).path(ref)
    path.write_bytes(path.read_bytes() + b"tampered")
    r = client.get(f"/artifacts/{ref['sha256']}.png")
    assert r.status_code == 500
    assert b"tampered" not in r.content


def test_studio_root_follows_the_env_var(root, monkeypatch, tmp_path):
    from agent import default_artifacts_dir
    from agent.studio import artifacts_root

    assert artifacts_root() == root
    monkeypatch.setenv("MIRA_ARTIFACTS_DIR", "")
    assert artifacts_root() == default_artifacts_dir()
    monkeypatch.delenv("MIRA_ARTIFACTS_DIR")
    assert artifacts_root() == default_artifacts_dir()


# -- issue 15: answers from verified bytes only; strict names ----------------------------------
def _corrupt(root, ref):
    path = ArtifactStore(root).path(ref)
    path.write_bytes(b"not the artifact")
    return ref["sha256"]


def test_head_and_conditional_get_of_a_corrupt_artifact_are_errors(client, root, ref):
    sha = _corrupt(root, ref)
    assert client.head(f"/artifacts/{sha}.png").status_code == 500
    r = client.get(f"/artifacts/{sha}.png", headers={"If-None-Match": f'"{sha}"'})
    assert r.status_code == 500 and "immutable" not in r.headers.get("cache-control", "")


def test_a_linked_artifact_is_never_served_as_another(client, root, ref):
    other = ArtifactStore(root).put(make_test_image(16, 16))
    path = ArtifactStore(root).path(other)
    path.unlink()
    path.symlink_to(ArtifactStore(root).path(ref))
    for method in ("get", "head"):
        r = getattr(client, method)(f"/artifacts/{other['sha256']}.png")
        assert r.status_code == 500 and "etag" not in r.headers


def test_an_encoded_newline_after_the_hash_is_refused(client, ref):
    r = client.get(f"/artifacts/{ref['sha256']}%0A.png")
    assert r.status_code == 400
    r = client.get(f"/artifacts/{ref['sha256']}%0A")
    assert r.status_code == 400
