#!/usr/bin/env bash
# `tiergate run` next to its peers on netbench's veth test bed, in ONE run, the rows
# alternating round after round: tiergate (empty policy; 1000 rules before the allow
# + a staged deny; the empty policy again with `--sched other`; optionally the
# busy-polling rows, which on veth are not one-core figures), DPDK testpmd's af_xdp PMD
# (ref_testpmd.sh), nftables forwarding (its ct-established + 1000 rules row is the
# one compared) and XDP_REDIRECT. Every row: 1 flow and 10k flows, 60-byte UDP, one
# DUT core (netbench's README). Needs root and netbench's tools (see its README).
#
# usage: bench/netbench/compare.sh [ROUNDS]       (default 2; ~12 min per round)
# env:   NETBENCH=../shared/tools/netbench   netbench's directory (beside the checkout)
#        TG=target/release/tiergate          the binary under test
#        ROWS="tg tg1000 tgother testpmd redirect kfwd"  rows, in this order (also: tgbp tgbp1000,
#             tgoff tgoff1000: the empty / 1000-rule rows with --offload)
#        RESULTS=/tmp/tiergate-compare.txt   netbench's tables are appended here
#        plus netbench's own (DUR, REPS, QUIET_WAIT, NOISE_RETRIES, ...)
# Prints the medians over rounds of every row and the ratios the issue asks for.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
NETBENCH=$(cd "${NETBENCH:-$root/../shared/tools/netbench}" && pwd)
TG=$(realpath "${TG:-$root/target/release/tiergate}")
ROUNDS=${1:-2}
ROWS=${ROWS:-"tg tg1000 tgother testpmd redirect kfwd"}
export RESULTS=${RESULTS:-/tmp/tiergate-compare.txt}
export QUIET_WAIT=${QUIET_WAIT:-30} NOISE_RETRIES=${NOISE_RETRIES:-2}
[[ -x $TG ]] || { echo "no tiergate binary at $TG (cargo build --release)" >&2; exit 1; }
policy=$(mktemp --suffix=.yaml)
trap 'rm -f "$policy"' EXIT
"$here/policy1000.sh" 1000 >"$policy"
C=(run --iface in0 --iface in1 --mode router --next-hop in1=02:4e:42:02:00:01
   --next-hop in0=02:4e:42:01:00:01 --cores "${DUT_CPU:-1}" --no-socket)
start=0; [[ -f $RESULTS ]] && start=$(wc -l <"$RESULTS")
echo "# compare.sh $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs, tiergate $(git -C "$root" rev-parse --short HEAD)" | tee -a "$RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
  for row in $ROWS; do
    echo "[compare] round $r/$ROUNDS: $row" >&2
    case $row in
      tg) "$NETBENCH/measure.sh" custom tiergate_empty 3 -- "$TG" "${C[@]}" ;;
      tg1000) "$NETBENCH/measure.sh" custom tiergate_1000 5 -- "$TG" "${C[@]}" -f "$policy" ;;
      tgother) "$NETBENCH/measure.sh" custom tiergate_other 3 -- "$TG" "${C[@]}" --sched other ;;
      tgoff) "$NETBENCH/measure.sh" custom tiergate_offload 3 -- "$TG" "${C[@]}" --offload ;;
      tgoff1000) "$NETBENCH/measure.sh" custom tiergate_offload_1000 5 -- "$TG" "${C[@]}" \
              --offload -f "$policy" ;;
      tgbp) NAPI_MODE=busypoll "$NETBENCH/measure.sh" custom tiergate_bp_empty 3 -- \
              "$TG" "${C[@]}" --busy-poll ;;
      tgbp1000) NAPI_MODE=busypoll "$NETBENCH/measure.sh" custom tiergate_bp_1000 5 -- \
              "$TG" "${C[@]}" --busy-poll -f "$policy" ;;
      testpmd) "$NETBENCH/ref_testpmd.sh" ;;
      redirect) "$NETBENCH/measure.sh" redirect ;;
      kfwd) "$NETBENCH/measure.sh" kfwd ;;
      *) echo "unknown row $row" >&2; exit 2 ;;
    esac >/dev/null
  done
done
# Medians over the rounds of every "ceiling NAME MPPS" line this run appended.
tail -n +"$((start + 1))" "$RESULTS" | awk '$1 == "ceiling" {v[$2] = v[$2] " " $3}
  END {for (k in v) print k, v[k]}' | sort | while read -r name vals; do
  med=$(tr ' ' '\n' <<<"$vals" | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  echo "median $name $med ($vals )"
done | tee -a "$RESULTS"
