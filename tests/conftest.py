"""Shared fixtures and fakes: a store in tmp_path, a test picture on disk, an agent builder,
a recording fake chat model (langchain-core's ``GenericFakeChatModel``) and the decoder of the
image blocks it receives."""

from __future__ import annotations

import base64
import io

import pytest

from agent import AgentConfig, ArtifactStore, create_edit_agent
from agent.testing import PaintEditor, make_test_image


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def image_path(tmp_path) -> str:
    path = tmp_path / "input.png"
    make_test_image(64, 48).save(path)
    return str(path)


@pytest.fixture
def make_agent(store):
    """``make_agent(planner, critic, editors=PaintEditor(), **config_fields)``."""

    def build(planner, critic, editors=None, checkpointer=None, **fields):
        config = AgentConfig(**fields)
        return create_edit_agent(
            config,
            planner=planner,
            critic=critic,
            editors=editors if editors is not None else PaintEditor(),
            checkpointer=checkpointer,
            artifacts=store,
        )

    return build


def _recording_chat(answers):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class RecordingChat(GenericFakeChatModel):
        seen: list = []

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.seen.append(messages)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    return RecordingChat(messages=iter([AIMessage(content=a) for a in answers]), seen=[])


@pytest.fixture
def recording_chat():
    """``recording_chat(answers)``: a fake chat model that answers ``answers`` in order and
    keeps every message list it was sent in ``.seen``."""
    return _recording_chat


@pytest.fixture
def decode_block():
    """``decode_block(block)``: the RGB PIL image of an ``image_url`` content block (a base64
    PNG data URL, as the chat-model backends send it)."""
    from PIL import Image

    def decode(block):
        url = block["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")

    return decode
