"""When served, every ImageRef also carries the http URL of the artifact route."""

from __future__ import annotations

import pytest

from agent import AgentConfig, create_edit_agent
from agent.studio import ServedStore, artifact_url, public_url
from agent.testing import make_test_image


def test_served_store_refs_carry_the_route_url(tmp_path):
    store = ServedStore(tmp_path, base_url="http://127.0.0.1:8123/")
    ref = store.put(make_test_image(8, 8))
    assert ref["url"] == f"http://127.0.0.1:8123/artifacts/{ref['sha256']}.png"
    assert store.open(ref).size == (8, 8)  # the extra key does not disturb reading
    mask = store.put_mask(make_test_image(8, 8).convert("L"))
    assert mask["url"] == artifact_url("http://127.0.0.1:8123", mask["sha256"])
    with pytest.raises(ValueError, match="base_url must be an http"):
        ServedStore(tmp_path, base_url="file:///x")


def test_every_ref_of_a_run_carries_its_url(tmp_path, image_path):
    store = ServedStore(tmp_path / "art", base_url="http://h:1")
    out = create_edit_agent(AgentConfig(preset="dry-run"), artifacts=store).invoke(
        {"image": image_path, "instruction": "make the left side red", "boxes": [[0, 0, 8, 8]]}
    )
    refs = [out["result"]]
    for step in out["steps"]:
        refs += [r for r in (step["input"], step["output"]) if r]
        if "user_region" in step["info"]:
            refs.append(step["info"]["user_region"]["mask"])
    assert len(refs) >= 4
    for ref in refs:
        assert ref["url"] == f"http://h:1/artifacts/{ref['sha256']}.png"


def test_public_url_prefers_mira_public_url(monkeypatch):
    monkeypatch.delenv("MIRA_PUBLIC_URL", raising=False)
    monkeypatch.delenv("LANGGRAPH_API_URL", raising=False)
    assert public_url() is None
    monkeypatch.setenv("LANGGRAPH_API_URL", "http://127.0.0.1:2024")
    assert public_url() == "http://127.0.0.1:2024"
    monkeypatch.setenv("MIRA_PUBLIC_URL", "https://edit.example.org/")
    assert public_url() == "https://edit.example.org"
