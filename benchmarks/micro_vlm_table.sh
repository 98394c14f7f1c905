#!/usr/bin/env bash
# The micro VLM's role table on test seeds (docs/micro_vlm_card.md), from the shipped weights,
# on a CPU: grounder and parser, planner, critic, each with true and shuffled images, train and
# held-out language (the planner and the critic's stop on whole 3- and 5-edit instructions,
# critic_stop, train language only). About 35 minutes on two cores, 16-23 of them
# critic_stop. Run it from the repository root. MODEL=<folder> measures another folder;
# OUT=<dir> is where the JSON tables go (default bench_out/micro_vlm). The planner row of the
# shipped folder is the shipped planner adapter's (weights/micro-planner,
# docs/micro_planner_card.md), that of another folder its shared weights' own;
# PLANNER_LORA=<adapter> measures another adapter, PLANNER_LORA= the shared weights' own
# planner.
set -euo pipefail
MODEL="${MODEL:-weights/micro-vlm}" OUT="${OUT:-bench_out/micro_vlm}"
if [ "$MODEL" = weights/micro-vlm ]; then
    PLANNER_LORA="${PLANNER_LORA-weights/micro-planner}"
else
    PLANNER_LORA="${PLANNER_LORA-}"  # the shipped adapter was cut against the shipped folder
fi
lora=()
if [ -n "$PLANNER_LORA" ]; then lora=(--planner-lora "$PLANNER_LORA"); fi
TRAIN="${MIRA_TRAIN:-mira-train}"
mkdir -p "$OUT"
"$TRAIN" eval-vlm --model "$MODEL" --split test --languages train,heldout \
    --roles grounder,parser --seeds 40 --limit 150 --out "$OUT/grounder_parser.json"
"$TRAIN" eval-vlm --model "$MODEL" --split test --languages train \
    --roles planner --seeds 40 --limit 120 "${lora[@]}" --out "$OUT/planner.json"
"$TRAIN" eval-vlm --model "$MODEL" --split test --languages train,heldout \
    --roles critic --seeds 20 --limit 20 --out "$OUT/critic.json"
"$TRAIN" eval-vlm --model "$MODEL" --split test --languages train \
    --roles critic_stop --seeds 40 --limit 40 --out "$OUT/critic_stop.json"
