#!/usr/bin/env bash
# Efficacy / paraphrase / locality front on the default model (README, "Locality and paraphrases").
# Each setting is one `anyedit eval` run on UnKEBench records 27 and 77 (>= 100 answer tokens, with paraphrases;
# the paraphrases are never used for editing), one run at a time; then the table, the front and the plots.
#   bash benchmarks/locality_front.sh [OUT_DIR]      (~100 min on 2 CPU cores; a rerun resumes finished runs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/locality-front}
DATA=${DATA:-../shared/data/unkebench_dev.json}
E=(.venv/bin/anyedit eval --dataset "$DATA" --ids 27,77 --no-compat -q)
PAPER=(--set chunking.first_anchor=prompt_end --set backend.preserve_weight=0)
"${E[@]}" --method unke --out "$OUT/unke-loc" --label "unke+ (preset)"
"${E[@]}" --method memit --out "$OUT/memit-loc" --label "memit+ (preset)"
"${E[@]}" --method alphaedit --out "$OUT/alphaedit-loc" --label "alphaedit+ (preset)"
"${E[@]}" --method unke "${PAPER[@]}" --out "$OUT/unke-noloc" --label "unke+ paper anchor, no chat preservation"
"${E[@]}" --method memit "${PAPER[@]}" --out "$OUT/memit-noloc" --label "memit+ paper anchor, no chat preservation"
"${E[@]}" --method alphaedit "${PAPER[@]}" --out "$OUT/alphaedit-noloc" \
    --label "alphaedit+ paper anchor, no chat preservation"
# the front's best paraphrase point, on all five long UnKEBench dev records with paraphrases
.venv/bin/anyedit eval --dataset "$DATA" --ids 3,27,59,74,77 --no-compat -q --method unke \
    --set chunking.first_anchor=prompt_end --out "$OUT/unke-promptend-pres" --label "unke+ paper anchor, chat preservation 10"
.venv/bin/anyedit report "$OUT"/*-loc/ "$OUT"/*-noloc/ "$OUT"/unke-promptend-pres/ --plots "$OUT/plots"  # not plots/
