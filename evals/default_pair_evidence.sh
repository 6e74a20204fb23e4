#!/usr/bin/env bash
# The default pair's committed evidence, in the order the README quotes it.  Every step resumes
# from its files, so after an interruption the same command goes on where it stopped:
#   1. GSM8K-100, greedy, 512 tokens, 10 in flight: large_only, small_only, relay, random_switch;
#   2. the operating points on its first 50 problems (relay@K and random_switch@K) -> frontier;
#   3. the paper's batch-1 latency protocol: 5 GSM8K problems x 3 runs, 512 tokens.
# Both runtimes are started once (bfloat16 on CPU) and stopped by PID on exit.
#   usage: evals/default_pair_evidence.sh [STEP...]   (default: 1 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PAIR=qwen2.5-coder-1.5b__qwen2.5-coder-0.5b
OUT=evals/results/$PAIR
MODELS=${RELAYGEN_MODELS_DIR:-$HOME/.cache/relaygen/models}
TOP_CUES=${TOP_CUES:-"2 4 12 17"}  # operating points besides the kept set (see the profile's ranking)
STEPS=${*:-1 2 3}

$PY -m relaygen_sgl.model_install
mkdir -p "$OUT/logs"
info=$(mktemp)
$PY -m relaygen_sgl.cli serve-runtimes --large "$MODELS/qwen2.5-coder-1.5b-instruct" \
  --small "$MODELS/qwen2.5-coder-0.5b-instruct" --log-dir "$OUT/logs" >"$info" &
runtimes=$!
trap 'kill -TERM $runtimes 2>/dev/null; wait $runtimes 2>/dev/null; rm -f "$info"' EXIT
until [ -s "$info" ]; do
  kill -0 $runtimes 2>/dev/null || { echo "evidence: the runtimes did not start (see $OUT/logs)" >&2; exit 1; }
  sleep 5
done
urls=$($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d["large"]["url"], d["small"]["url"])' "$info")
read -r LARGE SMALL <<<"$urls"
pair=(--large-url "$LARGE" --small-url "$SMALL" --profile "$PAIR")

for step in $STEPS; do
  case $step in
    1) $PY -m evals.run_eval "${pair[@]}" --dataset gsm8k --limit 100 --max-tokens 512 --concurrency 10 \
         --modes large_only small_only relay random_switch --out "$OUT/gsm8k100" ;;
    2) points=()
       for k in $TOP_CUES; do points+=("relay@$k" "random_switch@$k"); done
       $PY -m evals.run_eval "${pair[@]}" --dataset gsm8k --limit 50 --max-tokens 512 --concurrency 10 \
         --modes "${points[@]}" --out "$OUT/gsm8k100" --summary-name operating_points
       $PY -m evals.frontier "$OUT/gsm8k100" --dataset gsm8k --limit 50 ;;
    3) $PY -m evals.bench_latency "${pair[@]}" --dataset gsm8k --problems 5 --runs 3 --max-tokens 512 \
         --out "$OUT/latency" ;;
    *) echo "evidence: unknown step $step (1, 2 or 3)" >&2; exit 2 ;;
  esac
done
