#!/usr/bin/env bash
# One GPU call of GRPO on the micro planner (run by the device tool from the repo root): several
# runs at once on the one GPU (each is a micro model, bound by decoding latency and the CPU, not
# GPU memory), then the planner rows of the SFT planner and of every adapter, also at once.
#
# Carry `.whlv` (pydantic, peft, trl, datasets, dill, multiprocess wheels for the GPU machine's
# Python; docs/grpo.md) and any adapter folders named in ADAPTERS. Writes to $OUT: grpo.tar
# (res/<run>/mira-planner/ and res/<run>/grpo.json, res/<run>.train.log, and per evaluation
# res/<tag>_<planner>.json with its log) and summary.txt (a line per run and evaluation, the
# exit status of each process). Exits 1 when any process failed or was killed.
#
#   RUNS='exact: --reward exact --exact-editor --lr 1e-3;critic: --reward critic --exact-editor' \
#       TRAIN_SECONDS=300 bash benchmarks/grpo_gpu.sh
#   RUNS= ADAPTERS='exact=.micro/grpo/exact/mira-planner' \
#       EVALS='val: --split validation --seeds 60 --limit 160 --roles planner' bash ...
#
# RUNS: ';'-separated "name: mira-train grpo arguments" (--model, --out, --device and --seconds
# are added; empty: no training). ADAPTERS: space-separated name=folder of adapters trained
# before, evaluated beside the runs'. MODEL: the SFT planner folder (default the shipped
# weights/micro-vlm). EVALS: ';'-separated "tag: eval-vlm arguments" (empty: no evaluation),
# each run for the SFT planner ("sft") and every adapter. DEVICE: cuda (cpu in the tests).
# Set OMP_NUM_THREADS (4 for three or four processes on 16 cores): left at its default every
# process takes every core, and three runs at once were 2.5 times slower per step.
set -uo pipefail
PYTHON="${PYTHON:-python3}" WORK="${WORK:-/tmp/mira-grpo}" WHEELS="${WHEELS:-.whlv}"
MODEL="${MODEL:-weights/micro-vlm}" DEVICE="${DEVICE:-cuda}"
TRAIN_SECONDS="${TRAIN_SECONDS:-300}" EVAL_LIMIT_SECONDS="${EVAL_LIMIT_SECONDS:-240}"
# TRAIN_MARGIN: seconds past its budget before a run is killed. A run's budget counts from the
# command's start (loading, merging an --adapter and drawing the planner states spend it too),
# and a run saves its last step when it passes the budget; the margin covers the last step and
# the save
TRAIN_MARGIN="${TRAIN_MARGIN:-60}"
EVALS="${EVALS-val: --split validation --seeds 40 --limit 120 --roles planner --languages train}"
RUNS="${RUNS-}" ADAPTERS="${ADAPTERS-}"
: "${OUT:?OUT is the folder for the results}"
# a run from --adapter trains its LoRA on MODEL with that adapter merged: eval-vlm --model MODEL
# --planner-lora <its LoRA> would score another model, so such runs are evaluated by hand
if [ -n "${EVALS// /}" ] && [[ " $RUNS " =~ [[:space:]]--adapter[[:space:]=] ]]; then
    echo "RUNS: a run with --adapter cannot be evaluated on MODEL; set EVALS='' and evaluate" \
        "the adapter merged with its LoRA (mira-train merge-lora; docs/grpo.md)" >&2
    exit 2
