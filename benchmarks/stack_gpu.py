"""Per-call latency and peak memory of each real-size backend, random bf16 weights (timing only).

    python benchmarks/stack_gpu.py editors   # each editor, one edit at ~1 MP, default steps
    python benchmarks/stack_gpu.py vlm       # planner step, critic pass (Avg@N), grounder box;
                                             # decode tokens/s per cache mode vs the bandwidth floor
    python benchmarks/stack_gpu.py vlm --modes fast   # only the fast decode loop
                                                      # (tools/vlm/_decode.py)

Architectures come from tools/model_configs; tokenizers are the inline byte-level ones (any
text, not the real vocabulary), so outputs are noise and every generate call is forced to
its token budget (min_new_tokens). Add --tiny to check the script on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EDITORS = {  # config dir -> (editor class path, image side)
    "FLUX.2-klein-9B": ("tools.editors.flux2:Flux2KleinEditor", 1024),
    "FLUX.2-klein-4B": ("tools.editors.flux2:Flux2KleinEditor", 1024),
    "FLUX.2-dev": ("tools.editors.flux2:Flux2Editor", 1024),  # ~105 GiB of weights: an H200
    "FLUX.1-Kontext-dev": ("tools.editors.flux_kontext:FluxKontextEditor", 1024),
    "Qwen-Image-Edit-2511": ("tools.editors.qwen_edit:QwenImageEditPlusEditor", 1024),
    "instruct-pix2pix": ("tools.editors.ip2p:InstructPix2PixEditor", 512),
}


class Env:
    def __init__(self, tiny: bool) -> None:
        import torch

        self.torch = torch
        self.tiny = tiny
        self.cuda = torch.cuda.is_available() and not tiny
        self.device = "cuda" if self.cuda else "cpu"
        self.name = (
            torch.cuda.get_device_name() if self.cuda else "CPU (tiny models; script check only)"
        )

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def mem(self) -> float:
        return self.torch.cuda.memory_allocated() / 2**30 if self.cuda else 0.0

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0

    def timed(self, fn):
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def bandwidth(self) -> float:
        """Device memory bandwidth, bytes read + written per second (a 4 GiB copy)."""
        if not self.cuda:
            return float("nan")
        x = self.torch.empty(2**31, dtype=self.torch.bfloat16, device="cuda")
        y = self.torch.empty_like(x)
        y.copy_(x)
        times = []
        for _ in range(5):
            dt, _ = self.timed(lambda: y.copy_(x))
            times.append(dt)
        x = y = None  # free the memory (the timed lambda above closes over both names)
        self.free()
        return 2 * 2**32 / sorted(times)[2]


def _load(path: str):
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# -- editors ----------------------------------------------------------------------------------
def bench_editors(env: Env, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        try:
            rows.append(_bench_editor(env, name))
        except Exception as exc:  # one failing backend must not hide the others' figures
            print(f"  {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"backend": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        env.free()
    return rows


def _bench_editor(env: Env, name: str) -> dict:
    from agent.testing import make_test_image
    from tools.editors.tiny import TINY, TINY_CALL_KWARGS, build_from_configs

    cls_path, side = EDITORS[name]
    config = name.replace("-9B", "-4B") if env.tiny else name
    base = env.mem()
    t = time.perf_counter()
    if env.tiny:
        pipe = build_from_configs(config, "float32", "cpu", overrides=TINY[config], seed=0)
        side, kwargs = (
            64,
            {"call_kwargs": TINY_CALL_KWARGS[config]} if TINY_CALL_KWARGS[config] else {},
        )
    else:
        pipe = build_from_configs(config, "bfloat16", "cuda", seed=0)
        kwargs = {}
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t
    weights = env.mem() - base
    editor = _load(cls_path).from_pipeline(pipe, **kwargs)
    image = make_test_image(side, side)
    steps = editor.num_inference_steps
    calls = []
    model = getattr(pipe, "transformer", None) or pipe.unet
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    env.timed(
        lambda: editor.edit(image, "make the car red", seed=0, num_inference_steps=2)
    )  # warm-up
    calls.clear()
    env.reset_peak()
    dt, out = env.timed(lambda: editor.edit(image, "make the car red", seed=0))
    hook.remove()
    row = {
        "backend": name,
        "steps": steps,
        "guidance": editor.guidance_scale,
        "model_calls": len(calls),
        "size": f"{out.width}x{out.height}",
        "edit_s": dt,
        "weights_gib": weights,
        "peak_gib": env.peak(),
        "build_s": build_s,
    }
    print(f"  {row}", flush=True)
    editor = pipe = model = out = None  # free the memory (the timed lambda closes over editor)
    return row


# -- VLMs -------------------------------------------------------------------------------------
def build_vlm(env: Env, config_dir: str, *, side: int, shrink: dict | None = None):
    """A real-size random Qwen-VL from tools/model_configs with an inline tokenizer whose
    special-token ids replace the real ones in the config."""
    from transformers import AutoConfig
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    from tools.editors.tiny import CONFIG_ROOT
    from tools.models import LoadOptions
    from tools.vlm._qwen import processor_without_video, qwen_vl_from_config
    from tools.vlm.tiny import CHAT_TEMPLATES, _build, _token_ids, tiny_tokenizer

    family = "qwen3" if "Qwen3" in config_dir else "qwen2.5"
    if env.tiny:
        return _build(family, 0), family
    raw = json.loads((CONFIG_ROOT / config_dir / "config.json").read_text())
    for key, value in (shrink or {}).items():  # for checking this path on a CPU
        section, _, name = key.partition(".")
        (raw if section == "text_config" and "text_config" not in raw else raw[section])[name] = (
            value
        )
    tok = tiny_tokenizer(family)
    ids = _token_ids(tok)
    raw.update(ids)
    text = raw["text_config"] if "text_config" in raw else raw  # Qwen2.5-VL's config is flat
    text.update(
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    patch = 16 if family == "qwen3" else 14
    pre = Qwen2VLImageProcessorPil(
        size={"shortest_edge": (2 * patch) ** 2, "longest_edge": side * side},
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = processor_without_video(family)(
        image_processor=pre, tokenizer=tok, chat_template=CHAT_TEMPLATES[family]
    )
    device = "cuda" if env.cuda else "cpu"
    vlm = qwen_vl_from_config(
        config, processor, seed=0, options=LoadOptions(dtype="bfloat16", device=device)
    )
    vlm.model.generation_config.eos_token_id = config.text_config.eos_token_id
    vlm.model.generation_config.pad_token_id = config.text_config.pad_token_id
    return vlm, family


MODES = {  # --modes key -> row label
    "dynamic": "dynamic cache, eager",
    "static": "static cache, eager",
    "compile": "static cache + torch.compile",
    "fast": "fast decode loop (static cache, compiled step)",
}


def bench_vlm(
    env: Env, new_tokens: int, passes: int, compile_modes: bool, modes: list[str] | None = None
) -> dict:
    import torch

    from agent.testing import make_test_image
    from tools.vlm._decode import fast_generate

    modes = list(MODES) if modes is None else modes
    bw = env.bandwidth()
    results: dict = {"bandwidth_tb_s": bw / 1e12, "rows": []}
    # ~220 text tokens: the inline tokenizer is byte-level, one token per character
    text = ("Compare the original and the edited image and judge the edit. " * 4)[:220]
    fast_compiled = compile_modes and env.cuda  # uncompiled on a CPU: a script check only

    def messages(images, prompt):
        return [
            {
                "role": "user",
                "content": [
                    *({"type": "image", "image": im} for im in images),
                    {"type": "text", "text": prompt},
                ],
            }
        ]

    def encode(vlm, prompts):
        texts, images = [], []
        for p in prompts:
            t, ims = vlm.render(p)
            texts.append(t)
            images += ims
        return vlm.processor(text=texts, images=images, padding=True, return_tensors="pt").to(
            vlm.device
        )

    def generate(vlm, prompts, n, **kw):
        inputs = encode(vlm, prompts)
        with torch.inference_mode():
            out = vlm.model.generate(
                **inputs,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=kw.pop("do_sample", False),
                pad_token_id=vlm.processor.tokenizer.pad_token_id,
                **kw,
            )
        return inputs["input_ids"].shape[1], out.shape[1] - inputs["input_ids"].shape[1]

    def fast(vlm, prompts, n, do_sample=False, num_return_sequences=1):
        # min_new_tokens=n: random weights may emit EOS; every call makes exactly n tokens
        inputs = encode(vlm, prompts)
        out = fast_generate(
            vlm.model,
            dict(inputs),
            max_new_tokens=n,
            min_new_tokens=n,
            temperature=1.0 if do_sample else 0.0,
            num_return_sequences=num_return_sequences,
            pad_token_id=vlm.processor.tokenizer.pad_token_id,
            compile=fast_compiled,
        )
        return inputs["input_ids"].shape[1], out.shape[1]

    for config_dir, side, n_images, role in (
        ("Qwen2.5-VL-7B-Instruct", 504, 2, "planner step / critic SC call"),
        ("Qwen3-VL-8B-Instruct", 512, 1, "grounder box"),
    ):
        base = env.mem()
        vlm, family = build_vlm(env, config_dir, side=side)
        weights = env.mem() - base
        n_params = sum(p.numel() for p in vlm.model.parameters())
        lm_bytes = 2 * sum(p.numel() for n, p in vlm.model.named_parameters() if "visual" not in n)
        floor = bw / lm_bytes if env.cuda else float("nan")
        img = make_test_image(side, side)
        prompt = messages(
            [img] * n_images,
            text
            if n_images == 2
            else 'Locate "the leftmost cup", output its bbox coordinates using JSON format.',
        )
        n = 8 if env.tiny else new_tokens
        runs = []  # (mode label, call(prompts, n, **kw), its fixed kwargs)
        if "dynamic" in modes:
            runs.append((MODES["dynamic"], generate, {"disable_compile": True}))
        if "static" in modes:
            runs.append(
                (
                    MODES["static"],
                    generate,
                    {"cache_implementation": "static", "disable_compile": True},
                )
            )
        if (
            "compile" in modes and compile_modes and role.startswith("planner")
        ):  # compile costs minutes
            runs.append((MODES["compile"], generate, {"cache_implementation": "static"}))
        if "fast" in modes:
            runs.append((MODES["fast"], fast, {}))
        for mode, call, kw in runs:
            # warm-up with the timed shapes: a static cache of another length is another graph
            call(vlm, [prompt], 1, **dict(kw))
            call(vlm, [prompt], n, **dict(kw))
            env.reset_peak()
            t_pre, (plen, _) = env.timed(lambda: call(vlm, [prompt], 1, **dict(kw)))
            t_all, (_, made) = env.timed(lambda: call(vlm, [prompt], n, **dict(kw)))
            tps = (made - 1) / max(t_all - t_pre, 1e-9)
            row = {
                "model": config_dir,
                "role": role,
                "mode": mode,
                "prompt_tokens": plen,
                "new_tokens": made,
                "prefill_s": t_pre,
                "call_s": t_all,
                "decode_tok_s": tps,
                "floor_tok_s": floor,
                "weights_gib": weights,
                "params_b": n_params / 1e9,
                "peak_gib": env.peak(),
            }
            print(f"  {row}", flush=True)
            results["rows"].append(row)
        # Avg@N critic passes: one sampled call with N sequences vs N calls; the HF mode that ran
        # last, and the fast decode loop
        if role.startswith("planner"):
            for mode, call, kw in runs[-2:] if runs and runs[-1][1] is fast else runs[-1:]:
                for batch in (passes, 1):  # warm-up: each batch size is a new shape (a new graph)
                    call(vlm, [prompt], n, do_sample=True, num_return_sequences=batch, **dict(kw))
                t_batched, _ = env.timed(
                    lambda: call(
                        vlm, [prompt], n, do_sample=True, num_return_sequences=passes, **dict(kw)
                    )
                )
                t_seq, _ = env.timed(
                    lambda: [
                        call(vlm, [prompt], n, do_sample=True, **dict(kw)) for _ in range(passes)
                    ]
                )
                key = "avg_at_n_fast" if call is fast else "avg_at_n"
                results[key] = {
                    "passes": passes,
                    "new_tokens": n,
                    "mode": mode,
                    "batched_s": t_batched,
                    "sequential_s": t_seq,
                }
                print(
                    f"  Avg@{passes} ({mode}): batched {t_batched:.2f} s "
                    f"vs sequential {t_seq:.2f} s",
                    flush=True,
                )
        vlm = None  # free the memory (the timed lambdas close over vlm)
        env.free()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["editors", "vlm"])
    ap.add_argument("--editors", default=",".join(EDITORS))
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"VLM decode modes to time, comma-separated: {','.join(MODES)}",
    )
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    env = Env(args.tiny)
    print(env.name, flush=True)
    if args.part == "editors":
        rows = bench_editors(env, [n for n in args.editors.split(",") if n])
        print(f"\n{env.name}; random bf16 weights, one warm edit each\n")
        print("| editor | image | steps | model calls | s per edit | weights GiB | peak GiB |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            if "error" in r:
                print(f"| {r['backend']} | failed: {r['error'][:80]} | | | | | |")
                continue
            print(
                f"| {r['backend']} | {r['size']} | {r['steps']} | {r['model_calls']} "
                f"| {r['edit_s']:.2f} | {r['weights_gib']:.1f} | {r['peak_gib']:.1f} |"
            )
        result = {"device": env.name, "editors": rows}
    else:
        modes = [m for m in args.modes.split(",") if m]
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            ap.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
        result = {
            "device": env.name,
            **bench_vlm(env, args.new_tokens, args.passes, not args.no_compile, modes),
        }
        print(
            f"\n{env.name}; memory bandwidth {result['bandwidth_tb_s']:.2f} TB/s "
            "(copy, read+write)\n"
        )
        print(
            "| model | role | cache | prompt tokens | prefill s | new tokens | decode tok/s "
            "| floor tok/s | weights GiB |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in result["rows"]:
            print(
                f"| {r['model']} | {r['role']} | {r['mode']} | {r['prompt_tokens']} "
                f"| {r['prefill_s']:.3f} | {r['new_tokens']} | {r['decode_tok_s']:.1f} "
                f"| {r['floor_tok_s']:.0f} | {r['weights_gib']:.1f} |"
            )
        for key in ("avg_at_n", "avg_at_n_fast"):
            if key in result:
                a = result[key]
                print(
                    f"\nAvg@{a['passes']} ({a['new_tokens']} tokens each, {a['mode']}): "
                    f"one batched call {a['batched_s']:.2f} s, "
                    f"{a['passes']} calls {a['sequential_s']:.2f} s"
                )
    result["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
