#!/usr/bin/env bash
# Our classifier and DPDK rte_acl back to back on each ClassBench set, on the same CPU.
# usage (from the repository root, after `cargo build --release -p bench`):
#   [SETS="acl1_1k ..."] bench/classify_vs_rte_acl.sh [SHARED_DIR (default ../shared)] [CPU (default 1)]
set -u
shared="${1:-../shared}"; cpu="${2:-1}"
D="$shared/data/classbench"
B="${CARGO_TARGET_DIR:-target}/release/bench"
for s in ${SETS:-acl1_1k fw1_1k acl1_10k fw1_10k}; do
  echo "=== $s $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  taskset -c "$cpu" "$B" classify --rules "$D/$s" --trace "$D/${s}_trace" --duration 3 --linear-duration 1 --repeat 2
  CATS=2 "$shared/tools/rte_acl_bench/run.sh" "$D/$s" "$D/${s}_trace" -d 3 -L 1 -C "$cpu" | grep -E "^RESULT|^rte_acl |^== categories"
  CATS=1 "$shared/tools/rte_acl_bench/run.sh" "$D/$s" "$D/${s}_trace" -d 3 -L 0 -C "$cpu" | grep -E "^RESULT|^rte_acl |^== categories"
  taskset -c "$cpu" "$B" classify --rules "$D/$s" --trace "$D/${s}_trace" --duration 3 --linear-duration 0 --core-only
  echo "=== end $s $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
