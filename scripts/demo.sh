#!/usr/bin/env bash
# The main job on the embedded default. Until kvbench ships its own trained reference model
# (models/kvb-ref-s), the demo imports the real pretrained stories260K from ../shared,
# generates from it through the full-precision cache, then runs the quick suite
# (suites/configs/quick.json: perplexity, needle in a haystack, shared context) over a few
# KV-cache methods and prints the summary table.
set -euo pipefail
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"  # suite configs resolve relative paths against the current directory
kvb="$build/kvbench"
shared="$top/../shared"
ck="$shared/models/stories260K/stories260K.bin"
if [ ! -f "$ck" ]; then
  echo "demo: $ck not found; the demo needs ../shared/models/stories260K" >&2
  exit 1
fi
out="$build/models/stories260K"
echo "== kvbench import-llama2c: $ck -> $out"
"$kvb" import-llama2c --checkpoint "$ck" --tokenizer "$shared/models/stories260K/tok512.bin" --out "$out"
echo "== kvbench info --model $out"
"$kvb" info --model "$out"
prompt="Once upon a time, there was a little dog"
echo "== kvbench generate (greedy, full cache): \"$prompt\""
"$kvb" generate --model "$out" --prompt "$prompt" --max-new-tokens 120 --report-memory
echo "== kvbench generate (temperature 0.8, top-p 0.9, seed 42)"
"$kvb" generate --model "$out" --prompt "$prompt" --max-new-tokens 120 --temperature 0.8 --top-p 0.9 --seed 42
suite=suites/configs/quick.json
results="$build/results/quick.jsonl"
model_args=()
# quick.json names build/models/stories260K; another build directory passes its own copy.
if [ "$out" != "build/models/stories260K" ]; then model_args=(--model "$out"); fi
rm -f "$results"  # a fresh run each time (`kvbench run` alone resumes and skips finished cells)
echo "== kvbench run --suite $suite --out $results"
start=$(date +%s)
"$kvb" run --suite "$suite" --out "$results" "${model_args[@]}"
echo "== quick suite: $(( $(date +%s) - start )) s; every cell's record (protocol, per-sample outputs) is in $results"
