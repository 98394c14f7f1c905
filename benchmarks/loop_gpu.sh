#!/usr/bin/env bash
# One device call of the loop table (issue 12, docs/loop.md): many `mira-bench` runs at once on
# one GPU (run by the device tool from the repo root). Each run is a micro model bound by
# decoding latency and the CPU, so PARALLEL runs share the GPU. Every run is killed at one
# deadline, LIMIT seconds after this script starts (unpacking included); a killed run keeps
# the cases it finished, and a later call given the results resumes it.
#
#   JOBS=benchmarks/loop_table.jobs SITE=.whl/site312.tar.xz LIMIT=540 PARALLEL=16 \
#       bash benchmarks/loop_gpu.sh                 # a later call: RESUME=<the loop.tar before>
#
# JOBS: a file, a line per run, "name: mira-bench arguments" ('#' lines skipped; arguments are
# split on spaces, no quoting); --out, --device and -q are added. SITE: a .tar.xz of unpacked
# packages the GPU machine lacks (langgraph, langchain-core, pydantic, diffusers, ...:
# benchmarks/device_site.py makes it), or WHEELS: a folder of wheels. RESUME: a tar this
# script wrote before; its runs go on where they stopped (mira-bench resumes a run from its
# results.jsonl, and refuses other options). DEVICE: cuda (cpu in the tests). Writes to $OUT:
# loop.tar (res/<name>/results.jsonl, options.json, summary.md and res/<name>.log for each
# run) and summary.txt (a line per run: its exit status, 124 when the deadline killed it or
# came before it started, and its records, one per case and strategy). Exits 1 when a run
# failed other than by the deadline, when a run left no status, or when packing failed.
set -uo pipefail
PYTHON="${PYTHON:-python3}" WORK="${WORK:-/tmp/mira-loop}" DEVICE="${DEVICE:-cuda}"
LIMIT="${LIMIT:-540}" PARALLEL="${PARALLEL:-16}" SITE="${SITE-}" WHEELS="${WHEELS-}"
RESUME="${RESUME-}"
: "${OUT:?OUT is the folder for the results}" "${JOBS:?JOBS is the file of runs}"
[ -f "$JOBS" ] || { echo "JOBS: no file $JOBS" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)" || exit 2
shopt -s nullglob
start=$(date +%s)
rm -rf "$WORK" && mkdir -p "$WORK/site" "$WORK/res"
if [ -n "$SITE" ]; then
    tar xJf "$SITE" -C "$WORK/site" || exit
elif [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$WHEELS"/*.whl || exit
fi
if [ -n "$RESUME" ]; then
    tar xf "$RESUME" -C "$WORK" || exit
fi
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHON DEVICE WORK
# LIMIT counts from the start of this script: a run started late gets what is left
export DEADLINE=$((start + LIMIT))

one() {  # one run: "name: arguments"
    local name="${1%%:*}" args
    name="$(echo "$name" | tr -d ' ')"
    read -ra args <<< "${1#*:}"
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -le 5 ]; then
        echo "$name 124 (not started)" > "$WORK/res/$name.status"
        return 0
    fi
    timeout -k 30 "$left" "$PYTHON" -c 'import sys; from agent.bench import main; sys.exit(main())' \
        "${args[@]}" --out "$WORK/res/$name" --device "$DEVICE" -q \
        >> "$WORK/res/$name.log" 2>&1
    echo "$name $?" > "$WORK/res/$name.status"
}
export -f one
runs="$(grep -v '^\s*#' "$JOBS" | grep -v '^\s*$')"
printf '%s\n' "$runs" | grep -v '^$' | tr '\n' '\0' | xargs -0 -P "$PARALLEL" -I{} \
    bash -c 'one "$@"' _ {}

failed=0
: > "$OUT/summary.txt"
statuses=("$WORK"/res/*.status)
wanted=$(printf '%s\n' "$runs" | grep -c .)
if [ "${#statuses[@]}" -ne "$wanted" ]; then
    echo "$wanted runs asked, ${#statuses[@]} left a status" >> "$OUT/summary.txt"
    failed=1
fi
for status in "${statuses[@]}"; do
    read -r name code rest < "$status"
    cases=0
    [ -f "$WORK/res/$name/results.jsonl" ] && cases=$(wc -l < "$WORK/res/$name/results.jsonl")
    echo "$name exit $code${rest:+ $rest}, records $cases" >> "$OUT/summary.txt"
    case "$code" in 0|124) ;; *) failed=1 ;; esac
done
(cd "$WORK" && tar cf "$OUT/loop.tar" res/*.log res/*/results.jsonl res/*/options.json \
    res/*/summary.md) || { echo "packing loop.tar failed" >> "$OUT/summary.txt"; failed=1; }
cat "$OUT/summary.txt"
echo "seconds: $(( $(date +%s) - start ))"
exit "$failed"
