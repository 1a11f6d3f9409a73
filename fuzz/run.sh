#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time with coverage-guided
# libFuzzer; fails if any target crashes (panics, times out, or runs out of memory).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default: 30 s for each of all targets
#
# Environment:
#   FUZZ_RSS_LIMIT_MB  libFuzzer's memory cap per target (default 2048)
#   FUZZ_TIMEOUT       seconds one input may take before it counts as a hang (default 10)
#   FUZZ_SANITIZER     none (default) or address; address needs a nightly toolchain
#                      (FUZZ_TOOLCHAIN=nightly), since `-Zsanitizer` is unstable.
#   FUZZ_TOOLCHAIN     rustup toolchain to build with (default: the active one)
#
# Stable Rust works: with `--sanitizer none` cargo-fuzz passes only stable flags
# (`-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`). The code under test
# forbids `unsafe`, so AddressSanitizer would add little but slowness. Should a future
# cargo-fuzz ask for nightly flags even so, `RUSTC_BOOTSTRAP=1` lets stable accept them;
# this script sets it only if a plain build fails, and says so.
#
# New inputs libFuzzer finds go to fuzz/work/corpus/<target> (ignored by git); the seeds
# in fuzz/corpus/<target> are read, never written. Crashes land in fuzz/artifacts/<target>/
# and can be replayed with `cargo fuzz run -s none <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
rss_limit=${FUZZ_RSS_LIMIT_MB:-2048}
timeout=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=()
[ -n "${FUZZ_TOOLCHAIN:-}" ] && toolchain=("+${FUZZ_TOOLCHAIN}")

log() { printf '\n==> %s\n' "$*"; }

if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
command -v c++ >/dev/null 2>&1 || {
  echo "libFuzzer is C++: install a C++ compiler (apt-get install g++)" >&2
  exit 1
}

# cargo-fuzz builds with one codegen unit by default; 16 builds much faster on a small
# machine and costs little speed when fuzzing.
build_flags=(--sanitizer "$sanitizer" --codegen-units 16)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)

started=$(date +%s)
log "building ${targets[*]} (sanitizer: $sanitizer)"
if ! cargo "${toolchain[@]}" fuzz build "${build_flags[@]}"; then
  log "build failed; retrying with RUSTC_BOOTSTRAP=1 (cargo-fuzz asked for nightly flags)"
  export RUSTC_BOOTSTRAP=1
  cargo "${toolchain[@]}" fuzz build "${build_flags[@]}"
fi

mkdir -p work/logs
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=(work/corpus/"$target")
  mkdir -p "${corpus[0]}"
  [ -d corpus/"$target" ] && corpus+=(corpus/"$target")
  log "fuzzing $target for ${seconds}s"
  # Full output to the log; the lines that matter to the terminal.
  set +e
  cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$target" "${corpus[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss_limit" -timeout="$timeout" \
    -max_len=16384 -print_final_stats=1 2>&1 | tee work/logs/"$target".log |
    grep -E '^(#[0-9]+\s+(INITED|DONE)|==[0-9]+==|thread .* panicked|SUMMARY|Test unit written)'
  status=${PIPESTATUS[0]}
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' work/logs/"$target".log | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' work/logs/"$target".log | tail -1 | cut -d' ' -f2)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$(printf '%-20s %12s execs  cov %6s  CRASH (see fuzz/work/logs/%s.log, fuzz/artifacts/%s/)' "$target" "${execs:-?}" "${cov:-?}" "$target" "$target")")
  else
    summary+=("$(printf '%-20s %12s execs  cov %6s  ok' "$target" "${execs:-?}" "${cov:-?}")")
  fi
done

log "summary (${seconds}s per target, $(($(date +%s) - started))s in all, build included)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
