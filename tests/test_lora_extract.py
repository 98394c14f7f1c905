"""``mira-train extract-lora`` (agent/train/lora_extract.py): a full fine-tune of the micro VLM
cut to a peft LoRA on its base, and the micro planner's shipped adapter (agent/micro.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from agent.train import vlm_model as M  # noqa: E402
from agent.train.lora_extract import PLANNER_TARGETS, extract_lora  # noqa: E402


def _vlm(seed: int = 0):
    tok = M.build_tokenizer(M.corpus(2), M.SMOKE_MODEL)
    return M.build_model(M.SMOKE_MODEL, M.build_processor(tok), seed=seed)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(base, tuned): the tuned folder moves every targeted linear weight and bias, the norms
    before the first layer's attention and MLP and the vision merger's (which the cut folds
    into their layers), and the final norm (which no adapter holds)."""
    import re

    import torch

    def trained_look(vlm):
        """Norm scales away from 1 and biases away from 0, as a trained base has them (a fold
        that forgot the base's scale or bias would pass on a fresh model)."""
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for name, param in vlm.model.named_parameters():
                if name.endswith("norm.weight") or "ln_q" in name:
                    param.mul_(0.5 + torch.rand(param.shape, generator=g))
                elif name.endswith(".bias"):
                    param.add_(0.1 * torch.randn(param.shape, generator=g))
        return vlm

    root = tmp_path_factory.mktemp("extract")
    base = M.save_micro_vlm(trained_look(_vlm()), root / "base", config=M.SMOKE_MODEL, extra={})
    vlm = trained_look(_vlm())
    g = torch.Generator().manual_seed(1)
    pattern = re.compile(PLANNER_TARGETS)
    moved = 0
    with torch.no_grad():
        for name, module in vlm.model.named_modules():
            if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name):
                module.weight += 0.05 * torch.randn(module.weight.shape, generator=g)
                if module.bias is not None:
                    module.bias += 0.05 * torch.randn(module.bias.shape, generator=g)
                moved += 1
        layer = vlm.model.model.language_model.layers[0]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight *= 1 + 0.2 * torch.rand(norm.weight.shape, generator=g)
        ln_q = vlm.model.model.visual.merger.ln_q.weight  # per channel: the tiling matters
        ln_q *= 1 + torch.rand(ln_q.shape, generator=g)
        vlm.model.model.language_model.norm.weight += 0.1
    assert moved > 0
    tuned = M.save_micro_vlm(vlm, root / "tuned", config=M.SMOKE_MODEL, extra={})
    return base, tuned


def _logits(vlm, adapter: str | None = None):
    """The model's logits on a few tokens with ``adapter`` on (None: every adapter off)."""
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    if vlm.adapters:
        if adapter is None:
            vlm.model.disable_adapters()
        else:
            vlm.model.enable_adapters()
            vlm.model.set_adapter(adapter)
    with torch.no_grad():
        return vlm.model(input_ids=ids).logits


