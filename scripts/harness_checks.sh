#!/usr/bin/env bash
# The harness checks of results/harness, for the seed model and the last checkpoint of the tiny
# run (make run first): AlpacaEval --limit 40 (answers and judgments up to 256 tokens),
# Arena-Hard --limit 20, the judge evaluation --limit 10 prompts without the pairwise games
# (judgments up to 128 tokens: on 2 CPU cores the judge's long prompts cost about 10 generated
# tokens per second; drop --no-pairs for position consistency on swapped reply pairs), and
# MT-Bench --limit 10 (the first 10 of the 80 questions, both turns, judgments up to 128 tokens),
# and Arena-Hard v2.0 --limit 1 (the first question of each subcategory: coding, math, creative
# writing, answers and judgments up to 128 tokens; creative writing first, then the hard
# prompts, each timed: the judge's prompts hold o3-mini's long answers; creative writing
# against o3-mini-2025-01-31, named in its outputs, since gemini-2.0-flash-001's answers are not
# carried). Its folder is arena-hard-auto's v2.0 layout, where the official show_result.py runs:
#   cd results/harness/arena_hard_v2/<model> && python show_result.py -j <model> -c hard_prompt
# Each harness resumes, so an interrupted run continues where it stopped.
#   usage: scripts/harness_checks.sh [RUN_DIR]        (default runs/tiny)
set -euo pipefail
RUN_DIR=${1:-runs/tiny}
BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/harness}
LAST=$(ls -d "$RUN_DIR"/iter_*/checkpoint | sort | tail -1)
COMMON=(--no-progress --set generation.max_tokens=256)
mkdir -p "$OUT"
timed() {  # harness, model, command...: runs it and records its wall time in timings.tsv
  local harness=$1 model=$2; shift 2
  local start
  start=$(date +%s)
  "$@"
  # one line per (harness, model), the latest invocation's, with its day: a rerun that reuses
  # every record takes seconds, so the day tells which run made the records
  [ -f "$OUT/timings.tsv" ] || echo -e "harness\tmodel\twall_seconds\tdate\tcommand" > "$OUT/timings.tsv"
  grep -v "^$harness	$model	" "$OUT/timings.tsv" > "$OUT/timings.tmp" || true
  echo -e "$harness\t$model\t$(( $(date +%s) - start ))\t$(date -u +%FT%TZ)\t$*" >> "$OUT/timings.tmp"
  mv "$OUT/timings.tmp" "$OUT/timings.tsv"
}
for model in smollm2-135m-instruct "$LAST"; do
  name=$($BIN/python -c "from metajudge.evaluation.config import default_name as d; print(d('$model'))")
  timed alpaca-eval "$name" $BIN/metajudge eval alpaca-eval --model "$model" --limit 40 \
    --out "$OUT/alpaca_eval/$name" "${COMMON[@]}" --set judging.max_tokens=256
  timed arena-hard "$name" $BIN/metajudge eval arena-hard --model "$model" --limit 20 \
    --out "$OUT/arena_hard/$name" "${COMMON[@]}" --set judging.max_tokens=128
  timed judge "$name" $BIN/metajudge eval judge --model "$model" --limit 10 --no-pairs \
    --out "$OUT/judge/$name" "${COMMON[@]}" --set judging.max_tokens=128
  timed mt-bench "$name" $BIN/metajudge eval mt-bench --model "$model" --limit 10 \
    --out "$OUT/mt_bench/$name" "${COMMON[@]}" --set judging.max_tokens=128
  for category in creative_writing hard_prompt; do
    timed "arena-hard-v2.0 $category" "$name" $BIN/metajudge eval arena-hard --version 2.0 \
      --model "$model" --limit 1 --categories $category \
      --creative-writing-baseline o3-mini-2025-01-31 --out "$OUT/arena_hard_v2/$name" \
      --no-progress --set generation.max_tokens=128 --set judging.max_tokens=128 \
      --set model.transformers.batch_size=4
  done
done
