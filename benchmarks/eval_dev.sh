#!/usr/bin/env bash
# The paper's evaluation on the dev samples (README, "Evaluation on the dev samples"): MEMIT with AnyEdit's
# chunking (memit+, the small-chat-memit preset) and without (memit: the same preset with --chunking none,
# the single-token baseline), on the first N records of each file in ../shared/data; then the tables and plots.
#   bash benchmarks/eval_dev.sh [N] [OUT_DIR]        (N = 20: ~11 h on 2 CPU cores; rerun to resume)
# Two worker processes with one torch thread each: on 2 cores that does ~1.3x the work of one 2-thread
# process (0.29-0.33 s per value-search step each vs 0.20 s alone, measured), without the oversubscription
# two 2-thread processes suffer. Both go through all six runs (in opposite orders) and share each run
# record by record (anyedit eval claims records with file locks), so neither idles while the other still
# has work. A killed run resumes after its last complete record.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
OUT=${2:-runs/eval-dev}
DATA=${DATA:-../shared/data}
JOBS=(mquake_cf:memit+ unkebench:memit+ editeverything:memit+ mquake_cf:memit unkebench:memit editeverything:memit)
worker() {  # worker NAME JOB...   (JOB = file:label; label memit = --chunking none)
  local name=$1; shift
  for job in "$@"; do
    local f=${job%%:*} label=${job#*:} opts=()
    [ "$label" = memit ] && opts=(--chunking none)
    OMP_NUM_THREADS=1 .venv/bin/anyedit eval --dataset "$DATA/${f}_dev.json" --limit "$N" --method memit \
      --out "$OUT/$f-$label" --label "$label" "${opts[@]}" >> "$OUT/worker-$name.log" 2>&1
  done
}
mkdir -p "$OUT"
.venv/bin/anyedit stats --method memit -q  # once, before the workers: both would compute it at their first edit
worker a "${JOBS[@]}" & a=$!
worker b "${JOBS[@]:3}" "${JOBS[@]:0:3}" & b=$!  # the other half first
wait $a && wait $b
for f in mquake_cf unkebench editeverything; do
  .venv/bin/anyedit report "$OUT/$f-memit+" "$OUT/$f-memit" --plots "$OUT/plots-$f"
done
.venv/bin/python benchmarks/eval_table.py "$OUT/mquake_cf-memit+,$OUT/mquake_cf-memit" "$OUT/unkebench-memit+,$OUT/unkebench-memit" \
  "$OUT/editeverything-memit+,$OUT/editeverything-memit"  # the README table
