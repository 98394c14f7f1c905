"""The project's own micro models, shipped in ``weights/`` and trained by ``mira-train``.

``micro_editor()`` is the ``micro-editor`` backend: the FLUX.2 [klein] editor
(``tools.editors.flux2.Flux2KleinEditor``) loading the shipped folder through
``Flux2KleinPipeline.from_pretrained``, the path of any real checkpoint. The folder's
``micro_editor.json`` gives the call arguments the tiny text encoder needs (prompt length,
hidden-state layers) and the step count it was validated at; ``docs/micro_editor.md`` is its
model card. The model knows the micro-world only: 224 px scenes of simple shapes, and the
train split of the micro-world's language.

``micro_grounder()``, ``micro_critic()`` and ``micro_planner()`` are the roles of the micro VLM
(``weights/micro-vlm``, a ``Qwen2_5_VLForConditionalGeneration`` folder of ``mira-train vlm``)
through the real ``QwenVLGrounder``, ``EditScoreCritic`` and ``MiraPlanner``, all on one model
loaded once; ``docs/micro_vlm_card.md`` is its model card. The planner answers through a LoRA
adapter on that model (``weights/micro-planner``, ``docs/micro_planner_card.md``), switched on
for its calls only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "WEIGHTS",
    "MICRO_EDITOR",
    "MICRO_VLM",
    "micro_editor",
    "micro_editor_meta",
    "micro_vlm_folder",
    "has_critic",
    "micro_planner",
    "MICRO_PLANNER",
    "shipped_planner_lora",
    "weights_digest",
    "PLANNER_NEW_TOKENS",
    "micro_grounder",
    "micro_critic",
]

#: The shipped weights, beside the packages in the repository.
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
MICRO_EDITOR = WEIGHTS / "micro-editor"
#: The shipped micro VLM (model card: ``docs/micro_vlm_card.md``); the environment variable
#: ``MIRA_MICRO_VLM`` names another folder (a ``mira-train vlm`` output).
MICRO_VLM = WEIGHTS / "micro-vlm"
#: The shipped planner: a LoRA adapter on the shipped micro VLM, cut from a full fine-tune of it
#: by ``mira-train extract-lora`` (model card: ``docs/micro_planner_card.md``).
MICRO_PLANNER = WEIGHTS / "micro-planner"


def micro_editor_meta(model: str | Path = MICRO_EDITOR) -> dict[str, Any]:
    """The ``micro_editor.json`` of a micro editor folder; ``FileNotFoundError`` naming the
    folder when it is not one."""
    path = Path(model) / "micro_editor.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no micro editor at {str(model)!r} (no micro_editor.json): the shipped one is "
            f"{str(MICRO_EDITOR)!r} in a checkout of the repository; `mira-train editor` makes one"
        )
    return json.loads(path.read_text())


def micro_editor(*, model: str | Path | None = None, **options: Any) -> Any:
    """The micro editor as a ``Flux2KleinEditor``. ``model`` = another trained folder;
    ``options`` as the editor's (``num_inference_steps``, ``device``, ``dtype``, ...)."""
    from tools.editors._base import factory_kwargs
    from tools.editors.flux2 import Flux2KleinEditor

    folder = Path(model) if model is not None else MICRO_EDITOR
    meta = micro_editor_meta(folder)
    defaults = {
        "num_inference_steps": int(meta["num_inference_steps"]),
        "call_kwargs": dict(meta["call_kwargs"]),
        "dtype": "float32",
    }
    return Flux2KleinEditor(
        **factory_kwargs({**defaults, **options}, model=str(folder), distilled=True)
    )


# -- the micro VLM's roles (the micro Qwen2.5-VL of ``mira-train vlm``) --------------------------
def micro_vlm_folder(model: str | Path | None = None) -> Path:
    """The micro VLM folder: ``model``, else ``$MIRA_MICRO_VLM``, else the shipped
    ``weights/micro-vlm``; ``FileNotFoundError`` naming it when it holds no ``micro_vlm.json``."""
    import os

    folder = Path(model or os.environ.get("MIRA_MICRO_VLM") or MICRO_VLM)
    if not (folder / "micro_vlm.json").is_file():
        raise FileNotFoundError(
            f"no micro VLM at {str(folder)!r} (no micro_vlm.json): the shipped one is "
            f"{str(MICRO_VLM)!r} in a checkout of the repository; `mira-train vlm` makes one, "
            f"and model= or $MIRA_MICRO_VLM names it"
        )
    return folder


