#!/usr/bin/env bash
# One GPU call of the micro editor's training (run by the device tool from the repo root).
#
# Carry `.whl` (diffusers and pydantic wheels for the GPU machine's Python) and, to go on from
# an earlier call, `.micro/editor` (the pipeline folder an earlier call returned, unpacked).
# Writes to $OUT: metrics.json, train.log, test_eval.json (with EVAL_SEEDS) and the pipeline folder as editor.tar.part?? pieces
# of at most 15 MB (`cat editor.tar.part* | tar -xf - -C .micro` unpacks it as .micro/editor).
# The full training state stays in /tmp/micro_state while the machine is warm.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
init=()
if [ -f .micro/editor/micro_editor.json ]; then init=(--init .micro/editor); fi
rm -rf /tmp/editor
python3 -m agent.train editor --settings gpu --out /tmp/editor --state /tmp/micro_state \
    "${init[@]}" "$@" 2>&1 | tee "$OUT/train.log"
cp /tmp/editor/metrics.json "$OUT/"
# EVAL_SEEDS=N: also measure the saved model on N test cases per language (the docs' table)
if [ -n "${EVAL_SEEDS:-}" ]; then
    python3 -m agent.train eval-editor --model /tmp/editor --split test --seeds "$EVAL_SEEDS" \
        --out "$OUT/test_eval.json" 2>&1 | grep -v -i warn | tee -a "$OUT/train.log"
fi
tar -C /tmp -cf - editor | split -b 15M - "$OUT/editor.tar.part"
ls -la "$OUT"
