#!/usr/bin/env bash
# Offered load against forwarded rate: `tiergate run` on netbench's test bed fed by
# trafgen at fixed rates (`trafgen -b RATEpps`, 60-byte UDP, 1 flow; the rate `max`:
# trafgen unpaced), then by nb-xdpgen flat out. Per rate: offered (src0's tx
# counter; nb-xdpgen: what it reports) and forwarded (the sink's counter) over DUR
# s: the forwarded rate must not fall when the offered load grows past it. (On the
# 2-vCPU VM paced trafgen tops out near 0.26 Mpps, unpaced near 1.1 Mpps, and
# nb-xdpgen's paced mode near 1000 pps: the points between come from these.)
# usage: bench/netbench/overload.sh [tiergate run args...]   e.g. --busy-poll
# env:   RATES="100000 300000 600000 1000000"  NETBENCH TG DUR DUT_CPU NAPI_MODE FLOWS
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
RATES=${RATES:-"100000 300000 max"}
FLOWS=${FLOWS:-1}
cfg=$NETBENCH/gen/udp64_1flow.trafgen
[[ $FLOWS -gt 1 ]] && cfg=$NETBENCH/gen/udp64_10kflows.trafgen
tg_start "$@"
trap tg_stop EXIT
printf '%-10s %10s %10s %8s %6s\n' target_pps offered forwarded fwd/off dut%
sample() { # label, then a generator command line (run in nb-src, background)
  local label=$1; shift
  "$@" >/tmp/tiergate-overload-gen.log 2>&1 &
  local pid=$! c0 c1 o0 o1 t0 t1 j0 j1
  sleep 1
  c0=$(xdp_cnt_read "$CNT"); o0=$(src_tx); j0=$(cpu_jiffies "$DUT_CPU"); t0=$(date +%s.%N)
  sleep "$DUR"
  c1=$(xdp_cnt_read "$CNT"); o1=$(src_tx); j1=$(cpu_jiffies "$DUT_CPU"); t1=$(date +%s.%N)
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  awk -v l="$label" -v c=$((c1 - c0)) -v o=$((o1 - o0)) -v t0="$t0" -v t1="$t1" -v j0="$j0" -v j1="$j1" \
    'BEGIN{split(j0, a, " "); split(j1, b, " "); dt=t1-t0;
      printf "%-10s %10.0f %10.0f %8.2f %6.0f\n", l, o/dt, c/dt, (o>0)?c/o:0, 100*(b[1]-a[1])/((b[2]-a[2])?(b[2]-a[2]):1)}'
}
for rate in $RATES; do
  pace=(-b "${rate}pps"); [[ $rate == max ]] && pace=()
  sample "$rate" ip netns exec nb-src env LD_PRELOAD="$NB_PRELOAD" timeout -s INT $((DUR + 3)) \
    trafgen -o src0 -i "$cfg" -P 1 --no-sock-mem "${pace[@]}"
done
# nb-xdpgen's frames do not pass src0's tx counter: offered is what it reports.
ip netns exec nb-src taskset -c "$GEN_CPU" "$NB_GEN" -i src0 -d "$MAC_IN0" -f "$FLOWS" -t $((DUR + 3)) \
  -b 256 >/tmp/tiergate-overload-xdpgen.log 2>&1 &
pid=$!; sleep 1
c0=$(xdp_cnt_read "$CNT"); t0=$(date +%s.%N); sleep "$DUR"; c1=$(xdp_cnt_read "$CNT"); t1=$(date +%s.%N)
wait "$pid" || true
off=$(sed -n 's/.* pps=\([0-9.]*\).*/\1/p' /tmp/tiergate-overload-xdpgen.log | tail -1)
awk -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" -v o="${off:-0}" \
  'BEGIN{dt=t1-t0; printf "%-10s %10.0f %10.0f %8.2f\n", "xdpgen", o, c/dt, (o>0)?c/dt/o:0}'
