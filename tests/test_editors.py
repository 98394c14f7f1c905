"""The diffusers editors, each built tiny (random weights, offline) and run end to end on CPU.

Tiny pipelines are shared per module (``tools.editors.tiny.tiny_pipeline`` builds each family
once per process). Torch runs single-threaded here: tiny ops on a busy 2-core machine are many
times slower with two threads spinning against other processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402

from agent import AgentConfig, create_edit_agent  # noqa: E402
from agent.testing import make_test_image  # noqa: E402
from tools.editors import (  # noqa: E402
    DiffusersEditor,
    Flux2Editor,
    Flux2KleinEditor,
    FluxKontextEditor,
    InstructPix2PixEditor,
    QwenImageEditPlusEditor,
    tiny,  # noqa: E402
)
from tools.models import REGISTRY, LoadOptions, ModelNotFoundError  # noqa: E402

FACTORIES = {
    "ip2p": tiny.tiny_ip2p_editor,
    "flux-kontext": tiny.tiny_flux_kontext_editor,
    "flux2-dev": tiny.tiny_flux2_editor,
    "flux2-klein": tiny.tiny_flux2_klein_editor,
    "flux2-klein-base": tiny.tiny_flux2_klein_base_editor,
    "qwen-edit-plus": tiny.tiny_qwen_edit_plus_editor,
}
CLASSES = [
    InstructPix2PixEditor,
    FluxKontextEditor,
    Flux2Editor,
    Flux2KleinEditor,
    QwenImageEditPlusEditor,
]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def editors() -> dict[str, DiffusersEditor]:
    return {name: factory() for name, factory in FACTORIES.items()}


@pytest.fixture(scope="module")
def image():
    return make_test_image(72, 56)  # not a multiple of 16: exercises the resize back


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it, whatever this machine holds."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


class _CountCalls:
    """Counts forward calls of a module and the batch sizes it saw."""

    def __init__(self, module) -> None:
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        self.batches.append(int(hidden.shape[0]))

    def close(self) -> None:
        self._handle.remove()


def _count_transformer_calls(editor: DiffusersEditor, **edit_kwargs) -> list[int]:
    pipe = editor._pipeline()
    model = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    counter = _CountCalls(model)
    try:
        editor.edit(make_test_image(64, 64), "make it red", seed=0, **edit_kwargs)
    finally:
        counter.close()
    return counter.batches


# -- every backend, end to end ----------------------------------------------------------------
# The editor contract (size, mode, progress, same seed same pixels) is in
# tests/test_contract_protocols.py.
@pytest.mark.parametrize("name", list(FACTORIES))
def test_another_seed_gives_other_pixels(editors, image, name):
    editor = editors[name]
    one = editor.edit(image, "make the sky red", seed=3, num_inference_steps=2)
    other = editor.edit(image, "make the sky red", seed=4, num_inference_steps=2)
    assert not np.array_equal(_pixels(one), _pixels(other)), "different seed, same pixels"


def test_progress_counts_the_steps_asked(editors, image):
    calls: list[tuple[int, int]] = []
    editors["flux2-klein"].edit(
        image, "blue", seed=0, num_inference_steps=3, progress=lambda i, n: calls.append((i, n))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_sizes(editors):
    editor = editors["flux2-klein"]  # max_area 128*128, multiple 16, min side 64
    assert editor._generation_size(72, 56, 16) == (80, 64)
    assert editor._generation_size(400, 100, 16) == (256, 64)  # scaled down to the cap, floored
    assert editor._generation_size(20, 20, 16) == (64, 64)  # the pipeline's 64-px minimum
    big = make_test_image(300, 120)
    assert editor.edit(big, "red", seed=0).size == (300, 120)
    assert editor.edit(big, "red", seed=0, width=90, height=50).size == (90, 50)


def test_device_lock_held_around_the_diffusion(editors, image, monkeypatch):
    seen: list[str] = []
    real = REGISTRY.device_lock

    def spy(device):
        seen.append(device)
        return real(device)

    monkeypatch.setattr(REGISTRY, "device_lock", spy)
    editors["flux2-dev"].edit(image, "red", seed=0)
    assert seen == ["cpu"]


def test_concurrent_edits_on_one_shared_pipeline(image):
    from concurrent.futures import ThreadPoolExecutor

    editors = [tiny.tiny_flux2_klein_editor(), tiny.tiny_flux2_klein_editor()]  # one pipeline
    assert editors[0]._pipeline() is editors[1]._pipeline()
    seeds = [11, 12, 13, 14]
    alone = [_pixels(editors[0].edit(image, "red", seed=s, num_inference_steps=3)) for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(
                lambda i: _pixels(
                    editors[i % 2].edit(image, "red", seed=seeds[i], num_inference_steps=3)
                ),
                range(4),
            )
        )
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


# -- guidance: who runs CFG -------------------------------------------------------------------
def test_klein_base_uses_cfg_and_distilled_does_not(editors):
    base, distilled = editors["flux2-klein-base"], editors["flux2-klein"]
    assert base.distilled is False and base.guidance_scale == 4.0 and base.uses_cfg
    assert distilled.distilled is True and not distilled.uses_cfg
    assert _count_transformer_calls(base, num_inference_steps=2) == [1, 1, 1, 1]  # cond + uncond
    assert _count_transformer_calls(distilled, num_inference_steps=2) == [1, 1]
    assert _count_transformer_calls(base, num_inference_steps=2, guidance_scale=1.0) == [1, 1]


def test_klein_defaults():
    assert Flux2KleinEditor("/x").num_inference_steps == 4
    base = Flux2KleinEditor(distilled=False)
    assert (base.model, base.num_inference_steps, base.guidance_scale) == (
        "black-forest-labs/FLUX.2-klein-base-9B",
        50,
        4.0,
    )
    assert Flux2KleinEditor().model == "black-forest-labs/FLUX.2-klein-9B"
    with pytest.raises(ValueError, match="distilled"):
        Flux2KleinEditor(pipeline=tiny.tiny_pipeline("FLUX.2-klein-4B"), distilled=False)


def test_qwen_cfg_and_scoped_reference_sizes(editors):
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    shipped = (module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE)
    editor = editors["qwen-edit-plus"]
    pipe = editor._pipeline()
    during: list[tuple[int, int]] = []
    handle = pipe.transformer.register_forward_hook(
        lambda *_: during.append((module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE))
    )
    try:
        editor.edit(make_test_image(64, 64), "red", seed=0, num_inference_steps=2)  # guidance 4
    finally:
        handle.remove()
    assert len(during) == 4  # CFG: two passes per step
    assert set(during) == {(64 * 64, 56 * 56)}
    assert (
        (module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE) == shipped == (1024 * 1024, 384 * 384)
    )
    assert _count_transformer_calls(editor, num_inference_steps=2, guidance_scale=1.0) == [1, 1]


def test_ip2p_runs_three_branch_guidance(editors):
    assert _count_transformer_calls(editors["ip2p"], num_inference_steps=2) == [3, 3]


# -- where pipelines come from ----------------------------------------------------------------
def test_from_pipeline(image):
    pipe = tiny.tiny_pipeline("FLUX.2-klein-4B")
    editor = Flux2KleinEditor.from_pipeline(
        pipe, call_kwargs=tiny.TINY_CALL_KWARGS["FLUX.2-klein-4B"], max_area=64 * 64
    )
    assert editor.distilled and editor.num_inference_steps == 4 and editor.model is None
    assert editor._pipeline() is pipe
    assert editor.edit(image, "red", seed=0, num_inference_steps=1).size == (72, 56)
    with pytest.raises(TypeError, match="Flux2KleinPipeline"):
        Flux2KleinEditor.from_pipeline(tiny.tiny_pipeline("FLUX.2-dev"))


def test_local_directory_loads_once_through_the_registry(tmp_path, image):
    folder = tmp_path / "klein-tiny"
    tiny.tiny_pipeline("FLUX.2-klein-4B").save_pretrained(folder)
    kwargs = dict(
        options=LoadOptions(device="cpu", dtype="float32"),
        call_kwargs=tiny.TINY_CALL_KWARGS["FLUX.2-klein-4B"],
        max_area=64 * 64,
    )
    first, second = Flux2KleinEditor(str(folder), **kwargs), Flux2KleinEditor(str(folder), **kwargs)
    a = first.edit(image, "red", seed=1, num_inference_steps=2)
    b = second.edit(image, "red", seed=1, num_inference_steps=2)
    assert first._pipeline() is second._pipeline()
    key = ("diffusers", "Flux2KleinPipeline", str(folder), "float32", "cpu", False)
    assert REGISTRY.loads.count(key) == 1
    assert a.size == (72, 56) and np.array_equal(_pixels(a), _pixels(b))
    with pytest.raises(ValueError, match="distilled"):  # a distilled checkpoint, asked as base
        Flux2KleinEditor(str(folder), distilled=False, options=LoadOptions(device="cpu")).edit(
            image, "red"
        )
    REGISTRY.evict(key)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_missing_model_names_it_and_how_to_get_it(cls, empty_hf_cache, image):
    editor = cls(options=LoadOptions(device="cpu"))
    with pytest.raises(ModelNotFoundError) as info:
        editor.edit(image, "make it red", seed=0)
    message = str(info.value)
    assert cls.default_model in message and "hf download" in message and "empty-cache" in message
    assert cls.family in message


def test_missing_local_directory(image):
    editor = InstructPix2PixEditor("/nonexistent/ip2p-weights", options=LoadOptions(device="cpu"))
    with pytest.raises(ModelNotFoundError, match="/nonexistent/ip2p-weights"):
        editor.edit(image, "red")


#: Backend names suggested for ``tools.registry`` (kind "editor") -> factory.
REAL_FACTORIES = {
    "instruct-pix2pix": "tools.editors.ip2p:instruct_pix2pix",
    "flux1-kontext-dev": "tools.editors.flux_kontext:kontext_dev",
    "flux2-dev": "tools.editors.flux2:dev",
    "flux2-klein-4b": "tools.editors.flux2:klein_4b",
    "flux2-klein-9b": "tools.editors.flux2:klein_9b",
    "flux2-klein-base-4b": "tools.editors.flux2:klein_base_4b",
    "flux2-klein-base-9b": "tools.editors.flux2:klein_base_9b",
    "qwen-image-edit-2509": "tools.editors.qwen_edit:qwen_edit_2509",
    "qwen-image-edit-2511": "tools.editors.qwen_edit:qwen_edit_2511",
}
TINY_FACTORIES = {
    f"tiny-{name}": f"tools.editors.tiny:{factory.__name__}" for name, factory in FACTORIES.items()
}


def _resolve(spec: str):
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", list(REAL_FACTORIES))
def test_real_factories_say_which_model_is_missing(name, empty_hf_cache, image):
    editor = _resolve(REAL_FACTORIES[name])()
    assert isinstance(editor, DiffusersEditor) and editor.model
    with pytest.raises(ModelNotFoundError, match=f"{editor.model}.*hf download {editor.model}"):
        editor.edit(image, "make it red", seed=0)


@pytest.mark.parametrize("name", list(TINY_FACTORIES))
def test_tiny_factories_build_editors(name):
    editor = _resolve(TINY_FACTORIES[name])()
    assert isinstance(editor, DiffusersEditor) and editor.model is None
    assert _resolve(TINY_FACTORIES[name])(num_inference_steps=5).num_inference_steps == 5


def test_factory_options_reach_the_editor():
    from tools.editors.flux2 import klein_base_4b

    editor = klein_base_4b(
        model="/models/klein", dtype="float16", device="cpu", num_inference_steps=8
    )
    assert (editor.model, editor.num_inference_steps, editor.distilled) == (
        "/models/klein",
        8,
        False,
    )
    assert editor.options == LoadOptions(dtype="float16", device="cpu")
    with pytest.raises(ValueError, match="dtype"):
        klein_base_4b(dtype="int8")


def test_graph_ends_with_error_when_the_model_is_missing(tmp_path, empty_hf_cache):
    from tools.editors.flux2 import klein_9b

    path = tmp_path / "in.png"
    make_test_image(64, 64).save(path)
    agent = create_edit_agent(
        AgentConfig(preset="dry-run"), editors=klein_9b(), artifacts=tmp_path / "store"
    )
    out = agent.invoke({"image": str(path), "instruction": "make it red"})
    assert out["stop_reason"] == "error"
    assert (out["result"]["width"], out["result"]["height"]) == (64, 64)  # the input, kept
    assert "black-forest-labs/FLUX.2-klein-9B" in out["steps"][-1]["reason"]


# -- argument checks --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, name",
    [
        ({"image": "photo.png"}, "image"),
        ({"instruction": "  "}, "instruction"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"progress": 3}, "progress"),
        ({"height": 64}, "height"),
        ({"width": 0, "height": 64}, "width"),
    ],
)
def test_check_inputs_names_the_argument(bad, name, image):
    editor = Flux2KleinEditor("/never/loaded")  # checks run before any loading
    args = {"image": image, "instruction": "make it red", **bad}
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        editor.edit(args.pop("image"), args.pop("instruction"), **args)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"model": "a/b", "pipeline": object()}, "model or pipeline"),
        ({"model": ""}, "model"),
        ({"max_area": 10}, "max_area"),
        ({"min_area": 10**9}, "min_area"),
        ({"num_inference_steps": -2}, "num_inference_steps"),
        ({"call_kwargs": {"generator": None}}, "call_kwargs"),
    ],
)
def test_constructor_checks(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FluxKontextEditor(**kwargs)


def test_editor_options_checked():
    with pytest.raises(ValueError, match="image_guidance_scale"):
        InstructPix2PixEditor(image_guidance_scale=-1)
    with pytest.raises(ValueError, match="vae_image_size"):
        QwenImageEditPlusEditor(vae_image_size=10)
    with pytest.raises(ValueError, match="auto_resize"):
        FluxKontextEditor(auto_resize="yes")


# -- configs: tiny and real size through one code path ----------------------------------------
@pytest.mark.parametrize(
    "config_dir",
    [
        "FLUX.2-klein-9B",
        "FLUX.2-dev",
        "Qwen-Image-Edit-2511",
        "FLUX.1-Kontext-dev",
        "instruct-pix2pix",
    ],
)
def test_build_from_configs_real_size_on_meta(config_dir):
    counts = json.loads((tiny.CONFIG_ROOT / "PARAM_COUNTS.json").read_text())[config_dir]
    pipe = tiny.build_from_configs(config_dir, "bfloat16", "meta")
    assert type(pipe).__name__ == tiny.CONFIG_DIRS[config_dir]
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            params = list(module.parameters())
            assert sum(p.numel() for p in params) == counts[name], name
            assert {p.dtype for p in params} == {torch.bfloat16} and params[0].is_meta


def test_tiny_pipelines_are_built_from_the_real_configs():
    pipe = tiny.tiny_pipeline("FLUX.2-klein-4B")
    assert pipe.vae_scale_factor == 8  # 4-block VAE, as the real one
    assert (
        pipe.config.is_distilled
        and not tiny.tiny_pipeline("FLUX.2-klein-base-4B").config.is_distilled
    )
    assert pipe.transformer.config.rope_theta == 2000  # untouched real value
    with pytest.raises(ValueError, match="config_dir"):
        tiny.build_from_configs("FLUX.3", "float32", "meta")
    with pytest.raises(ValueError, match="overrides"):
        tiny.build_from_configs("FLUX.2-dev", "float32", "meta", overrides={"unet": {}})


# -- in the agent -----------------------------------------------------------------------------
def test_whole_graph_with_a_tiny_editor(tmp_path):
    path = tmp_path / "in.png"
    make_test_image(64, 64).save(path)
    agent = create_edit_agent(
        AgentConfig(preset="dry-run", max_steps=2),
        editors=tiny.tiny_flux2_klein_editor(),
        artifacts=tmp_path / "store",
    )
    out = agent.invoke(
        {"image": str(path), "instruction": "make the left side red and the top blue"}
    )
    assert out["stop_reason"] in {"planner_stop", "budget_exhausted"}
    assert (out["result"]["width"], out["result"]["height"]) == (64, 64)
    edits = [s for s in out["steps"] if s["kind"] == "edit"]
    assert edits and all(s["tool"] == "Flux2KleinEditor" for s in edits)


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, tools.editors, tools.editors.tiny; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- GPU --------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_klein_on_cuda(image):
    pipe = tiny.build_from_configs(
        "FLUX.2-klein-4B", "bfloat16", "cuda", overrides=tiny.TINY["FLUX.2-klein-4B"], seed=0
    )
    editor = Flux2KleinEditor.from_pipeline(
        pipe, call_kwargs=tiny.TINY_CALL_KWARGS["FLUX.2-klein-4B"], max_area=128 * 128
    )
    a = editor.edit(image, "red", seed=5, num_inference_steps=2)
    b = editor.edit(image, "red", seed=5, num_inference_steps=2)
    assert a.size == (72, 56) and np.array_equal(_pixels(a), _pixels(b))
