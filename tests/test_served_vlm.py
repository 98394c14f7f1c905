"""The VLM roles on an OpenAI-compatible server: a stub server on 127.0.0.1 (started here,
bounded, stops by itself) checks that each request carries exactly the prompt and images the
local backends build, and answers scripted completions; a whole agent run goes through it."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("langchain_openai")

from PIL import Image  # noqa: E402

from agent import AgentConfig, create_edit_agent  # noqa: E402
from agent.config import PRESETS  # noqa: E402
from agent.testing import make_test_image  # noqa: E402
from tools.mirage.parse import PARSE_PROMPT  # noqa: E402
from tools.prompts import render_planner_prompt  # noqa: E402
from tools.vlm.editscore_prompts import pq_prompt, sc_prompt  # noqa: E402
from tools.vlm.grounder import GROUNDING_PROMPTS  # noqa: E402

INSTRUCTION = "make the left half red"
BASE = "Qwen/Qwen3-VL-8B-Instruct"


class StubServer:
    """``/v1/chat/completions`` on a free port of 127.0.0.1: records each request, answers from
    ``answer(request) -> list of texts`` (one per choice). Serves at most ``max_requests``
    requests within ``deadline_s`` seconds, then stops by itself."""

    def __init__(self, answer, *, max_requests: int = 60, deadline_s: float = 120.0) -> None:
        self.requests: list[dict] = []
        self.errors: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    stub.errors.append(f"unexpected path {self.path!r}")
                stub.requests.append(body)
                try:
                    texts = answer(body)
                except Exception as exc:  # reported by the test, answered as a server error
                    stub.errors.append(repr(exc))
                    self.send_response(500)
                    self.end_headers()
                    return
                payload = json.dumps(
                    {
                        "id": f"stub-{len(stub.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": i,
                                "message": {"role": "assistant", "content": t},
                                "finish_reason": "stop",
                            }
                            for i, t in enumerate(texts)
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 0.2
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        stop_at = time.monotonic() + deadline_s

        def serve() -> None:
            while len(self.requests) < max_requests and time.monotonic() < stop_at:
                self.server.handle_request()
            self.server.server_close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()


def _parts(body: dict) -> tuple[list[str], list[Image.Image]]:
    """The text parts and decoded images of the request's one user message, in order."""
    (message,) = body["messages"]
    assert message["role"] == "user"
    texts, images = [], []
    for item in message["content"]:
        if item["type"] == "text":
            texts.append(item["text"])
        else:
            url = item["image_url"]["url"]
            assert url.startswith("data:image/png;base64,")
            images.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return texts, images


def _kinds(body: dict) -> list[str]:
    return [item["type"] for item in body["messages"][0]["content"]]


def answer(body: dict) -> list[str]:
    """The scripted server: recognises each role by the exact prompt the local backend sends."""
    texts, images = _parts(body)
    planner = render_planner_prompt(INSTRUCTION).split("<image>")
    if texts == planner:
        assert body["model"] == "mira" and body["temperature"] == 0
        assert _kinds(body) == ["text", "image_url", "text", "image_url", "text"]
        assert [im.size for im in images] == [(512, 512), (512, 512)]  # MIRA's 512 input
        first = images[0].tobytes() == images[1].tobytes()  # nothing accepted yet
        return ["NEXT_EDITING_INSTRUCTION: make the left half red" if first else "<stop>"]
    if texts == [PARSE_PROMPT.format(instruction=INSTRUCTION)]:
        assert body["model"] == BASE and _kinds(body) == ["image_url", "text"]
        return ['[{"ref": "the left half", "edit": "make it red"}]']
    if texts == [GROUNDING_PROMPTS["qwen3"].format(expression="the left half")]:
        assert body["model"] == BASE and _kinds(body) == ["image_url", "text"]
        assert images[0].size == (64, 64)
        return ['```json\n[{"bbox_2d": [0, 0, 500, 1000], "label": "left half"}]\n```']
    if texts == [sc_prompt(INSTRUCTION)] or texts == [pq_prompt()]:
        sc = texts == [sc_prompt(INSTRUCTION)]
        assert body["model"] == "editscore-lora"  # the LoRA, by its served name
        assert _kinds(body) == ["image_url"] * (2 if sc else 1) + ["text"]
        sampling = {k: body.get(k) for k in ("temperature", "top_p", "top_k", "seed")}
        # OpenAI's current name of max_tokens (vLLM reads both)
        sampling["max_tokens"] = body.get("max_completion_tokens", body.get("max_tokens"))
        assert sampling == {
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 20,
            "seed": 42,
            "max_tokens": 512,
        }
        verdict = '{"reasoning": "done well", "score": [20, 22]}'
        return [verdict] * body.get("n", 1)
    raise AssertionError(f"unexpected prompt: {texts!r}")


