"""Shared fixtures: a store in tmp_path, a test picture on disk, an agent builder."""

from __future__ import annotations

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
        return create_edit_agent(config, planner=planner, critic=critic,
                                 editors=editors if editors is not None else PaintEditor(),
                                 checkpointer=checkpointer, artifacts=store)

    return build
