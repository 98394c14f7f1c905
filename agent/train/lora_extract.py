"""A LoRA adapter cut from a full fine-tune of the micro VLM (``mira-train extract-lora``).

The micro planner is trained best as a full fine-tune of the shared micro VLM (every weight of
the language model moves; docs/micro_planner_card.md), but the repository ships one base that
the critic, grounder and parser share, and a second full model would not fit the working tree a
GPU call carries. So the planner ships as what its fine-tune changed, factored as a peft LoRA:

- for every linear layer the target pattern names, the change ``W_tuned - W_base`` is cut to its
  ``rank`` largest singular directions, ``U_r S_r V_r^T = B A`` with ``B = U_r sqrt(S_r)`` and
  ``A = sqrt(S_r) V_r^T``, and ``lora_alpha = rank`` so that peft's scale is 1;
- the change of a norm's scale (the RMSNorm before a layer's attention, before its MLP, and
  the vision merger's) is folded into the linear layers it feeds, whose input it scales per
  channel: ``W x_hat (g_tuned)`` is ``(W diag(g_tuned / g_base)) x_hat g_base``, so the cut
  layer's change is taken against that; the change of those layers' biases rides in peft's
  ``lora_bias`` (a bias on ``lora_B``, which peft keeps for extracted LoRAs). Both switch with
  the adapter, like its weights; without them the micro planner's cut wrote invalid answers;
- what the adapter still cannot hold (the embeddings, the final norm, the frozen vision tower)
  stays the base's: the report gives the share of the targeted layers' change that the rank
  kept, and the relative change of the parameters it leaves out, so a user sees what it lost;
- the report names the base's weights by digest (``agent.micro.weights_digest``), so that a
  base trained again is not paired with an adapter cut against the old one.

The folder is a plain peft adapter (``adapter_config.json``, ``adapter_model.safetensors``),
loaded with ``QwenVL.load_adapter`` and switched on per call like any other.

``merge_lora`` (``mira-train merge-lora``) goes the other way: the base with an adapter's
product added to its weights, a micro VLM folder that ``mira-train vlm --init`` trains on (the
full fine-tune itself is not shipped). Every role of the merged folder answers with the
adapter's change, so it is the planner's folder, not a new shared base.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tools._io import replace_folder

__all__ = ["PLANNER_TARGETS", "extract_lora", "merge_lora"]

#: the language model's attention and MLP projections (the critic's LoRA targets) and the
#: vision merger's two linear layers, which the roles stage also trains
PLANNER_TARGETS = (
    r".*(language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    r"|visual\.merger\.mlp\.\d+)"
)
DTYPES = ("bfloat16", "float32")
#: norms folded into the linear layers they feed (those layers are their output's only
#: readers): (the norm's name, the layers' names relative to the norm's parent)
FOLDS = (
    (
        r".*\.layers\.\d+\.input_layernorm",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ),
    (r".*\.layers\.\d+\.post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    (r".*\.merger\.ln_q", ("mlp.0",)),
)


def _model(folder: Path) -> Any:
    """A fresh float32 copy of the folder's model on the CPU: never the process's shared one,
    which may carry adapter layers."""
    from tools.models import LoadOptions
    from tools.vlm._qwen import _load

    options = LoadOptions(device="cpu", dtype="float32").resolved()
    return _load(str(folder), str(folder), options, name=str(folder)).model


def _check_out(out: Path, marker: str, **models: Path) -> None:
    """``ValueError`` naming ``out`` when replacing it would delete a model: it is (or holds)
    one of ``models`` (named by their keyword), or it is a folder with files but no ``marker``
    file (not a folder this module writes)."""
    target = out.resolve()
    for what, folder in models.items():
        if target == folder.resolve() or target in folder.resolve().parents:
            raise ValueError(f"out {str(out)!r} is or holds the {what} folder {str(folder)!r}")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ValueError(
            f"out {str(out)!r} has files and no {marker}: it is replaced whole, so name a new "
            "folder or one this command wrote"
        )


def _folds(
    b_modules: dict[str, Any], t_modules: dict[str, Any], linears: set[str]
) -> tuple[dict[str, Any], set[str]]:
    """({linear layer: the per-channel factor g_tuned / g_base of the norm feeding it}, the
    folded norms' parameter names), for every norm of ``FOLDS`` whose scale the fine-tune
    moved, that scales its input (an RMSNorm or a LayerNorm without a bias: a norm's bias
    would reach its layers' bias through the weight, which this does not do), whose layers
    are all cut, and whose base scale has no zero to divide by."""
    import torch

    scales: dict[str, Any] = {}
    folded: set[str] = set()
    for norm_pattern, fed in FOLDS:
        for name, norm in b_modules.items():
            if not re.fullmatch(norm_pattern, name):
                continue
            kind = type(norm).__name__
            if not (kind.endswith("RMSNorm") or isinstance(norm, torch.nn.LayerNorm)):
                continue
            if getattr(norm, "bias", None) is not None:
                continue
            g_base = norm.weight.detach().double()
            g_tuned = t_modules[name].weight.detach().double()
            layers = [f"{name.rsplit('.', 1)[0]}.{f}" for f in fed]
            if torch.equal(g_base, g_tuned) or not all(x in linears for x in layers):
                continue
            if bool((g_base.abs() < 1e-6).any()):
                continue
            if any(b_modules[x].in_features % g_base.numel() for x in layers):
                continue
            for layer in layers:
                scales[layer] = g_tuned / g_base
            folded.add(f"{name}.weight")
    return scales, folded


def extract_lora(
    base: str | Path,
    tuned: str | Path,
    out: str | Path,
    *,
    rank: int,
    target_modules: str = PLANNER_TARGETS,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Write the LoRA of ``tuned`` against ``base`` (two folders of the same architecture) to
    ``out`` (an adapter folder or a new one, replaced whole, never half-written) and return its
    report, also saved as ``out/extract_lora.json``: rank, modules, the share of the targeted
    layers' change kept (``kept``: of its squared norm, 0..1), the relative change of the
    parameters that changed and the adapter does not hold (``left_out``: their change's norm
    over their norm), the norms folded into their layers (``folded_norms``), whether the
    adapter carries bias changes (``bias``: peft's ``lora_bias``), the base's
    ``weights_digest`` and the adapter's size in bytes."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from agent.micro import weights_digest

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    base, tuned, out = Path(base), Path(tuned), Path(out)
    _check_out(out, "adapter_config.json", base=base, tuned=tuned)
    b_model, t_model = _model(base), _model(tuned)
    b_params, t_params = dict(b_model.named_parameters()), dict(t_model.named_parameters())
    for name in sorted(set(b_params) | set(t_params)):
        b_shape = tuple(b_params[name].shape) if name in b_params else None
        t_shape = tuple(t_params[name].shape) if name in t_params else None
        if b_shape != t_shape:
            raise ValueError(
                f"base {str(base)!r} and tuned {str(tuned)!r} are not the same architecture: "
                f"parameter {name!r} has shape {b_shape} in the base and {t_shape} in the tuned "
                "folder (None: missing)"
            )
    pattern = re.compile(target_modules)
    t_modules = dict(t_model.named_modules())
    linears = [
        name
        for name, module in b_model.named_modules()
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
    ]
    if not linears:
        raise ValueError(
            f"target_modules {target_modules!r} names no linear layer of {str(base)!r}"
        )
    b_modules = dict(b_model.named_modules())
    scales, folded = _folds(b_modules, t_modules, set(linears))
    weights: dict[str, Any] = {}
    biases: dict[str, Any] = {}
    targeted: set[str] = set(folded)
    kept = total = 0.0
    for name in linears:
        module = b_modules[name]
        tuned_layer = t_modules[name]
        targeted.add(f"{name}.weight")
        # the tuned layer as it acts on the base norm's output (its scale's change folded in)
        scale = scales.get(name)
        t_weight = tuned_layer.weight.detach().double()
        if scale is not None:
            # the merger's layer reads its norm's output of several patches side by side
            t_weight = t_weight * scale.repeat(t_weight.shape[1] // scale.numel())[None, :]
        delta = t_weight - module.weight.detach().double()
        if module.bias is not None or tuned_layer.bias is not None:
            targeted.add(f"{name}.bias")
            zero = torch.zeros(delta.shape[0], dtype=delta.dtype)
            t_bias = zero if tuned_layer.bias is None else tuned_layer.bias.detach().double()
            b_bias = zero if module.bias is None else module.bias.detach().double()
            biases[name] = t_bias - b_bias
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        # a layer narrower than ``rank`` keeps its whole change, padded with zeros to the rank
        b = torch.zeros(delta.shape[0], rank, dtype=delta.dtype)
        a = torch.zeros(rank, delta.shape[1], dtype=delta.dtype)
        b[:, :r], a[:r] = u[:, :r] * root, root[:, None] * vh[:r]
        key = f"base_model.model.{name}"
        weights[f"{key}.lora_B.weight"] = b.to(getattr(torch, dtype)).contiguous()
        weights[f"{key}.lora_A.weight"] = a.to(getattr(torch, dtype)).contiguous()
        kept += float((s[:r] ** 2).sum())
        total += float((s**2).sum())
    bias = any(bool(v.any()) for v in biases.values())
    if bias:  # peft's lora_bias puts a bias on every lora_B: zero where nothing changed
        for name in linears:
            zero = torch.zeros(weights[f"base_model.model.{name}.lora_B.weight"].shape[0])
            value = biases.get(name, zero)
            weights[f"base_model.model.{name}.lora_B.bias"] = value.to(getattr(torch, dtype))
    # what no LoRA holds: the parameters outside the targeted weights that the fine-tune moved
    # (the frozen ones, the vision tower's, would only dilute the figure)
    change = norm = 0.0
    for name, p in b_params.items():
        moved = t_params[name].detach().double() - p.detach().double()
        if name not in targeted and bool(moved.any()):
            change += float(moved.norm() ** 2)
            norm += float(p.detach().double().norm() ** 2)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        # the layers cut, by full name: a pattern would also match modules that are no linear
        # layer (the merger's activation sits between its two linears)
        target_modules=sorted(linears),
        lora_bias=bias,
        base_model_name_or_path=str(base),
    )
    report = {
        "base": str(base),
        "tuned": str(tuned),
        "rank": rank,
        "dtype": dtype,
        "modules": len(linears),
        "folded_norms": len({f.rsplit(".", 1)[0] for f in folded}),
        "bias": bias,
        "kept": kept / total if total else 1.0,
        "left_out": (change / norm) ** 0.5 if norm else 0.0,
        "base_digest": weights_digest(base),
    }

    def fill(staging: Path) -> None:
        config.save_pretrained(str(staging))
        save_file(weights, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        report["bytes"] = (staging / "adapter_model.safetensors").stat().st_size
        (staging / "extract_lora.json").write_text(json.dumps(report, indent=2) + "\n")

    replace_folder(out, fill)
    return report


#: adapter_config.json fields whose non-default values a plain ``W + (alpha / r) B A`` merge
#: would get wrong
_UNMERGED = {
    "use_rslora": False,
    "use_dora": False,
    "fan_in_fan_out": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "modules_to_save": None,
}


def _plain_lora_config(adapter: Path, config_file: Path) -> dict[str, Any]:
    """The adapter's config, ``ValueError`` naming the file or field when it is unreadable or
    asks for more than a plain LoRA merge does."""
    try:
        config = json.loads(config_file.read_text())
        rank, alpha = config["r"], config["lora_alpha"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(config_file)!r} is no readable LoRA config ({exc!r})") from None
    if not (isinstance(rank, int) and rank >= 1 and isinstance(alpha, (int, float))):
        raise ValueError(f"{str(config_file)!r}: r={rank!r} and lora_alpha={alpha!r}")
    for field, plain in _UNMERGED.items():
        if config.get(field, plain) not in (plain, None, False, {}, []):
            raise ValueError(
                f"adapter {str(adapter)!r} sets {field}={config[field]!r}: only a plain LoRA "
                "merges here"
            )
    return config


def merge_lora(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """A micro VLM folder at ``out`` (new, or a micro VLM folder; replaced whole): ``base`` with
    the LoRA at ``adapter`` merged into its weights (``W + scale * B A`` for every layer the
    adapter holds), its tokenizer, processor and manifest (which names the adapter merged)."""
    from dataclasses import fields

    import torch
    from safetensors.torch import load_file

    from agent.train.vlm import load_folder
    from agent.train.vlm_model import MANIFEST, MicroVLMConfig, save_micro_vlm

    base, adapter, out = Path(base), Path(adapter), Path(out)
    if not (base / MANIFEST).is_file():
        raise ValueError(f"base {str(base)!r} is no micro VLM folder (no {MANIFEST})")
    config_file, weights_file = (
        adapter / "adapter_config.json",
        adapter / "adapter_model.safetensors",
    )
    if not (config_file.is_file() and weights_file.is_file()):
        raise ValueError(
            f"adapter {str(adapter)!r} is no LoRA folder (adapter_config.json and "
            "adapter_model.safetensors)"
        )
    _check_out(out, MANIFEST, base=base, adapter=adapter)
    config = _plain_lora_config(adapter, config_file)
    scale = config["lora_alpha"] / config["r"]
    report = adapter / "extract_lora.json"
    if report.is_file():  # an adapter this module cut: it names the base it belongs to
        from agent.micro import weights_digest

        cut_against = json.loads(report.read_text()).get("base_digest")
        digest = weights_digest(base)
        if cut_against is not None and cut_against != digest:
            raise ValueError(
                f"adapter {str(adapter)!r} was cut against other weights (digest "
                f"{cut_against[:12]}...) than base {str(base)!r} ({digest[:12]}...)"
            )
    lora = load_file(str(weights_file))
    unknown = sorted(k for k in lora if not re.search(r"(\.lora_[AB]\.weight|\.lora_B\.bias)$", k))
    if unknown:
        raise ValueError(
            f"adapter {str(adapter)!r} holds weights no LoRA merge adds: {unknown[0]!r}"
        )
    vlm, _, _ = load_folder(base)
    if vlm.adapters:
        raise ValueError(
            f"base {str(base)!r} holds adapters ({vlm.adapters}): merge into a plain one"
        )
    modules = dict(vlm.model.named_modules())
    merged = 0
    with torch.no_grad():
        for key in sorted(k for k in lora if k.endswith(".lora_A.weight")):
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b_key = key.replace(".lora_A.", ".lora_B.")
            if name not in modules or b_key not in lora:
                raise ValueError(
                    f"adapter {str(adapter)!r}: layer {name!r} is not in the base or has no lora_B"
                )
            a, b = lora[key].double(), lora[b_key].double()
            weight = modules[name].weight
            if (b.shape[0], a.shape[1]) != tuple(weight.shape):
                raise ValueError(
                    f"adapter {str(adapter)!r}: layer {name!r} has shape {tuple(weight.shape)} in "
                    f"the base, the adapter's product {(b.shape[0], a.shape[1])}"
                )
            weight += (scale * (b @ a)).to(weight.dtype)
            bias = lora.get(key.replace(".lora_A.weight", ".lora_B.bias"))
            if bias is not None and bool(bias.any()):  # lora_bias: scaled like B's product
                if modules[name].bias is None:
                    raise ValueError(
                        f"adapter {str(adapter)!r}: layer {name!r} has a bias change and no "
                        "bias in the base"
                    )
                modules[name].bias += (scale * bias.double()).to(modules[name].bias.dtype)
            merged += 1
    manifest = json.loads((base / MANIFEST).read_text())
    model_fields = {f.name for f in fields(MicroVLMConfig)}
    model = MicroVLMConfig(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in manifest["model"].items()
            if k in model_fields
        }
    )
    extra = {k: v for k, v in manifest.items() if k != "model"}
    extra["merged_adapter"] = {"folder": str(adapter), "layers": merged}
    replace_folder(out, lambda staging: save_micro_vlm(vlm, staging, config=model, extra=extra))
    return out
