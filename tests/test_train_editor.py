"""The micro editor's training code, on the CPU smoke configuration: it trains, saves a
diffusers folder the real editor class loads, resumes, and its batched validation sampler is
the pipeline's own computation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from agent.microworld.splits import split_of  # noqa: E402
from agent.train.editor import SMOKE_SETTINGS, train_editor  # noqa: E402
from agent.train.editor_model import SMOKE  # noqa: E402

FAST = replace(SMOKE_SETTINGS, seconds=6.0, n_records=24, vae_images=16, val_seeds=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("micro")
    metrics = train_editor(root / "editor", settings=FAST, state=root / "state", log=lambda m: None)
    return root / "editor", metrics, root / "state"


def test_smoke_run_saves_a_sharded_diffusers_folder(trained: tuple[Path, dict, Path]) -> None:
    folder, metrics, _ = trained
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is True
    for part in ("vae", "text_encoder", "transformer", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), part
    sizes = [p.stat().st_size for p in folder.rglob("*.safetensors")]
    assert sizes and max(sizes) <= 15 * 2**20
    meta = json.loads((folder / "micro_editor.json").read_text())
    assert meta["call_kwargs"]["max_sequence_length"] == SMOKE.max_sequence_length
    assert meta["step"] == metrics["step"] > 0
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["validation"]["n"] > 0
    assert set(saved["validation"]["model"]) >= {
        "edit_right",
        "success_strict",
        "success_tolerant",
        "by_kind",
        "by_ref_kind",
    }
    assert "ceiling" in saved["validation"] and "vae_psnr" in saved


def test_the_real_editor_class_loads_and_runs_the_folder(trained: tuple[Path, dict, Path]) -> None:
    from PIL import Image

    from tools.editors.flux2 import Flux2KleinEditor

    folder, _, _ = trained
    meta = json.loads((folder / "micro_editor.json").read_text())
    editor = Flux2KleinEditor(
        str(folder), num_inference_steps=2, call_kwargs=meta["call_kwargs"], min_area=64 * 64
    )
    source = Image.new("RGB", (64, 64), (230, 230, 220))
    out = editor.edit(source, "make the circle red", seed=3)
    again = editor.edit(source, "make the circle red", seed=3)
    assert out.size == (64, 64)
    assert np.array_equal(np.asarray(out), np.asarray(again))


def test_resume_goes_on_from_the_state_or_the_folder(
    trained: tuple[Path, dict, Path], tmp_path: Path
) -> None:
    folder, metrics, state = trained
    warm = train_editor(
        tmp_path / "warm",
        settings=replace(FAST, seconds=3.0),
        init=folder,
        state=state,
        log=lambda m: None,
    )
    assert warm["step"] > metrics["step"]
    assert "vae_steps" not in warm  # the autoencoder is not trained again
    cold = train_editor(
        tmp_path / "cold",
        settings=replace(FAST, seconds=3.0),
        init=tmp_path / "warm",
        log=lambda m: None,
    )
    assert cold["step"] > warm["step"]
    assert len(cold["history"]) == len(warm["history"]) + 1
    # the tokenizer travels unchanged through resumes
    a = (folder / "tokenizer" / "tokenizer.json").read_text()
    b = (tmp_path / "cold" / "tokenizer" / "tokenizer.json").read_text()
    assert a == b


def test_resume_refuses_another_configuration(
    trained: tuple[Path, dict, Path], tmp_path: Path
) -> None:
    folder, _, _ = trained
    other = replace(FAST, config=replace(SMOKE, single_blocks=2))
    with pytest.raises(ValueError, match="another model configuration"):
        train_editor(tmp_path / "x", settings=other, init=folder, log=lambda m: None)


def test_batched_sampler_is_the_pipeline_call(trained: tuple[Path, dict, Path]) -> None:
    from PIL import Image

    from agent.train.editor import (
        _images,
        _to_u8,
        decode_latents,
        encode_images,
        load_pipeline,
        sample,
    )

    folder, _, _ = trained
    pipe = load_pipeline(folder)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    texts = ["make the red circle blue", "remove the star"]
    expected = [
        np.asarray(
            pipe(
                image=Image.fromarray(im),
                prompt=t,
                num_inference_steps=2,
                generator=torch.Generator("cpu").manual_seed(7 + i),
                guidance_scale=1.0,
                **SMOKE.call_kwargs(),
            ).images[0]
        )
        for i, (im, t) in enumerate(zip(images, texts))
    ]
    with torch.no_grad():
        ref, hw = encode_images(pipe, _images(np.stack(images), "cpu"))
        got = _to_u8(decode_latents(pipe, sample(pipe, ref, hw, texts, SMOKE, seed=7, steps=2), hw))
    for e, g in zip(expected, got):
        assert np.abs(e.astype(int) - g.astype(int)).max() <= 1


def test_training_reads_train_seeds_and_train_language_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import agent.microworld as mw
    import agent.microworld.truth as truth

    seen: list[tuple[int, str]] = []
    real_records, real_case = mw.editor_records, truth.make_case

    def records(seeds, *, language="train", **kw):  # type: ignore[no-untyped-def]
        seeds = list(seeds)
        seen.extend((s, language) for s in seeds)
        return real_records(seeds, language=language, **kw)

    def case(seed, *, language="train", **kw):  # type: ignore[no-untyped-def]
        seen.append((seed, language))
        return real_case(seed, language=language, **kw)

    monkeypatch.setattr(mw, "editor_records", records)
    monkeypatch.setattr(truth, "make_case", case)
    train_editor(
        tmp_path / "e", settings=replace(FAST, seconds=2.0, val_seeds=0), log=lambda m: None
    )
    assert seen
    assert {split_of(s) for s, _ in seen} == {"train"}
    assert {lang for _, lang in seen} == {"train"}


def test_cli_trains_and_refuses_a_bad_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.train.cli import main

    assert (
        main(
            [
                "editor",
                "--settings",
                "smoke",
                "--out",
                str(tmp_path / "e"),
                "--init",
                str(tmp_path / "nothing"),
            ]
        )
        == 2
    )
    assert "--init" in capsys.readouterr().err
    assert (
        main(
            [
                "editor",
                "--settings",
                "smoke",
                "--out",
                str(tmp_path / "e"),
                "--seconds",
                "3",
                "--records",
                "12",
            ]
        )
        == 0
    )
    assert (tmp_path / "e" / "model_index.json").is_file()


def test_cached_tokens_embed_as_the_pipeline_does(trained: tuple[Path, dict, Path]) -> None:
    from agent.train.editor import embed_tokens, load_pipeline, prompt_embeds, tokenize

    folder, _, _ = trained
    pipe = load_pipeline(folder)
    texts = [
        "make the red circle blue",
        "Please remove the second star from the left, then "
        "paint the leftmost square green and give the heart stripes.",
    ]
    with torch.no_grad():
        ids, mask = tokenize(pipe, texts, SMOKE)
        assert torch.equal(
            embed_tokens(pipe, ids, mask, SMOKE), prompt_embeds(pipe, texts, SMOKE, "cpu")
        )
