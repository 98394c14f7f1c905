"""``mira-train``: train the project's micro models.

    mira-train editor --settings smoke|gpu --out DIR [--init DIR] [--state DIR] [--seconds S]
    mira-train vlm --settings smoke|gpu --out DIR [--init DIR] [--stages vision,language,...]
                   [--seconds S] [--stage-seconds vision=60,roles=300] [--dtype float32]
    mira-train eval-vlm --model DIR [--split test] [--seeds N]
                        [--roles grounder,parser,planner,critic]
    mira-train grpo --model DIR --out DIR [--reward critic|exact] [--editor DIR] [--steps N]
                    [--seconds S] [--group G] [--lr LR] [--beta B]
    mira-train extract-lora --base DIR --tuned DIR --out DIR --rank R
    mira-train merge-lora --base DIR --adapter DIR --out DIR

``--settings smoke`` is the CPU configuration the tests run (seconds); ``gpu`` the shipped
one. A run stops on its wall-clock budget (``--seconds``), validates, and saves a loadable
pipeline folder; ``--init`` goes on from such a folder, ``--state`` keeps the optimiser too.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mira-train", description="Train the project's micro models.")
    sub = p.add_subparsers(dest="command", required=True)
    ed = sub.add_parser("editor", help="the micro FLUX.2 [klein] editor")
    ed.add_argument(
        "--settings",
        choices=("smoke", "gpu"),
        default="gpu",
        help="model and run size (default: %(default)s)",
    )
    ed.add_argument("--out", required=True, type=Path, help="folder for the trained pipeline")
    ed.add_argument("--init", type=Path, default=None, help="pipeline folder to go on from")
    ed.add_argument("--state", type=Path, default=None, help="folder of the full training state")
    ed.add_argument("--seconds", type=float, default=None, help="wall-clock budget of this run")
    ed.add_argument("--records", type=int, default=None, help="training records in the pool")
    ed.add_argument("--batch", type=int, default=None, help="editor batch size")
    ed.add_argument("--lr", type=float, default=None, help="editor learning rate")
    ed.add_argument(
        "--seed-offset",
        type=int,
        default=None,
        help="skip this many train seeds (a resumed run can see new cases)",
    )
    vl = sub.add_parser("vlm", help="the micro Qwen2.5-VL (grounder, parser, planner, critic)")
    vl.add_argument("--settings", choices=("smoke", "gpu"), default="gpu")
    vl.add_argument("--out", required=True, type=Path, help="folder for the trained model")
    vl.add_argument("--init", type=Path, default=None, help="model folder to go on from")
    vl.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages to run, in order (default: vision,language,roles,critic)",
    )
    vl.add_argument("--seconds", type=float, default=None, help="total budget, split as settings")
    vl.add_argument(
        "--stage-seconds", default=None, help="per-stage budgets, e.g. vision=60,roles=300"
    )
    vl.add_argument("--batch", type=int, default=None, help="batch size")
    vl.add_argument("--lr", type=float, default=None, help="learning rate of stages 2-3")
    vl.add_argument("--seed-offset", type=int, default=None, help="skip this many train seeds")
    vl.add_argument(
        "--budget",
        type=float,
        default=None,
        help="wall-clock seconds for the whole run: the stage running at the end is cut short "
        "so that it is still evaluated and saved",
    )
    vl.add_argument(
        "--pool-samples", type=int, default=None, help="training samples per stage (all roles)"
    )
    vl.add_argument(
        "--role-shares",
        default=None,
        help="a role's share of the pool against the others' (default 1; 0 leaves it out), "
        "e.g. planner=2; "
        "critic=N and progress=N also train the critic's samples (progress: its whole-instruction"
        " ones) into the base weights in the roles stage",
    )
    vl.add_argument(
        "--planner-draw",
        choices=("balanced", "random"),
        default=None,
        help="planner samples drawn by answer class (balanced, the default) or at random",
    )
    vl.add_argument(
        "--planner-reasoning",
        action="store_true",
        help="planner answers name each clause's cells and the changed cells before the edit",
    )
    vl.add_argument(
        "--planner-clauses",
        action="store_true",
        help="planner answers give the changed cells, then each clause with its cells and"
        " whether it is done, before the edit (implies --planner-reasoning)",
    )
    vl.add_argument(
        "--planner-edits",
        default=None,
        metavar="FEWEST,MOST",
        help="the edit counts of the planner samples' instructions (default 1,4; at most 5)",
    )
    vl.add_argument(
        "--focus-weight",
        type=float,
        default=None,
        help="training loss weight of the critic's and the reasoning planner's cell lists and"
        " the critic's verdict (default 1)",
    )
    vl.add_argument(
        "--focus-boxes",
        action="store_true",
        help="the grounder's boxes weigh --focus-weight in the loss too",
    )
    vl.add_argument(
        "--length-buckets",
        type=int,
        default=None,
        help="draw this many batches at a time and group them by length, so batches pad less"
        " (default 1: random batches)",
    )
    vl.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default=None,
        help="compute type on a GPU (bfloat16 autocast, or float32 with TF32 matmuls)",
    )
    ev = sub.add_parser("eval-editor", help="the editor table of a saved micro editor")
    ev.add_argument("--model", required=True, type=Path, help="the saved pipeline folder")
    ev.add_argument("--split", choices=("validation", "test", "benchmark"), default="test")
    ev.add_argument(
        "--seeds", type=int, default=300, help="cases per language (default: %(default)s)"
    )
    ev.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    evl = sub.add_parser("eval-vlm", help="decoded role metrics of a saved micro VLM")
    evl.add_argument("--model", required=True, type=Path, help="the saved model folder")
    evl.add_argument("--split", choices=("validation", "test", "benchmark"), default="test")
    evl.add_argument("--seeds", type=int, default=40, help="scenes (default: %(default)s)")
    evl.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="skip this many of the split's first seeds: fresh scenes for a choice when the "
        "first ones have chosen before (default: %(default)s)",
    )
    evl.add_argument(
        "--limit", type=int, default=200, help="samples per role and language (%(default)s)"
    )
    evl.add_argument(
        "--roles",
        default="grounder,parser,planner,critic",
        help="comma-separated roles (also: critic_stop, the critic's stop on whole 3- and 5-edit "
        "instructions; check)",
    )
    evl.add_argument("--languages", default="train,heldout", help="comma-separated: train, heldout")
    evl.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    evl.add_argument(
        "--planner-lora",
        type=Path,
        default=None,
        help="a planner adapter folder for the planner rows (the shipped weights/micro-planner, "
        "mira-train grpo's mira-planner); without it the rows are the shared weights' planner",
    )
    evl.add_argument(
        "--critic-in-base",
        action="store_true",
        help="the critic rows ask the base model, not its editscore adapter (a roles stage "
        "trained with --role-shares critic=N); a folder with no such adapter is always asked so",
    )
    evl.add_argument(
        "--grounder-in-base",
        action="store_true",
        help="the grounder rows ask the base model, not the folder's grounder adapter (a folder "
        "with no such adapter is always asked so)",
    )
    evl.add_argument(
        "--planner-edits",
        default=None,
        metavar="FEWEST,MOST",
        help="the edit counts of the planner rows' cases (default 1,4, what the planner trained"
        " on before the sixteenth session; at most 5)",
    )
    evl.add_argument(
        "--device", default="cpu", help="where the model decodes: cpu or cuda (%(default)s)"
    )
    gr = sub.add_parser("grpo", help="MIRA stage 2: GRPO with a LoRA on the micro VLM's planner")
    gr.add_argument("--model", required=True, type=Path, help="the SFT micro VLM folder")
    gr.add_argument("--out", required=True, type=Path, help="folder for the LoRA and grpo.json")
    gr.add_argument("--reward", choices=("critic", "exact"), default="critic")
    gr.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a planner LoRA folder (e.g. weights/micro-planner) merged into --model before GRPO;"
        " the critic stays --model's own",
    )
    gr.add_argument(
        "--editor", type=Path, default=None, help="micro editor folder (default: the shipped one)"
    )
    gr.add_argument("--editor-steps", type=int, default=None, help="editor denoising steps")
    gr.add_argument(
        "--exact-editor",
        action="store_true",
        help="execute the words exactly (the micro-world reader) instead of an editor model",
    )
    gr.add_argument(
        "--editor-backend",
        default=None,
        help="a registry editor instead of the micro editor (e.g. kontext-dev; kontext-tiny)",
    )
    gr.add_argument(
        "--critic-backend",
        default=None,
        help="a registry critic instead of the model's own (its editscore adapter, or its shared "
        "weights; e.g. editscore-7b)",
    )
    for name, kind, text in (
        ("steps", int, "optimiser steps (MIRA: 200)"),
        ("group", int, "sampled answers per input, G (MIRA: 5)"),
        ("lr", float, "learning rate (MIRA: 5e-6)"),
        ("beta", float, "KL coefficient (MIRA: 0.04)"),
        ("lambda-sc", float, "weight of semantic consistency (MIRA: 2.0)"),
        ("lambda-pq", float, "weight of perceptual quality (MIRA: 0.5)"),
        ("step-cost", float, "taken from a step's reward, not a stop's (MIRA: 0)"),
        ("early-stop-penalty", float, "taken from a stop judged not done (MIRA: 0)"),
        ("prompts-per-step", int, "inputs per step"),
        ("max-completion-length", int, "most tokens per sampled answer"),
        ("train-seeds", int, "train-split scenes to draw planner states from"),
        ("seed-offset", int, "skip this many train seeds"),
        ("temperature", float, "sampling temperature of the group's answers (1.0)"),
        (
            "seconds",
            float,
            "wall-clock budget from the command's start (stops after the step that passes it)",
        ),
        ("stall-seconds", float, "a step slower dumps every thread's stack (300; 0: off)"),
    ):
        gr.add_argument(f"--{name}", type=kind, default=None, help=text)
    gr.add_argument(
        "--planner-edits",
        default=None,
        metavar="FEWEST,MOST",
        help="the edit counts of the cases the planner states come from (default 1,4; at most 5)",
    )
    gr.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    gr.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="policy dtype")
    ex = sub.add_parser(
        "extract-lora",
        help="a LoRA adapter of what a full fine-tune of the micro VLM changed (truncated SVD)",
    )
    ex.add_argument("--base", type=Path, required=True, help="the micro VLM the fine-tune began at")
    ex.add_argument("--tuned", type=Path, required=True, help="the fine-tuned micro VLM folder")
    ex.add_argument("--out", type=Path, required=True, help="the adapter folder (replaced whole)")
    ex.add_argument("--rank", type=int, required=True, help="LoRA rank r")
    ex.add_argument(
        "--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="adapter weights"
    )
    mg = sub.add_parser(
        "merge-lora", help="a micro VLM folder with a LoRA adapter merged into its weights"
    )
    mg.add_argument("--base", type=Path, required=True, help="the micro VLM folder")
    mg.add_argument("--adapter", type=Path, required=True, help="the LoRA adapter folder")
    mg.add_argument("--out", type=Path, required=True, help="the merged folder (replaced whole)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "eval-editor":
        return _eval_editor(args)
    if args.command == "vlm":
        return _vlm(args)
    if args.command == "eval-vlm":
        return _eval_vlm(args)
    if args.command == "grpo":
        return _grpo(args)
    if args.command == "extract-lora":
        return _extract_lora(args)
    if args.command == "merge-lora":
        return _merge_lora(args)
    from agent.train.editor import GPU_SETTINGS, SMOKE_SETTINGS, train_editor

    settings = SMOKE_SETTINGS if args.settings == "smoke" else GPU_SETTINGS
    changes = {
        k: v
        for k, v in (
            ("seconds", args.seconds),
            ("n_records", args.records),
            ("batch", args.batch),
            ("lr", args.lr),
            ("seed_offset", args.seed_offset),
        )
        if v is not None
    }
    for name, value in changes.items():
        if isinstance(value, (int, float)) and value < 0:
            print(
                f"mira-train: --{name.replace('_', '-')} must be >= 0, got {value!r}",
                file=sys.stderr,
            )
            return 2
    if args.init is not None and not (args.init / "micro_editor.json").is_file():
        print(f"mira-train: --init {str(args.init)!r} holds no micro_editor.json", file=sys.stderr)
        return 2
    settings = replace(settings, **changes)
    train_editor(
        args.out,
        settings=settings,
        init=args.init,
        state=args.state,
        log=lambda m: print(m, flush=True),
    )
    return 0


def _eval_editor(args: argparse.Namespace) -> int:
    import json

    if not (args.model / "micro_editor.json").is_file():
        print(
            f"mira-train: --model {str(args.model)!r} holds no micro_editor.json", file=sys.stderr
        )
        return 2
    if args.seeds < 1:
        print(f"mira-train: --seeds must be >= 1, got {args.seeds!r}", file=sys.stderr)
        return 2
    from agent.train.editor import evaluate_editor

    table = evaluate_editor(
        args.model, split=args.split, n_seeds=args.seeds, log=lambda m: print(m, flush=True)
    )
    text = json.dumps(table, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _vlm(args: argparse.Namespace) -> int:
    from agent.train.vlm import STAGES, settings_for, train_vlm
    from agent.train.vlm_model import MANIFEST

    def fail(message: str) -> int:
        print(f"mira-train: {message}", file=sys.stderr)
        return 2

    changes: dict = {}
    for name in ("seconds", "batch", "lr", "seed_offset", "pool_samples", "budget"):
        value = getattr(args, name)
        if value is not None:
            if value < 0 or (name in ("batch", "pool_samples") and value < 1):
                return fail(f"--{name.replace('_', '-')} out of range: {value!r}")
            changes[name] = value
    if args.dtype is not None:
        changes["dtype"] = args.dtype
    if args.length_buckets is not None:
        if args.length_buckets < 1:
            return fail(f"--length-buckets must be >= 1, got {args.length_buckets!r}")
        changes["length_buckets"] = args.length_buckets
    if args.focus_weight is not None:
        if not (math.isfinite(args.focus_weight) and args.focus_weight > 0):
            return fail(f"--focus-weight must be a finite number > 0, got {args.focus_weight!r}")
        changes["focus_weight"] = args.focus_weight
    if args.stages is not None:
        stages = tuple(s for s in args.stages.split(",") if s)
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            return fail(f"--stages must name some of {','.join(STAGES)}, got {args.stages!r}")
        changes["stages"] = stages
    if args.init is not None and not (args.init / MANIFEST).is_file():
        return fail(f"--init {str(args.init)!r} holds no {MANIFEST}")
    settings = settings_for(args.settings, **changes)
    if args.stage_seconds is not None:
        seconds = dict(settings.seconds)
        for part in args.stage_seconds.split(","):
            name, _, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                return fail(f"--stage-seconds: {part!r} is not stage=seconds")
            if name not in STAGES or number < 0:
                return fail(f"--stage-seconds: {part!r} is not stage=seconds")
            seconds[name] = number
        settings = replace(settings, seconds=seconds)
    if args.role_shares is not None:
        from agent.train.vlm import check_role_shares

        shares = {}
        for part in args.role_shares.split(","):
            name, _, value = part.partition("=")
            try:
                shares[name] = float(value)
                check_role_shares({name: shares[name]})
            except ValueError as e:
                return fail(f"--role-shares: {part!r} is not role=share ({e})")
        settings = replace(settings, role_shares=shares)
    if args.planner_draw is not None:
        settings = replace(settings, planner_draw=args.planner_draw)
    if args.planner_reasoning or args.planner_clauses:
        settings = replace(settings, planner_reasoning=True)
    if args.planner_clauses:
        settings = replace(settings, planner_clauses=True)
    if args.planner_edits is not None:
        edits = _planner_edits(args.planner_edits)
        if isinstance(edits, str):
            return fail(edits)
        settings = replace(settings, planner_edits=edits)
    if args.focus_boxes:
        if settings.focus_weight == 1.0:
            return fail("--focus-boxes weighs the boxes by --focus-weight: give one other than 1")
        settings = replace(settings, focus_boxes=True)
    train_vlm(args.out, settings=settings, init=args.init, log=lambda m: print(m, flush=True))
    return 0


def _planner_edits(text: str) -> tuple[int, int] | str:
    """``--planner-edits FEWEST,MOST`` as a checked pair, or the error line naming it."""
    from agent.train.vlm import check_planner_edits

    try:
        return check_planner_edits(text.split(","))
    except ValueError as e:
        return f"--planner-edits: {text!r} ({e})"


def _eval_vlm(args: argparse.Namespace) -> int:
    import json

    from agent.train.vlm_eval import ROLES, evaluate_vlm
    from agent.train.vlm_model import MANIFEST

    roles = [r for r in args.roles.split(",") if r]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        print(
            f"mira-train: --roles must name some of {','.join(ROLES)}, got {args.roles!r}",
            file=sys.stderr,
        )
        return 2
    if args.critic_in_base and not {"critic", "critic_stop"} & set(roles):
        print(
            "mira-train: --critic-in-base needs critic or critic_stop among --roles, got "
            f"{args.roles!r}",
            file=sys.stderr,
        )
        return 2
    if args.grounder_in_base and "grounder" not in roles:
        print(
            f"mira-train: --grounder-in-base needs the grounder among --roles, got {args.roles!r}",
            file=sys.stderr,
        )
        return 2
    languages = list(dict.fromkeys(x for x in args.languages.split(",") if x))
    if not languages or any(x not in ("train", "heldout") for x in languages):
        print(
            f"mira-train: --languages must name train and/or heldout, got {args.languages!r}",
            file=sys.stderr,
        )
        return 2
    if not (args.model / MANIFEST).is_file():
        print(f"mira-train: --model {str(args.model)!r} holds no {MANIFEST}", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.limit < 1:
        print(
            f"mira-train: --seeds and --limit must be >= 1, got {args.seeds}, {args.limit}",
            file=sys.stderr,
        )
        return 2
    if args.seed_offset < 0:
        print(f"mira-train: --seed-offset must be >= 0, got {args.seed_offset}", file=sys.stderr)
        return 2
    from agent.microworld.splits import seeds as split_seeds

    try:  # before the model loads
        split_seeds(args.split, args.seeds, offset=args.seed_offset)
    except ValueError as e:
        print(
            f"mira-train: --seeds {args.seeds} --seed-offset {args.seed_offset}: {e}",
            file=sys.stderr,
        )
        return 2
    planner_edits = None
    if args.planner_edits is not None:
        planner_edits = _planner_edits(args.planner_edits)
        if isinstance(planner_edits, str):
            print(f"mira-train: {planner_edits}", file=sys.stderr)
            return 2
    table = evaluate_vlm(
        args.model,
        split=args.split,
        seeds=args.seeds,
        seed_offset=args.seed_offset,
        limit=args.limit,
        roles=roles,
        languages=languages,
        planner_lora=args.planner_lora,
        critic_in_base=args.critic_in_base,
        grounder_in_base=args.grounder_in_base,
        planner_edits=planner_edits,
        device=args.device,
        log=lambda m: print(m, file=sys.stderr, flush=True),  # stdout: the JSON table alone
    )
    text = json.dumps(table, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


def _grpo(args: argparse.Namespace) -> int:
    import time

    clock_start = time.monotonic()  # --seconds counts from here: loading spends it too
    from agent.train import grpo
    from agent.train.grpo import GRPOSettings, train_grpo

    if not (args.model / "config.json").is_file():
        print(f"mira-train: --model {str(args.model)!r} holds no config.json", file=sys.stderr)
        return 2
    fields = {
        "steps": args.steps,
        "group": args.group,
        "lr": args.lr,
        "beta": args.beta,
        "lambda_sc": args.lambda_sc,
        "lambda_pq": args.lambda_pq,
        "step_cost": args.step_cost,
        "early_stop_penalty": args.early_stop_penalty,
        "prompts_per_step": args.prompts_per_step,
        "max_completion_length": args.max_completion_length,
        "train_seeds": args.train_seeds,
        "seed_offset": args.seed_offset,
        "temperature": args.temperature,
        "seconds": args.seconds,
        "stall_seconds": args.stall_seconds,
        "device": args.device,
        "dtype": args.dtype,
    }
    if args.planner_edits is not None:
        planner_edits = _planner_edits(args.planner_edits)
        if isinstance(planner_edits, str):
            print(f"mira-train: {planner_edits}", file=sys.stderr)
            return 2
        fields["planner_edits"] = planner_edits
    settings = replace(
        GRPOSettings(reward=args.reward), **{k: v for k, v in fields.items() if v is not None}
    )
    if args.stall_seconds == 0:
        settings = replace(settings, stall_seconds=None)  # 0 turns the watchdog off
    try:
        settings.check()
    except ValueError as e:
        print(f"mira-train: {e}", file=sys.stderr)
        return 2
    from tools import registry

    for kind, name in (("editor", args.editor_backend), ("critic", args.critic_backend)):
        if name is not None and name not in registry.available(kind):
            print(
                f"mira-train: --{kind}-backend {name!r} is not one of "
                f"{', '.join(registry.available(kind))}",
                file=sys.stderr,
            )
            return 2
    from agent.micro import has_critic

    if settings.reward == "critic" and args.critic_backend is None and not has_critic(args.model):
        print(
            f"mira-train: --reward critic needs a model that learned the critic (an "
            f"{str(args.model / 'editscore')!r} adapter, or a roles stage with --role-shares "
            "critic=N) or a --critic-backend",
            file=sys.stderr,
        )
        return 2
    if args.adapter is not None:
        from agent.train.vlm_model import MANIFEST

        for folder, name, flag in (
            (args.adapter, "adapter_config.json", "--adapter"),
            (args.adapter, "adapter_model.safetensors", "--adapter"),
            (args.model, MANIFEST, "--model (a micro VLM folder, to merge --adapter into)"),
        ):
            if not (folder / name).is_file():
                print(f"mira-train: {flag} {str(folder)!r} holds no {name}", file=sys.stderr)
                return 2
    if args.editor_steps is not None and args.editor_steps < 1:
        print(f"mira-train: --editor-steps must be >= 1, got {args.editor_steps}", file=sys.stderr)
        return 2
    options = {"device": settings.device}
    if args.editor_steps is not None:
        options["num_inference_steps"] = args.editor_steps
    inputs = None
    if args.exact_editor and (args.editor_backend is not None or args.editor is not None):
        print("mira-train: --exact-editor replaces --editor and --editor-backend", file=sys.stderr)
        return 2
    if args.exact_editor:
        from agent.microworld.splits import seeds as split_seeds

        chosen = split_seeds("train", settings.train_seeds, offset=settings.seed_offset)
        inputs = grpo.planner_prompts(
            list(chosen),
            language=settings.language,
            per_seed=settings.states_per_seed,
            edits=settings.planner_edits,
        )
        editor = grpo.reading_editor(inputs)
    elif args.editor_backend is not None:
        from tools.editors._base import factory_kwargs

        if settings.device == "cpu":  # the default: tiny random factories take no load options
            options.pop("device")
        editor = registry.build("editor", args.editor_backend, **factory_kwargs(options))
    else:
        from agent.micro import micro_editor

        editor = micro_editor(model=args.editor, **options)
    critic = None
    if settings.reward == "critic" and args.critic_backend is not None:
        critic = registry.build("critic", args.critic_backend)
    elif settings.reward == "critic":
        from agent.micro import micro_critic

        # the micro-critic backend: greedy, so the reward of one image is one number
        critic = micro_critic(model=args.model, device=settings.device)
    reward = grpo.StepReward(
        editor,
        source=settings.reward,
        critic=critic,
        lambda_sc=settings.lambda_sc,
        lambda_pq=settings.lambda_pq,
        step_cost=settings.step_cost,
        early_stop_penalty=settings.early_stop_penalty,
        editor_seed=settings.editor_seed,
    )
    train_grpo(
        args.model,
        args.out,
        reward=reward,
        settings=settings,
        inputs=inputs,
        adapter=args.adapter,
        clock_start=clock_start,
        log=print,
    )
    return 0


def _extract_lora(args: argparse.Namespace) -> int:
    import json

    for flag, folder in (("--base", args.base), ("--tuned", args.tuned)):
        if not (folder / "config.json").is_file():
            print(f"mira-train: {flag} {str(folder)!r} holds no config.json", file=sys.stderr)
            return 2
    if args.rank < 1:
        print(f"mira-train: --rank must be >= 1, got {args.rank}", file=sys.stderr)
        return 2
    from agent.train.lora_extract import extract_lora

    try:
        report = extract_lora(args.base, args.tuned, args.out, rank=args.rank, dtype=args.dtype)
    except (ValueError, OSError) as e:  # OSError: a folder the model cannot be loaded from
        print(f"mira-train: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def _merge_lora(args: argparse.Namespace) -> int:
    from agent.train.lora_extract import merge_lora

    try:
        out = merge_lora(args.base, args.adapter, args.out)
    except (ValueError, OSError) as e:
        print(f"mira-train: {e}", file=sys.stderr)
        return 2
    print(f"merged {str(args.adapter)!r} into {str(args.base)!r}: {out}")
    return 0