fi
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$WHEELS"/*.whl || exit
fi
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
rm -rf "$WORK/res" && mkdir -p "$WORK/res"
names=() failed=0
declare -A lora=() job=()
IFS=';' read -ra specs <<< "$RUNS"
for spec in "${specs[@]}"; do
    [ -n "${spec// /}" ] || continue
    if [[ "$spec" != *:* ]]; then
        echo "RUNS: '$spec' is not 'name: mira-train grpo arguments'" >&2
        exit 2
    fi
    name="$(echo "${spec%%:*}" | tr -d ' ')"
    names+=("$name")
    lora[$name]="$WORK/res/$name/mira-planner"
    read -ra args <<< "${spec#*:}"
    # the run stops itself after the step that passes its budget; timeout is the backstop
    timeout $((TRAIN_SECONDS + TRAIN_MARGIN)) "$PYTHON" -m agent.train grpo --model "$MODEL" \
        --out "$WORK/res/$name" --device "$DEVICE" --seconds "$TRAIN_SECONDS" "${args[@]}" \
        > "$WORK/res/$name.train.log" 2>&1 &
    job[$!]="$name"
done
# every process's exit status goes to the summary: a killed run (124) or a crash shows there
finish() {
    for pid in "${!job[@]}"; do
        wait "$pid"
        rc=$?
        echo "${job[$pid]}: exit status $rc" >> "$WORK/res/status.txt"
        [ "$rc" -eq 0 ] || failed=1
    done
    job=()
}
finish
read -ra pairs <<< "$ADAPTERS"
for pair in "${pairs[@]}"; do
    lora[${pair%%=*}]="${pair#*=}"
done
IFS=';' read -ra evals <<< "$EVALS"
for spec in "${evals[@]}"; do
    tag="$(echo "${spec%%:*}" | tr -d ' ')"
    [ -n "$tag" ] || continue
    read -ra eval_args <<< "${spec#*:}"
    timeout "$EVAL_LIMIT_SECONDS" "$PYTHON" -m agent.train eval-vlm --model "$MODEL" \
        --device "$DEVICE" "${eval_args[@]}" --out "$WORK/res/${tag}_sft.json" \
        > /dev/null 2> "$WORK/res/${tag}_sft.log" &
    job[$!]="${tag}_sft"
    for name in "${!lora[@]}"; do
        if [ ! -f "${lora[$name]}/adapter_config.json" ]; then
            echo "${tag}_$name: no adapter at ${lora[$name]}" >> "$WORK/res/status.txt"
            failed=1
            continue
        fi
        timeout "$EVAL_LIMIT_SECONDS" "$PYTHON" -m agent.train eval-vlm --model "$MODEL" \
            --device "$DEVICE" "${eval_args[@]}" --planner-lora "${lora[$name]}" \
            --out "$WORK/res/${tag}_$name.json" > /dev/null 2> "$WORK/res/${tag}_$name.log" &
        job[$!]="${tag}_$name"
    done
done
finish
# one line per run: steps, seconds, why it stopped, mean reward of the first and last quarter
"$PYTHON" - "$WORK/res" "${names[@]}" > "$OUT/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path

res = Path(sys.argv[1])
for name in sys.argv[2:]:
    f = res / name / "grpo.json"
    if not f.is_file():
        print(f"{name}: no grpo.json (see {name}.train.log)")
        continue
    g = json.loads(f.read_text())
    rewards = [h["reward"] for h in g["history"]]
    q = max(1, len(rewards) // 4)
    first, last = sum(rewards[:q]) / q, sum(rewards[-q:]) / q
    kl = max((h.get("kl", 0) for h in g["history"]), default=0)
    print(f"{name}: {g['steps']} steps in {g['seconds']} s ({g['stopped']}), reward "
          f"{first:.2f} -> {last:.2f}, largest KL {kl:.3g}")
for f in sorted(res.glob("*.json")):
    rows = json.loads(f.read_text()).get("planner", {})  # the planner rows, where asked
    print(f.stem, json.dumps({lang: row["true"] for lang, row in rows.items()}))
EOF
cat "$WORK/res/status.txt" >> "$OUT/summary.txt" 2> /dev/null
tail -n 3 "$WORK"/res/*.log >> "$OUT/summary.txt" 2> /dev/null
tar -C "$WORK" -cf "$OUT/grpo.tar" res
cat "$OUT/summary.txt"
exit "$failed"
