#!/usr/bin/env bash
# Fuzzing (libFuzzer through libfuzzer-sys, on the nightly toolchain, the
# flags cargo-fuzz passes; cargo-fuzz itself is not needed): builds the
# targets of fuzz/ with sanitizer coverage in their own target dir and runs
# each for SECONDS seconds from its seed corpus (fuzz/corpus/TARGET, where
# new inputs that add coverage are kept in $FLYWHEEL_CACHE/fuzz-corpus).
# A crash stops the run and leaves the input in $FLYWHEEL_CACHE/fuzz-artifacts/;
# turn it into a regression test beside the code it breaks.
#
#   scripts/fuzz.sh                    # every target, 600 s each
#   SECONDS_EACH=60 scripts/fuzz.sh sse request_body
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECONDS_EACH="${SECONDS_EACH:-600}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(wal_frames sse request_body gateway_config grader_config)
HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$FLYWHEEL_CACHE/target-fuzz"
# With --target, these flags reach the targets and their dependencies but
# not build scripts or proc macros (as cargo-fuzz does it).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
log "building the fuzz targets (nightly, sanitizer coverage, $CARGO_TARGET_DIR)"
(cd fuzz && cargo +nightly build --release --target "$HOST" --bins)
ART="$FLYWHEEL_CACHE/fuzz-artifacts"
mkdir -p "$ART"
printf '| target | seconds | runs | corpus | result |\n|---|---|---|---|---|\n' >"$ART/summary.md"
for t in "${TARGETS[@]}"; do
  corpus="$FLYWHEEL_CACHE/fuzz-corpus/$t"
  mkdir -p "$corpus"
  log "fuzzing $t for ${SECONDS_EACH}s"
  out="$ART/$t.log"
  result=ok
  "$CARGO_TARGET_DIR/$HOST/release/$t" "$corpus" "fuzz/corpus/$t" \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$ART/$t-" -print_final_stats=1 >"$out" 2>&1 || result="CRASH: see $out"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$SECONDS_EACH" "${runs:-?}" "$files" "$result" | tee -a "$ART/summary.md"
done
cat "$ART/summary.md"
! grep -q CRASH "$ART/summary.md"
