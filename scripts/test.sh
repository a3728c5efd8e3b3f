#!/usr/bin/env bash
# test.sh -- installs what is missing, builds, and runs every test:
#   1. the release build's full CTest suite (unit, golden, CLI);
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. each fuzz target for a short run over its corpus (clang + libFuzzer).
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

echo "== build (release)"
./scripts/build.sh build
echo "== tests (release)"
(cd build && ctest --output-on-failure -j2)

echo "== build (ASan + UBSan)"
BUILD_TYPE=Debug ./scripts/build.sh build-asan -DPL_SANITIZE=ON -DCMAKE_C_COMPILER=clang
echo "== unit tests (ASan + UBSan)"
(cd build-asan && ctest --output-on-failure -j2 -L unit)

echo "== fuzz smoke (libFuzzer)"
BUILD_TYPE=Debug ./scripts/build.sh build-fuzz -DPL_FUZZ=ON -DPL_SANITIZE=ON -DCMAKE_C_COMPILER=clang
for f in build-fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus=tests/fuzz/corpus/${name#fuzz_}
  mkdir -p "$corpus"
  work=$(mktemp -d)
  echo "-- $name"
  log="$work.log"
  if ! "$f" -max_total_time=${PL_FUZZ_SECONDS:-20} -rss_limit_mb=2048 -timeout=60 "$work" "$corpus" >"$log" 2>&1; then
    tail -n 60 "$log"   # the crash report and the input that caused it
    echo "== fuzz target $name failed"
    exit 1
  fi
  tail -n 2 "$log"
  rm -rf "$work" "$log"
done
echo "== all tests passed"
