#!/usr/bin/env bash
# The main job on the embedded default: kvbench's own reference model models/kvb-ref-s (a 2.2M-
# parameter byte-level Llama with GQA, trained by `kvbench train` on kvbench's generated mixture,
# committed with its train.json, loss curve and eval). Shows the model, asks it for a pass key
# hidden early in a long prompt with the full cache and with a 1/8-context StreamingLLM window,
# then runs the quick suite (suites/configs/quick.json: perplexity, needle in a haystack,
# shared-context turns) over a few KV-cache methods and prints the summary table. Needs nothing
# outside the repository.
set -euo pipefail
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"  # suite configs resolve relative paths against the current directory
kvb="$build/kvbench"
model=models/kvb-ref-s
echo "== kvbench info --model $model"
"$kvb" info --model "$model"
prompt_file="$build/demo-passkey.txt"
# Pass key near the start, ~1.9 KB of the model's training-style prose after it, the question last.
"$kvb" mixture --task passkey --bytes 2000 --depth 0.1 --seed 7 --out "$prompt_file"
echo "== the prompt ($(wc -c < "$prompt_file") bytes): $(head -c 160 "$prompt_file") ... $(tail -c 120 "$prompt_file")"
for method in full "streaming(sink=4,window=252)" "snapkv(budget=256)"; do
  echo "== kvbench generate --method '$method' (greedy)"
  printf 'answer:'
  "$kvb" generate --model "$model" --prompt-file "$prompt_file" --method "$method" --max-new-tokens 8 \
    --completion-only --report-memory
done
suite=suites/configs/quick.json
results="$build/results/quick.jsonl"
rm -f "$results"  # a fresh run each time (`kvbench run` alone resumes and skips finished cells)
echo "== kvbench run --suite $suite --out $results"
start=$(date +%s)
"$kvb" run --suite "$suite" --out "$results"
echo "== quick suite: $(( $(date +%s) - start )) s; every cell's record (protocol, per-sample outputs) is in $results"