def _micro_vlm(
    folder: Path, *, critic: bool = False, grounder: bool = False, device: str = "cpu"
) -> Any:
    """The shared ``QwenVL`` of ``folder`` on ``device`` (loaded once per process and device),
    with the ``editscore`` adapter loaded when ``critic`` and the folder has one
    (``_critic_adapter``), and the folder's ``grounder`` adapter when ``grounder`` (the caller
    has checked with ``grounder_adapter`` that it is there and fits the weights)."""
    from tools.models import LoadOptions
    from tools.vlm._qwen import load_qwen_vl
    from tools.vlm.critic import EDITSCORE_ADAPTER

    options = LoadOptions(device=device, dtype="float32")
    vlm = load_qwen_vl(folder, options=options, what="micro VLM")
    if critic and _critic_adapter(folder) and EDITSCORE_ADAPTER not in vlm.adapters:
        vlm.load_adapter(EDITSCORE_ADAPTER, folder / EDITSCORE_ADAPTER)
    if grounder and GROUNDER_ADAPTER not in vlm.adapters:  # micro_grounder checked the folder
        vlm.load_adapter(GROUNDER_ADAPTER, folder / GROUNDER_ADAPTER)
    return vlm


#: the subfolder of a micro VLM folder holding its grounder LoRA (``mira-train extract-lora``
#: of a grounder-only fine-tune), and the adapter's name on the shared model
GROUNDER_ADAPTER = "grounder"


def grounder_adapter(folder: str | Path) -> str | None:
    """``GROUNDER_ADAPTER`` when the micro VLM ``folder`` holds a grounder LoRA (its
    ``adapter_config.json``) cut against the folder's own weights (the ``base_digest`` of its
    ``extract_lora.json``, when it has one), else None: the grounder answers with the shared
    weights, as it must when they were trained again since the cut."""
    adapter = Path(folder) / GROUNDER_ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        return None
    report = adapter / "extract_lora.json"
    if report.is_file() and not _cut_against(report, folder):
        return None
    return GROUNDER_ADAPTER


def _cut_against(report: Path, folder: str | Path) -> bool:
    """Whether the adapter whose ``extract_lora.json`` is ``report`` was cut against the
    weights ``folder`` holds now (its ``base_digest`` against ``weights_digest``)."""
    return json.loads(report.read_text()).get("base_digest") == weights_digest(folder)


def _critic_adapter(folder: Path) -> str | None:
    """The critic's adapter name when ``folder`` holds the ``editscore`` LoRA, else None: the
    critic was trained into the shared weights (a roles stage with ``--role-shares critic=N``,
    as the shipped model's was until the eighteenth session; docs/micro_vlm.md) and answers
    with the adapters off."""
    from tools.vlm.critic import EDITSCORE_ADAPTER

    return EDITSCORE_ADAPTER if (folder / EDITSCORE_ADAPTER).is_dir() else None


def has_critic(folder: str | Path) -> bool:
    """Whether the micro VLM folder learned the critic: it holds the ``editscore`` adapter, or
    the last call that made it ran the roles stage with the critic in the shared weights (its
    ``micro_vlm.json`` settings: ``roles`` among ``stages``, the critic in ``role_shares``).
    Only the last call's settings are kept, so a folder whose critic came from an earlier call
    must name its critic another way (``--critic-backend``)."""
    folder = Path(folder)
    if _critic_adapter(folder) is not None:
        return True
    manifest = folder / "micro_vlm.json"
    if not manifest.is_file():
        return False
    settings = json.loads(manifest.read_text()).get("settings", {})
    return (
        "roles" in settings.get("stages", [])
        and settings.get("role_shares", {}).get("critic", 0) > 0
    )


#: the micro planner's new tokens: a reasoned answer (``--planner-reasoning``: cell lists, then
#: MIRA's answer) of a 5-edit case needs up to about 110 in the shipped tokenizer, one that
#: names every clause (``--planner-clauses``) up to about 225
PLANNER_NEW_TOKENS = 256


