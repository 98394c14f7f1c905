"""``langgraph dev`` serves the agent offline: run it over the SDK, fetch its images over HTTP.

Starts the real server (``langgraph.json``: graph ``mira_edit`` from ``agent/studio.py``,
custom routes from ``agent/http.py``) on a free loopback port, with its analytics and
version check switched off and LangSmith tracing off, so it makes no outbound connection.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.testing import make_test_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
READY_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:  # the group is gone or killed; reap the leader
        proc.wait(timeout=10)


class DevServer:
    def __init__(self, url: str, artifacts: Path, workdir: Path, log: Path) -> None:
        self.url, self.artifacts, self.workdir, self.log = url, artifacts, workdir, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    if not LANGGRAPH.is_file():
        pytest.fail(f"{LANGGRAPH} not found: install the dev extra (pip install -e '.[dev]')")
    workdir = tmp_path_factory.mktemp("langgraph_dev")
    artifacts = workdir / "art"
    log = workdir / "server.log"
    port = _free_port()
    env = {
        **os.environ,
        "MIRA_ARTIFACTS_DIR": str(artifacts),
        "MIRA_FILE_ROOTS": str(workdir),  # served: input files are read only under here
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI would POST usage data in a thread
        "LANGGRAPH_NO_VERSION_CHECK": "1",  # langgraph-api would ask PyPI for a newer version
        "LANGSMITH_TRACING": "false",  # runs are never traced to LangSmith, key or not
        "LANGCHAIN_TRACING_V2": "false",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        str(LANGGRAPH),
        "dev",
        "--config",
        str(REPO / "langgraph.json"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = DevServer(f"http://127.0.0.1:{port}", artifacts, workdir, log)
    try:
        deadline = started + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{server.output()}")
            try:
                with urllib.request.urlopen(f"{server.url}/ok", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"langgraph dev not ready after {READY_TIMEOUT_S:.0f} s:\n{server.output()}"
                )
            time.sleep(0.2)
        print(f"langgraph dev ready after {time.monotonic() - started:.1f} s")
        yield server
    finally:
        _stop(proc)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _raw(server: DevServer, method: str, path: str) -> int:
    """Send ``path`` exactly as written (urllib and httpx would normalise dot segments)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        resp = conn.getresponse()
        body = resp.read()
        assert b"root:" not in body
        return resp.status
    finally:
        conn.close()


def test_edit_run_streams_and_serves_its_result(dev_server):
    from langgraph_sdk import get_sync_client

    image = dev_server.workdir / "input.png"
    make_test_image(64, 48).save(image)
    t0 = time.monotonic()
    with get_sync_client(url=dev_server.url, api_key=None, timeout=60) as client:
        thread = client.threads.create()
        chunks = list(
            client.runs.stream(
                thread["thread_id"],
                "mira_edit",
                input={
                    "image": str(image),
                    "instruction": "make the left side red, then make the right side blue",
                },
                stream_mode=["updates", "custom"],
            )
        )
        errors = [c.data for c in chunks if c.event == "error"]
        assert not errors, f"run failed: {errors}\n{dev_server.output()}"
        state = client.threads.get_state(thread["thread_id"])["values"]
    print(f"run over the server took {time.monotonic() - t0:.2f} s")

    updated = {node for c in chunks if c.event == "updates" for node in c.data}
    assert {"perceive", "plan", "act", "verify"} <= updated, updated
    custom = [c.data for c in chunks if c.event == "custom"]
    progress = [e for e in custom if e.get("event") == "tool_progress"]
    assert progress, custom
    assert all(e["total"] >= e["done"] >= 1 for e in progress)

    assert state["stop_reason"] == "planner_stop", state.get("steps")
    result = state["result"]
    assert set(result) >= {"uri", "sha256", "width", "height"}
    assert (result["width"], result["height"]) == (64, 48)
    accepted = [
        s["args"]["instruction"] for s in state["steps"] if s["kind"] == "edit" and s["accepted"]
    ]
    assert accepted == ["make the left side red", "make the right side blue"]
    # The graph wrote into MIRA_ARTIFACTS_DIR: the server process saw the variable.
    stored = dev_server.artifacts / result["sha256"][:2] / f"{result['sha256']}.png"
    assert result["uri"] == stored.resolve().as_uri()

    status, headers, body = _get(f"{dev_server.url}/artifacts/{result['sha256']}.png")
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert "immutable" in headers["cache-control"]
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    assert body == stored.read_bytes()
    # Every intermediate image of the trace is reachable too.
    for step in state["steps"]:
        if step.get("output"):
            status, _, body = _get(f"{dev_server.url}/artifacts/{step['output']['sha256']}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == step["output"]["sha256"]


def test_artifact_route_is_read_only_and_strict_behind_the_server(dev_server):
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert _raw(dev_server, "GET", f"/artifacts/{sha}.png") == 404
    assert _raw(dev_server, "GET", f"/artifacts/{sha.upper()}.png") == 400
    assert _raw(dev_server, "GET", "/artifacts/abc.png") == 400
    for path in (
        "/artifacts/..%2F..%2Fetc%2Fpasswd.png",
        "/artifacts/%2e%2e/x.png",
        "/artifacts/../../etc/passwd",
        "/artifacts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    ):
        assert _raw(dev_server, "GET", path) in (400, 404), path
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert _raw(dev_server, method, f"/artifacts/{sha}.png") == 405, method
    # The LangGraph API is still there next to the custom route.
    assert _raw(dev_server, "GET", "/ok") == 200


def test_server_shows_and_accepts_the_context_schema(dev_server):
    """The per-run settings are the graph's context schema: the server lists them with their
    descriptions and defaults, and a run's ``context`` changes that run. (The server itself
    drops context keys its schema does not list before the graph sees them, so the unknown-key
    error is tested in process, tests/test_context.py.)"""
    from langgraph_sdk import get_sync_client

    image = dev_server.workdir / "input_ctx.png"
    make_test_image(64, 48).save(image)
    with get_sync_client(url=dev_server.url, api_key=None, timeout=60) as client:
        assistant = client.assistants.search(graph_id="mira_edit")[0]
        schemas = client.assistants.get_schemas(assistant["assistant_id"])
        props = schemas["context_schema"]["properties"]
        assert {"max_steps", "max_tool_calls", "min_step_score", "seed"} <= set(props)
        assert props["max_steps"]["default"] == 5 and props["max_steps"]["description"]

        inputs = {
            "image": str(image),
            "instruction": "make the left side red, then make the right side blue",
        }
        thread = client.threads.create()
        client.runs.wait(thread["thread_id"], "mira_edit", input=inputs, context={"max_steps": 1})
        state = client.threads.get_state(thread["thread_id"])["values"]
        edits = [s for s in state["steps"] if s["kind"] == "edit"]
        assert len(edits) == 1 and state["stop_reason"] == "budget_exhausted", state["steps"]