def test_full_rank_adapter_gives_the_tuned_linear_layers(folders, tmp_path):
    """At full rank the adapter on the base is the fine-tune exactly, its norms folded into
    their layers and its biases in lora_bias: the logits equal the tuned model's once the
    one change no adapter holds (the final norm) is undone."""
    import torch

    from tools.models import LoadOptions
    from tools.vlm._qwen import load_qwen_vl

    base, tuned = folders
    report = extract_lora(base, tuned, tmp_path / "lora", rank=512, dtype="float32")
    assert report["kept"] == pytest.approx(1.0)
    assert report["left_out"] > 0  # the final norm, which the adapter cannot hold
    assert report["modules"] > 0
    assert (report["folded_norms"], report["bias"]) == (3, True)
    on_base = load_qwen_vl(base, options=LoadOptions(device="cpu", dtype="float32"))
    on_base.load_adapter("cut", tmp_path / "lora")
    want = load_qwen_vl(tuned, options=LoadOptions(device="cpu", dtype="float32"))
    plain = load_qwen_vl(base, options=LoadOptions(device="cpu", dtype="float32"))
    with torch.no_grad():
        want.model.model.language_model.norm.weight.copy_(
            plain.model.model.language_model.norm.weight
        )
    got = _logits(on_base, "cut")
    assert torch.allclose(got, _logits(want), atol=1e-4)
    assert not torch.allclose(_logits(on_base), _logits(want), atol=1e-2)  # the adapter acts
    # every cut layer, the vision merger's too (no text-only forward passes through it): the
    # base weight plus the adapter's product is the tuned weight, times the folded norm's
    # factor on the layers a moved norm feeds (the merger's first reads 4 patches side by
    # side); the base bias plus lora_B's is the tuned bias
    tuned_modules = dict(want.model.named_modules())
    plain_modules = dict(plain.model.named_modules())
    layer0 = "model.language_model.layers.0."
    feeds = {
        **{f"{layer0}self_attn.{x}_proj": f"{layer0}input_layernorm" for x in "qkv"},
        **{f"{layer0}mlp.{x}_proj": f"{layer0}post_attention_layernorm" for x in ("gate", "up")},
        "model.visual.merger.mlp.0": "model.visual.merger.ln_q",
    }
    merger = folded = biased = 0
    for name, module in on_base.model.named_modules():
        if hasattr(module, "lora_A") and "cut" in module.lora_A:
            delta = module.lora_B["cut"].weight @ module.lora_A["cut"].weight
            weight = module.base_layer.weight + delta * module.scaling["cut"]
            want_weight = tuned_modules[name].weight
            if name in feeds:
                norm = feeds[name]
                factor = tuned_modules[norm].weight / plain_modules[norm].weight
                want_weight = want_weight * factor.repeat(weight.shape[1] // factor.numel())
                folded += 1
            assert torch.allclose(weight, want_weight, atol=1e-5), name
            if module.base_layer.bias is not None:
                bias = module.base_layer.bias + module.lora_B["cut"].bias * module.scaling["cut"]
                assert torch.allclose(bias, tuned_modules[name].bias, atol=1e-5), name
                biased += 1
            merger += ".merger." in name
    assert (merger, folded) == (2, 6) and biased > 0


def test_low_rank_keeps_part_of_the_change_and_writes_bf16(folders, tmp_path):
    from safetensors.torch import load_file

    base, tuned = folders
    report = extract_lora(base, tuned, tmp_path / "lora", rank=2)
    assert 0 < report["kept"] < 0.9
    weights = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    assert {str(w.dtype) for w in weights.values()} == {"torch.bfloat16"}
    assert {w.shape[0] for k, w in weights.items() if k.endswith("lora_A.weight")} == {2}
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 2
    assert json.loads((tmp_path / "lora" / "extract_lora.json").read_text()) == report


def test_out_is_replaced_whole_and_bad_arguments_are_named(folders, tmp_path):
    base, tuned = folders
    out = tmp_path / "lora"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")  # an adapter folder made before
    (out / "stale.txt").write_text("old")
    extract_lora(base, tuned, out, rank=1)
    assert not (out / "stale.txt").exists()
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        extract_lora(base, tuned, tmp_path / "x", rank=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        extract_lora(base, tuned, tmp_path / "x", rank=1, dtype="float16")
    with pytest.raises(ValueError, match="names no linear layer"):
        extract_lora(base, tuned, tmp_path / "x", rank=1, target_modules="nothing")
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["lora"]  # no staging folder left


def test_a_failed_write_keeps_the_old_adapter_and_models_are_never_replaced(
    folders, tmp_path, monkeypatch
):
    import safetensors.torch

    base, tuned = folders
    out = tmp_path / "lora"
    first = extract_lora(base, tuned, out, rank=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        extract_lora(base, tuned, out, rank=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["lora"]  # no staging folder left
    assert first["rank"] == 1
    for bad in (base, tuned, base.parent):  # replacing it would delete a model
        with pytest.raises(ValueError, match=f"out {str(bad)!r} is or holds the"):
            extract_lora(base, tuned, bad, rank=1)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="has files and no adapter_config.json"):
        extract_lora(base, tuned, other, rank=1)
    assert (other / "keep.txt").read_text() == "mine"


def test_other_architectures_are_refused(folders, tmp_path):
    import dataclasses

    base, _ = folders
    wider = dataclasses.replace(M.SMOKE_MODEL, intermediate=96)
    tok = M.build_tokenizer(M.corpus(2), wider)
    other = M.save_micro_vlm(
        M.build_model(wider, M.build_processor(tok)), tmp_path / "wide", config=wider, extra={}
    )
    with pytest.raises(ValueError, match=r"not the same architecture: parameter '.*mlp.*' has"):
        extract_lora(base, other, tmp_path / "lora", rank=1)


def test_cli_extracts_and_checks_its_folders(folders, tmp_path, capsys):
    from agent.train.cli import main

    base, tuned = folders
    code = main(
        ["extract-lora", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "l")]
        + ["--rank", "3"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["rank"] == 3
    assert (
        main(
            [
                "extract-lora",
                "--base",
                str(tmp_path),
                "--tuned",
                str(tuned),
                "--out",
                "x",
                "--rank",
                "1",
            ]
        )
        == 2
    )
    assert "--base" in capsys.readouterr().err
    assert (
        main(
            [
                "extract-lora",
                "--base",
                str(base),
                "--tuned",
                str(tuned),
                "--out",
                "x",
                "--rank",
                "0",
            ]
        )
        == 2
    )
    assert "--rank must be >= 1, got 0" in capsys.readouterr().err


def test_micro_planner_switches_on_the_shipped_adapter_for_its_own_base_only(
    folders, tmp_path, monkeypatch
):
    from agent import micro
    from tools.vlm.planner import MIRA_LORA_ADAPTER

    base, tuned = folders
    shipped_planner = tmp_path / "micro-planner"
    extract_lora(base, tuned, shipped_planner, rank=2)
    monkeypatch.setattr(micro, "MICRO_VLM", base)
    monkeypatch.setattr(micro, "MICRO_PLANNER", shipped_planner)
    monkeypatch.delenv("MIRA_MICRO_VLM", raising=False)
    loaded = []

    class Shared:  # records what the planner loads onto the shared model
        adapters: list[str] = []

        def load_adapter(self, name, path):
            loaded.append((name, Path(path)))

    monkeypatch.setattr(micro, "_micro_vlm", lambda folder, **_: Shared())
    planner = micro.micro_planner()
    assert planner.adapter == MIRA_LORA_ADAPTER
    assert planner.vlm is not None and loaded == [(MIRA_LORA_ADAPTER, shipped_planner)]
    for off in (None, False):
        loaded.clear()
        assert micro.micro_planner(lora=off).adapter is None
        assert micro.micro_planner(lora=off).vlm is not None and loaded == []
    # another base: its own planner, the shipped adapter was not cut against it
    assert micro.micro_planner(model=tuned).adapter is None
    loaded.clear()
    other = micro.micro_planner(model=tuned, lora=shipped_planner)
    assert other.vlm is not None and loaded == [(MIRA_LORA_ADAPTER, shipped_planner)]
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json"):
        micro.micro_planner(lora=tmp_path)
    # the base trained again (other weights, same folder): the old adapter is not paired
    report = json.loads((shipped_planner / "extract_lora.json").read_text())
    assert report["base_digest"] == micro.weights_digest(base) != micro.weights_digest(tuned)
    report["base_digest"] = micro.weights_digest(tuned)
    (shipped_planner / "extract_lora.json").write_text(json.dumps(report))
    assert micro.micro_planner().adapter is None
    (shipped_planner / "adapter_config.json").unlink()
    assert micro.shipped_planner_lora(tuned) is None  # no adapter shipped: the shared weights'


def test_the_shipped_planner_adapter_was_cut_against_the_shipped_micro_vlm():
    """The repository's pair agrees: retraining weights/micro-vlm without cutting the planner
    again would switch the planner back to the shared weights' own."""
    from agent import micro

    assert micro.shipped_planner_lora(micro.MICRO_VLM) == micro.MICRO_PLANNER


def test_merge_puts_the_adapter_into_a_micro_vlm_folder(folders, tmp_path, capsys):
    """``merge_lora`` of a full-rank cut gives the tuned linear layers back (to bf16, the
    folders' storage), as a micro VLM folder that loads and names the adapter merged; the
    CLI refuses what is no adapter or would overwrite a model."""
    import re

    import torch

    from agent.train.cli import main
    from agent.train.lora_extract import merge_lora
    from agent.train.vlm import load_folder
    from agent.train.vlm_model import MANIFEST

    base, tuned = folders
    extract_lora(base, tuned, tmp_path / "lora", rank=512, dtype="float32")
    out = merge_lora(base, tmp_path / "lora", tmp_path / "merged")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["merged_adapter"]["layers"] > 0
    merged, _, _ = load_folder(out)
    want, _, _ = load_folder(tuned)
    plain, _, _ = load_folder(base)
    pattern = re.compile(PLANNER_TARGETS)
    m, w, p = (dict(x.model.named_modules()) for x in (merged, want, plain))
    checked = 0
    for name, module in m.items():
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name):
            if ".layers.0." not in name and ".merger." not in name:  # no moved norm feeds it
                assert torch.allclose(module.weight, w[name].weight, atol=2e-2), name
            if module.bias is not None:
                assert torch.allclose(module.bias, w[name].bias, atol=2e-2), name
            assert not torch.allclose(module.weight, p[name].weight, atol=1e-3), name
            checked += 1
    assert checked == manifest["merged_adapter"]["layers"]
    for norm in ("norm", "layers.0.input_layernorm"):  # the norms stay the base's: folded in
        key = f"model.language_model.{norm}.weight"
        assert torch.equal(merged.model.get_parameter(key), plain.model.get_parameter(key))
    # so the merged model computes the tuned one, but for the final norm no adapter holds
    with torch.no_grad():
        want.model.model.language_model.norm.weight.copy_(
            plain.model.model.language_model.norm.weight
        )
    got, goal, before = (_logits(x) for x in (merged, want, plain))
    assert (got - goal).abs().max() < 0.1 * (before - goal).abs().max()
    assert main(["merge-lora", "--base", str(base), "--adapter", str(tmp_path), "--out", "x"]) == 2
    assert "is no LoRA folder" in capsys.readouterr().err
    args = ["merge-lora", "--base", str(base), "--adapter", str(tmp_path / "lora")]
    for bad in (base, tmp_path / "lora"):
        assert main([*args, "--out", str(bad)]) == 2
        assert f"out {str(bad)!r} is or holds the" in capsys.readouterr().err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    assert main([*args, "--out", str(notes)]) == 2
    assert "has files and no micro_vlm.json" in capsys.readouterr().err
    (out / "stale.txt").write_text("old")
    assert main([*args, "--out", str(out)]) == 0  # a micro VLM folder: replaced whole
    assert f"into {str(base)!r}: {out}" in capsys.readouterr().out
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora", "merged", "notes"]


def test_merge_scales_by_alpha_over_r_and_refuses_what_it_cannot_merge(folders, tmp_path):
    """The product is scaled by lora_alpha / r (the project's own LoRAs use alpha = 2r): the
    same change written with alpha = 2r and B halved merges to the same weights; a base the
    adapter was not cut against, a DoRA config and foreign weights are refused by name."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from agent.train.lora_extract import merge_lora
    from agent.train.vlm import load_folder

    base, tuned = folders
    lora = tmp_path / "lora"
    extract_lora(base, tuned, lora, rank=4, dtype="float32")
    one = load_folder(merge_lora(base, lora, tmp_path / "one"))[0]
    config = json.loads((lora / "adapter_config.json").read_text())
    doubled = tmp_path / "doubled"
    shutil.copytree(lora, doubled)
    (doubled / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 8}))
    weights = load_file(str(doubled / "adapter_model.safetensors"))
    halved = {k: v / 2 if ".lora_B." in k else v for k, v in weights.items()}
    save_file(halved, str(doubled / "adapter_model.safetensors"))
    two = load_folder(merge_lora(base, doubled, tmp_path / "two"))[0]
    for (name, p), (_, q) in zip(one.model.named_parameters(), two.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-2), name
    with pytest.raises(ValueError, match="was cut against other weights"):
        merge_lora(tuned, lora, tmp_path / "x")
    (doubled / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="sets use_dora=True"):
        merge_lora(base, doubled, tmp_path / "x")
    (doubled / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {**weights, "x.lora_magnitude_vector": torch.ones(2)},
        str(doubled / "adapter_model.safetensors"),
    )
    with pytest.raises(ValueError, match="holds weights no LoRA merge adds"):
        merge_lora(base, doubled, tmp_path / "x")
    o_proj = next(k for k in weights if "o_proj.lora_B.weight" in k)
    rows = weights[o_proj].shape[0]
    save_file(
        {**weights, o_proj.replace(".weight", ".bias"): torch.ones(rows)},
        str(doubled / "adapter_model.safetensors"),
    )
    with pytest.raises(ValueError, match="has a bias change and no bias in the base"):
        merge_lora(base, doubled, tmp_path / "x")
    (doubled / "adapter_config.json").write_text("{")
    with pytest.raises(ValueError, match="is no readable LoRA config"):
        merge_lora(base, doubled, tmp_path / "x")
    assert not (tmp_path / "x").exists()
