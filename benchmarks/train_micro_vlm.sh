#!/usr/bin/env bash
# One GPU call of the micro VLM's training (run by the device tool from the repo root).
#
# Carry `.whl` (the pydantic wheels of benchmarks/train_micro_editor.sh for the GPU machine's
# Python, plus a peft wheel; transformers 5.17 there works, the tests also pass with 5.23) and,
# to go on from an earlier call, `.micro/vlm` (the folder an earlier call returned, unpacked).
# Arguments go to `mira-train vlm` (e.g. --stages vision,language --stage-seconds vision=90).
# Writes to $OUT: metrics.json, train.log and the model folder as vlm.tar.part?? pieces of at
# most 15 MB (`cat vlm.tar.part* | tar -xf - -C .micro` unpacks it as .micro/vlm).
set -euo pipefail
# SETTINGS=smoke PYTHON=.venv/bin/python WORK=<dir> run the same steps on a CPU (the tests).
# WHEELS=<dir> names another wheel folder than .whl (the tests name an empty one).
PYTHON="${PYTHON:-python3}" SETTINGS="${SETTINGS:-gpu}" WORK="${WORK:-/tmp}" WHEELS="${WHEELS:-.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$WHEELS"/*.whl
fi
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1
# INIT: the folder to go on from when it holds a model (default .micro/vlm).
INIT="${INIT:-.micro/vlm}"
init=()
if [ -f "$INIT/micro_vlm.json" ]; then init=(--init "$INIT"); fi
rm -rf "$WORK/vlm"
# LIMIT: seconds before training is stopped (the folder is saved after every stage, so a call
# cut off here still returns the stages it finished); keep it under the call's own limit.
status=0
# --budget: the run itself cuts its last stage short so that it is evaluated and saved in time
LIMIT="${LIMIT:-540}"
timeout "$LIMIT" "$PYTHON" -m agent.train vlm --settings "$SETTINGS" --out "$WORK/vlm" \
    --budget $((LIMIT - 15)) "${init[@]}" "$@" 2>&1 | tee "$OUT/train.log" || status=$?
[ -f "$WORK/vlm/micro_vlm.json" ] || exit $((status ? status : 1))
cp "$WORK/vlm/metrics.json" "$OUT/"
tar -C "$WORK" -cf - vlm | split -b 15M - "$OUT/vlm.tar.part"
ls -la "$OUT"
