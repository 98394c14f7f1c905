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

import numpy as np
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


def _png_b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_chat_graph_answers_a_user_message_with_an_image_block_over_the_sdk(dev_server):
    """The chat-native graph (``mira_chat``): a user message with text and an image block,
    streamed over ``langgraph_sdk``, ends with an AI message holding the result image; the
    editing subgraph's progress comes through the stream."""
    import base64
    import io

    from langgraph_sdk import get_sync_client
    from PIL import Image

    image = dev_server.workdir / "chat_input.png"
    make_test_image(64, 48).save(image)
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "make the left side red, then make the right side blue"},
            {
                "type": "image",
                "source_type": "base64",
                "mime_type": "image/png",
                "data": _png_b64(image),
            },
        ],
    }
    with get_sync_client(url=dev_server.url, api_key=None, timeout=60) as client:
        thread = client.threads.create()
        chunks = list(
            client.runs.stream(
                thread["thread_id"],
                "mira_chat",
                input={"messages": [message]},
                stream_mode=["updates", "custom"],
                stream_subgraphs=True,
            )
        )
        errors = [c.data for c in chunks if c.event == "error"]
        assert not errors, f"run failed: {errors}\n{dev_server.output()}"
        messages = client.threads.get_state(thread["thread_id"])["values"]["messages"]

    custom = [c.data for c in chunks if c.event.startswith("custom")]
    assert any(e.get("event") == "tool_progress" for e in custom), [c.event for c in chunks]
    assert any(c.event.startswith("updates|edit:") for c in chunks), [c.event for c in chunks]
    answer = messages[-1]
    assert answer["type"] == "ai"
    text, block = answer["content"]
    assert text["text"].startswith("Applied 2 edits; stopped: planner_stop.")
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    edited = Image.open(io.BytesIO(base64.b64decode(block["base64"]))).convert("RGB")
    assert edited.size == (64, 48)
    assert edited.tobytes() != Image.open(image).convert("RGB").tobytes()


def test_approval_interrupts_and_resumes_over_the_sdk(dev_server):
    """``approve_edits`` in a run's context: the run stops at an interrupt carrying the planned
    edit; runs with ``command={"resume": ...}`` approve it, replace it or stop."""
    from langgraph_sdk import get_sync_client

    image = dev_server.workdir / "input_approve.png"
    make_test_image(64, 48).save(image)
    inputs = {
        "image": str(image),
        "instruction": "make the left side red, then make the right side blue",
    }
    context = {"approve_edits": True}

    def asked(client, thread_id):
        state = client.threads.get_state(thread_id)
        interrupts = [i for task in state["tasks"] for i in task["interrupts"]]
        return interrupts[0]["value"] if interrupts else None, state["values"]

    def edits(values):
        return [s["args"]["instruction"] for s in values["steps"] if s["kind"] == "edit"]

    with get_sync_client(url=dev_server.url, api_key=None, timeout=60) as client:
        runs = {}
        for answers in (
            ["approve", {"action": "approve"}],
            [{"action": "replace", "instruction": "make the top green"}, "stop"],
            ["stop"],
        ):
            thread_id = client.threads.create()["thread_id"]
            client.runs.wait(thread_id, "mira_edit", input=inputs, context=context)
            seen = []
            for answer in answers:
                value, _ = asked(client, thread_id)
                assert value is not None, f"no interrupt\n{dev_server.output()}"
                seen.append(value["edit"])
                client.runs.wait(
                    thread_id, "mira_edit", command={"resume": answer}, context=context
                )
            value, values = asked(client, thread_id)
            assert value is None
            runs[len(runs)] = (seen, values)

    seen, values = runs[0]
    assert seen == ["make the left side red", "make the right side blue"]
    assert values["stop_reason"] == "planner_stop"
    assert edits(values) == seen
    seen, values = runs[1]
    # the planner (it splits the instruction) proposes the part still missing once more
    assert seen == ["make the left side red", "make the left side red"]
    assert values["stop_reason"] == "user_stop" and edits(values) == ["make the top green"]
    seen, values = runs[2]
    assert seen == ["make the left side red"]
    assert values["stop_reason"] == "user_stop" and edits(values) == []
    assert values["result"]["sha256"] == values["source"]["sha256"]


def test_served_refs_carry_urls_clients_can_open(dev_server):
    from langgraph_sdk import get_sync_client

    image = dev_server.workdir / "input_urls.png"
    make_test_image(64, 48).save(image)
    with get_sync_client(url=dev_server.url, api_key=None, timeout=60) as client:
        thread = client.threads.create()
        client.runs.wait(
            thread["thread_id"],
            "mira_edit",
            input={"image": str(image), "instruction": "make the left side red"},
        )
        values = client.threads.get_state(thread["thread_id"])["values"]
    refs = [values["result"], values["source"], values["image"]]
    refs += [s["output"] for s in values["steps"] if s.get("output")]
    for ref in refs:
        assert ref["url"] == f"{dev_server.url}/artifacts/{ref['sha256']}.png", ref
        status, _, body = _get(ref["url"])
        assert status == 200 and hashlib.sha256(body).hexdigest() == ref["sha256"]


def _openai(dev_server):
    import openai

    return openai.OpenAI(base_url=f"{dev_server.url}/v1", api_key="unused", max_retries=0)


def test_openai_images_edit_returns_an_image(dev_server):
    """The official ``openai`` client against ``POST /v1/images/edits`` of the served app."""
    import base64
    import io

    from PIL import Image

    image = dev_server.workdir / "openai_in.png"
    make_test_image(64, 48).save(image)
    source = np.asarray(Image.open(image).convert("RGB"))
    client = _openai(dev_server)
    with open(image, "rb") as f:
        answer = client.images.edit(
            image=f, prompt="make the left side red", response_format="b64_json"
        )
    edited = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json))).convert("RGB")
    )
    assert edited.shape == source.shape and (edited != source).any()

    # a mask: its fully transparent pixels mark where to edit; outside, nothing changes
    mask = np.full((48, 64, 4), 255, np.uint8)
    mask[:, :10, 3] = 0
    mask_path = dev_server.workdir / "openai_mask.png"
    Image.fromarray(mask, "RGBA").save(mask_path)
    with open(image, "rb") as f, open(mask_path, "rb") as m:
        answer = client.images.edit(
            image=f, mask=m, prompt="make the left side red", response_format="url"
        )
    url = answer.data[0].url
    assert url.startswith(f"{dev_server.url}/artifacts/")
    status, _, body = _get(url)
    assert status == 200
    edited = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert (edited[:, 10:] == source[:, 10:]).all() and (edited[:, :10] != source[:, :10]).any()


def test_openai_images_edit_errors_have_openais_shape(dev_server):
    import openai

    client = _openai(dev_server)
    image = dev_server.workdir / "openai_err.png"
    make_test_image(32, 32).save(image)
    not_png = dev_server.workdir / "not.png"
    not_png.write_text("hello")
    cases = [
        ({"image": not_png, "prompt": "x"}, "image", "not an image"),
        ({"image": image, "prompt": " "}, "prompt", "prompt is required"),
        ({"image": image, "prompt": "x", "response_format": "jpeg"}, "response_format", "jpeg"),
        ({"image": image, "prompt": "x", "mask": image}, "mask", "alpha channel"),
    ]
    for args, param, needle in cases:
        files = {k: open(v, "rb") for k, v in args.items() if isinstance(v, Path)}
        try:
            with pytest.raises(openai.BadRequestError) as info:
                client.images.edit(**{**args, **files})
        finally:
            for f in files.values():
                f.close()
        error = info.value.body
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        assert needle in error["message"], error