def weights_digest(folder: str | Path) -> str:
    """sha256 over the folder's ``*.safetensors`` files (names and bytes, in name order): the
    base an adapter was cut against (``mira-train extract-lora`` writes it to the adapter's
    ``extract_lora.json``)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def shipped_planner_lora(folder: str | Path) -> Path | None:
    """The shipped planner adapter (``weights/micro-planner``) when ``folder`` is the base it
    was cut against (the digest in its ``extract_lora.json``) and the adapter is there; else
    None: another base, or one trained again since, answers with its own shared-weights
    planner."""
    report = MICRO_PLANNER / "extract_lora.json"
    if not (MICRO_PLANNER / "adapter_config.json").is_file() or not report.is_file():
        return None
    return MICRO_PLANNER if _cut_against(report, folder) else None


def micro_planner(
    *, model: str | Path | None = None, lora: str | Path | bool | None = True, **options: Any
) -> Any:
    """The ``micro-planner`` backend: ``MiraPlanner`` on the micro VLM (greedy, 224 px).
    ``lora``: True (the default) switches on the shipped planner adapter for the planner's
    calls when the micro VLM is the base it was cut against (``shipped_planner_lora``); a
    folder, another adapter (``mira-train grpo``'s ``mira-planner``, or ``mira-train
    extract-lora``'s); None or False, the shared weights' own planner. One process holds one
    planner adapter on a shared model (a second folder raises ``ValueError`` when loaded).
    ``device``: where the model runs (default cpu)."""
    from tools.vlm.planner import MIRA_LORA_ADAPTER, MiraPlanner

    folder = micro_vlm_folder(model)
    device = options.pop("device", "cpu")
    if lora is True:
        lora = shipped_planner_lora(folder)
    elif lora is False:
        lora = None
    elif lora is not None and not (Path(lora) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"lora {str(lora)!r} holds no adapter_config.json")
    adapter_folder = lora

    def load() -> Any:
        vlm = _micro_vlm(folder, device=device)
        if adapter_folder is not None:
            # the same folder again is a no-op; another one under the same name on the shared
            # model raises (two planners of one process cannot both hold it)
            vlm.load_adapter(MIRA_LORA_ADAPTER, adapter_folder)
        return vlm

    adapter = MIRA_LORA_ADAPTER if adapter_folder is not None else None
    return MiraPlanner(
        load,
        adapter=adapter,
        **{"image_size": 224, "max_new_tokens": PLANNER_NEW_TOKENS, **options},
    )


def _check_asked(asked: str | None, own: str | None, folder: Path, role: str) -> None:
    """``FileNotFoundError`` when ``adapter=asked`` names another adapter than the folder's
    own (``own``, None: none); ``role`` says which adapter the backend uses."""
    if asked is not None and asked != own:
        raise FileNotFoundError(
            f"adapter={asked!r}: the micro VLM at {str(folder)!r} has no such adapter (it has "
            f"{'none' if own is None else repr(own)}; the micro {role}, and adapter=None asks "
            "the shared weights)"
        )


def micro_grounder(*, model: str | Path | None = None, **options: Any) -> Any:
    """The ``micro-grounder`` backend: ``QwenVLGrounder`` on the micro VLM, through the
    folder's ``grounder`` adapter when it has one (``grounder_adapter``), else the shared
    weights; ``adapter=None`` asks the shared weights, another name is refused
    (``FileNotFoundError``). MIRAGE parses with the same model, adapters off. ``device``: where
    the model runs (default cpu)."""
    from tools.vlm.grounder import QwenVLGrounder

    folder = micro_vlm_folder(model)
    device = options.pop("device", "cpu")
    own = grounder_adapter(folder)
    asked = options.pop("adapter", own)
    _check_asked(asked, own, folder, f"grounder's is {GROUNDER_ADAPTER!r}, cut against its weights")
    return QwenVLGrounder(
        lambda: _micro_vlm(folder, grounder=asked is not None, device=device),
        **{"max_new_tokens": 96, **options},
        adapter=asked,
    )


def micro_critic(*, model: str | Path | None = None, **options: Any) -> Any:
    """The ``micro-critic`` backend: ``EditScoreCritic`` on the micro VLM, greedy (one pass),
    through the folder's ``editscore`` adapter when it has one, else the shared weights.
    ``adapter=`` names the folder's adapter to use (``FileNotFoundError`` when it lacks it) or
    None for the shared weights. ``device``: where the model runs (default cpu)."""
    from tools.vlm.critic import EDITSCORE_ADAPTER, EditScoreCritic

    folder = micro_vlm_folder(model)
    device = options.pop("device", "cpu")
    own = _critic_adapter(folder)
    _check_asked(options.get("adapter", own), own, folder, f"critic's is {EDITSCORE_ADAPTER!r}")
    return EditScoreCritic(
        lambda: _micro_vlm(folder, critic=True, device=device),
        **{
            "adapter": own,
            "temperature": 0.0,
            "retries": 0,
            "max_new_tokens": 160,
            **options,
        },
    )
