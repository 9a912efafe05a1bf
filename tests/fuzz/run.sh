#!/usr/bin/env bash
# Builds the libFuzzer targets (clang++, ASan + UBSan, baseline kernels only) and runs each for
# DURATION seconds (default 60) from its seed corpus, the targets side by side (one core each).
# Exits non-zero when a target hits a crash, sanitizer report, leak, timeout or out-of-memory; the
# input that caused it is saved in $PYOPT_FUZZ_BUILD/crashes/<target>/ (reproduce: docs/fuzzing.md).
#
#   tests/fuzz/run.sh [DURATION] [TARGET...]      TARGET: json, checkpoint (default: both)
#   PYOPT_FUZZ_BUILD=dir  build folder (default build/fuzz); new corpus entries go to dir/corpus/
set -euo pipefail
duration="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json checkpoint)
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${PYOPT_FUZZ_BUILD:-$root/build/fuzz}"

started=$SECONDS
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="${PYOPT_FUZZ_CXX:-clang++}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYOPT_BASELINE_ONLY=ON -DPYOPT_BUILD_FUZZERS=ON \
  -DPYOPT_BUILD_PYTHON=OFF -DPYOPT_BUILD_TESTS=OFF -DPYOPT_INSTALL=OFF >/dev/null
cmake --build "$build" --target "${targets[@]/#/fuzz_}" >"$build/build.log" 2>&1 ||
  { tail -n 40 "$build/build.log"; echo "building the fuzz targets FAILED" >&2; exit 1; }

# The targets run side by side (one core each), so the wall time is DURATION, not DURATION x targets.
pids=()
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target"    # grows as the fuzzer finds new inputs; the seeds stay as committed
  crashes="$build/crashes/$target"
  mkdir -p "$corpus" "$crashes"
  dict=()
  [ -f "$here/$target.dict" ] && dict=("-dict=$here/$target.dict")
  echo "fuzz_$target: ${duration}s"
  # The checkpoint target writes its inputs to a file: keep that in this run's folder.
  TMPDIR="$crashes" OMP_NUM_THREADS=1 "$build/tests/fuzz/fuzz_$target" "${dict[@]}" -max_total_time="$duration" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" \
    "$here/corpus/$target" 2>"$build/fuzz_$target.log" &
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  target="${targets[$i]}"
  if wait "${pids[$i]}"; then
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE" "$build/fuzz_$target.log" || true
    echo "fuzz_$target: no crash"
  else
    tail -n 60 "$build/fuzz_$target.log"
    echo "fuzz_$target FAILED: input saved in $build/crashes/$target/" >&2
    failed=$((failed + 1))
  fi
done
echo "fuzz build and runs: $((SECONDS - started)) s"
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
[ "$failed" = 0 ]