@pytest.fixture
def stub():
    server = StubServer(answer)
    yield server
    assert not server.errors, server.errors


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "in.png"
    make_test_image(64, 64).save(path)
    return path


def _served_options(url: str) -> dict[str, dict[str, str]]:
    return {
        "planner": {"base_url": url},
        "grounder": {"base_url": url},
        "critic": {"base_url": url, "lora": "editscore-lora", "num_passes": "2"},
    }


@pytest.mark.slow
def test_agent_run_through_server_backed_roles(tmp_path, picture, stub):
    """Planner, MIRAGE parser, grounder and critic all answer from the server; the run edits
    the grounded left half, accepts it on the served scores and stops on the planner's stop."""
    config = AgentConfig(
        planner="mira-server",
        editors=("flux2-klein-tiny",),
        grounder="qwen-vl-server",
        critic="editscore-server",
        strategy="mira+mirage",
        max_steps=2,
        backend_options=_served_options(stub.url),
    )
    out = create_edit_agent(config, artifacts=tmp_path / "art").invoke(
        {"image": str(picture), "instruction": INSTRUCTION}
    )
    (edit,) = [s for s in out["steps"] if s["kind"] == "edit"]
    assert edit["accepted"] and out["stop_reason"] == "planner_stop"
    assert edit["info"]["regions"][0]["expression"] == "the left half"
    assert edit["info"]["regions"][0]["box"][:4] in ([0, 0, 32, 64], (0, 0, 32, 64))
    # SC 8 / 8.8, PQ 8 / 8.8 on every pass: Overall 8 (scores / 2.5, mins, sqrt)
    assert edit["scores"]["step"]["overall"] == pytest.approx(8.0)
    models = [r["model"] for r in stub.requests]
    assert models.count("mira") == 2  # the edit, then <stop>
    assert models.count("editscore-lora") == 4  # step and progress critiques, SC + PQ each
    assert [r.get("n") for r in stub.requests if r["model"] == "editscore-lora"] == [2] * 4
    assert models.count(BASE) == 2  # parse, ground


@pytest.mark.slow
def test_cli_reaches_the_servers_through_the_preset_and_role_options(
    tmp_path, picture, stub, monkeypatch
):
    """`mira-edit --preset vllm --backend-option planner.base_url=...`: the preset names the
    served roles, the role-keyed options point them at the server (the 9B editor's weights are
    not on this machine, so the preset's editor is swapped for the tiny one)."""
    from agent.cli import main

    assert PRESETS["vllm"]["planner"] == "mira-server"
    monkeypatch.setitem(PRESETS, "vllm", {**PRESETS["vllm"], "editors": ["flux2-klein-tiny"]})
    options = [
        f"--backend-option={role}.{key}={value}"
        for role, kv in _served_options(stub.url).items()
        for key, value in kv.items()
    ]
    out = tmp_path / "out.png"
    code = main(
        [str(picture), INSTRUCTION, "--preset", "vllm", "--strategy", "mira+mirage", "--quiet"]
        + ["--out", str(out), "--artifacts", str(tmp_path / "art"), "--max-steps", "2", *options]
    )
    assert code == 0 and out.is_file()
    assert {r["model"] for r in stub.requests} == {"mira", BASE, "editscore-lora"}


def test_role_options_and_backend_options_merge(tmp_path):
    """A role's options reach whichever backend fills it; the backend's own key wins."""
    from agent.wiring import backend_options

    config = AgentConfig(
        planner="mira-server",
        backend_options={
            "planner": {"base_url": "http://a:1/v1", "model": "m"},
            "mira-server": {"base_url": "http://b:2/v1"},
        },
    )
    assert backend_options(config, "planner", "mira-server") == {
        "base_url": "http://b:2/v1",
        "model": "m",
    }
    assert backend_options(config, "critic", "editscore-server") == {}


def test_served_roles_refuse_bad_options():
    from tools.registry import build

    with pytest.raises(ValueError, match="base_url must be an http\\(s\\) URL, got 'gpu:8000'"):
        build("planner", "mira-server", base_url="gpu:8000")
    with pytest.raises(ValueError, match="num_passes must be an integer, got 'two'"):
        build("critic", "editscore-server", num_passes="two")
    critic = build("critic", "editscore-server", lora="none")
    assert critic.adapter is None  # the served model itself scores (a merged checkpoint)
    with pytest.raises(ValueError, match="adapter 'editscore' is not served"):
        critic.vlm.served_name("editscore")


def test_a_raw_prompt_is_refused_not_mangled():
    from tools.vlm._qwen import RawPrompt
    from tools.vlm.served import to_openai_messages

    with pytest.raises(ValueError, match="RawPrompt"):
        to_openai_messages(RawPrompt("<|im_start|>user ...", ()))
