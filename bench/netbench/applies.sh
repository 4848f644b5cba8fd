#!/usr/bin/env bash
# Forwarding while policy changes: `tiergate run` on netbench's test bed with the
# 1000-rule policy set (policy1000.sh) and a control socket, nb-xdpgen flat out;
# phases alternate, DUR s each: "steady" (no change) and "applying" (a client loop
# applies a one-rule GlobalNetworkPolicy selecting the sink, TCP only, so the
# traffic's verdicts stay the same, then deletes it, again and again, through the
# socket). Prints the forwarded Mpps of every phase, the medians, and the applies
# per second the loop achieved. The daemon (workers and control thread) is pinned to
# the DUT core; the client runs on the generator's core.
# usage: bench/netbench/applies.sh [ROUNDS] [tiergate run args...]   (default 3)
# env:   NETBENCH TG DUR(5) DUT_CPU GEN_CPU FLOWS(1) NAPI_MODE
set -euo pipefail
ROUNDS=${1:-3}; shift || true
sock=/tmp/tiergate-applies.$$.sock
export TG_SOCKET_ARGS="--socket $sock"
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
FLOWS=${FLOWS:-1}
work=$(mktemp -d)
"$here/policy1000.sh" 1000 >"$work/p1000.yaml"
cat >"$work/churn.yaml" <<'YAML'
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: bench-churn
spec:
  order: 5
  selector: app == 'sink'
  types:
  - Ingress
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports:
      - 9
YAML
tg_start -f "$work/p1000.yaml" "$@"
trap 'kill "${loop:-0}" 2>/dev/null || true; tg_stop; rm -rf "$work" "$sock"' EXIT
for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
# The client loop: apply, delete, count the pairs done.
churn() {
  local n=0
  while :; do
    taskset -c "$GEN_CPU" "$TG" apply --socket "$sock" -f "$work/churn.yaml" >/dev/null &&
      taskset -c "$GEN_CPU" "$TG" delete --socket "$sock" gnp bench-churn >/dev/null || {
        echo "apply/delete failed" >&2; exit 1; }
    n=$((n + 1)); echo "$n" >"$work/count"
  done
}
phase() { # label: forwarded Mpps over DUR s with the generator flat out
  ip netns exec nb-src taskset -c "$GEN_CPU" "$NB_GEN" -i src0 -d "$MAC_IN0" -f "$FLOWS" \
    -t $((DUR + 2)) -b 256 >/dev/null 2>&1 &
  local gen=$! c0 c1 t0 t1 a0 a1
  sleep 1
  c0=$(xdp_cnt_read "$CNT"); a0=$(cat "$work/count" 2>/dev/null || echo 0); t0=$(date +%s.%N)
  sleep "$DUR"
  c1=$(xdp_cnt_read "$CNT"); a1=$(cat "$work/count" 2>/dev/null || echo 0); t1=$(date +%s.%N)
  wait "$gen" || true
  awk -v l="$1" -v c=$((c1 - c0)) -v a=$((a1 - a0)) -v t0="$t0" -v t1="$t1" \
    'BEGIN{dt=t1-t0; printf "%s %.3f %.1f\n", l, c/dt/1e6, a/dt}'
}
echo 0 >"$work/count"
out=()
for ((r = 1; r <= ROUNDS; r++)); do
  out+=("$(phase steady)")
  churn & loop=$!
  out+=("$(phase applying)")
  kill "$loop" 2>/dev/null || true; wait "$loop" 2>/dev/null || true; loop=
  # a delete may have been cut short: leave the set as it was
  "$TG" delete --socket "$sock" gnp bench-churn >/dev/null 2>&1 || true
done
printf '%s\n' "${out[@]}" | awk '{print "phase", $1, $2, "Mpps", $3, "apply+delete pairs/s"}'
for l in steady applying; do
  printf '%s\n' "${out[@]}" | awk -v l=$l '$1 == l {print $2, $3}' | sort -g |
    awk -v l=$l '{m[NR]=$1; a[NR]=$2} END{printf "median %s %.3f Mpps (%d phases)\n", l, (NR%2)?m[(NR+1)/2]:(m[NR/2]+m[NR/2+1])/2, NR}'
done
