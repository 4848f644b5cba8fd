#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for MINUTES minutes each, one after the
# other, on one core: `fuzz/run-all.sh MINUTES [TARGET...]`. Needs a nightly toolchain
# and cargo-fuzz. New inputs go to fuzz/corpus/TARGET (ignored by git), the committed
# seeds are read from fuzz/seeds/TARGET, crashes land in fuzz/artifacts/TARGET. Prints one
# line per target (time, executions, outcome); exits 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: fuzz/run-all.sh MINUTES [TARGET...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(packet_parse yaml_load selector_parse pcap_read flow_table)
fi
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/logs"
    extra=()
    [ -f "fuzz/$t.dict" ] && extra+=("-dict=fuzz/$t.dict")
    log="fuzz/logs/$t.log"
    if ! cargo +nightly fuzz build "$t"; then
        summary+=("$t: does not build")
        failed=1
        continue
    fi
    start=$(date +%s)
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 "${extra[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then outcome=ok; else outcome="FAILED (exit $rc, see $log)"; failed=1; fi
    summary+=("$t: ${secs}s, ${execs:-?} executions, $outcome")
done
printf '\n== fuzz summary\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
