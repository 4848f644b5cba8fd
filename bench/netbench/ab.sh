#!/usr/bin/env bash
# A/B of `tiergate run` settings on netbench's test bed: the variants alternate
# round after round (nb-xdpgen flat out, 60-byte UDP, FLOWS flows), and per variant
# the median forwarded Mpps, ns of busy DUT core per packet, and the NET_RX softirqs
# per second on the generator's CPU (non-zero = some of the DUT's receive work ran
# on the generator core: not a one-core figure), and the CPU time per forwarded
# packet of the DUT's own threads (worker, in0/in1 NAPI, DUT-core softirq; robust to
# other tenants on the DUT core, unlike ns/pkt of the busy core). Also the drop counters
# from tiergate's exit report (kernel rx-ring-full / fill-ring-empty per second).
#
# usage: bench/netbench/ab.sh ROUNDS 'NAME|NAPI_MODE|NICE|ARGS...' ...
#   e.g. bench/netbench/ab.sh 3 'native|threaded||' 'generic|threaded||--generic-xdp'
#   NAPI_MODE: threaded (netbench's default) or busypoll (as measure.sh sets it)
#   NICE: empty, a nice value given to the worker thread (renice) after start, or
#         fifoN: the worker made SCHED_FIFO priority N (chrt)
# env:   NETBENCH TG DUR(5) DUT_CPU FLOWS(1)
#        GEN=trafgen: netbench's trafgen (AF_PACKET, its udp64 configs) as the generator
#          instead of nb-xdpgen, for kernels that refuse BPF_PROG_TEST_RUN's live frames
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:?rounds}; shift
FLOWS=${FLOWS:-1}
declare -A res
trap 'tg_stop 2>/dev/null || true' EXIT
netrx() { awk -v c=$((GEN_CPU + 2)) '/NET_RX/{print $c}' /proc/softirqs; }
# CPU time of the DUT's own work, robust to other tenants on the DUT core: the
# worker threads and in0/in1's NAPI threads plus ksoftirqd/DUT_CPU (ns on CPU, from
# schedstat), and the irq+softirq time of the DUT core (ticks; softirqs run inside
# the worker's syscalls are not charged to the thread). Prints "worker napi softirq"
# in ns.
dut_ticks() {
  local w=0 n=0 t
  for t in /proc/"$TG_PID"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == tiergate-xsk-* ]] || continue
    w=$((w + $(cut -d' ' -f1 "$t/schedstat")))
  done
  for t in $(pgrep "^napi/in[01]-"; pgrep "^ksoftirqd/$DUT_CPU\$"); do
    n=$((n + $(cut -d' ' -f1 "/proc/$t/schedstat" 2>/dev/null || echo 0)))
  done
  echo "$w $n $(awk -v c="cpu$DUT_CPU" -v hz="$(getconf CLK_TCK)" '$1 == c {printf "%.0f", ($7 + $8) * 1e9 / hz}' /proc/stat)"
}
for ((r = 1; r <= ROUNDS; r++)); do
  for v in "$@"; do
    IFS='|' read -r name mode nice args <<<"$v"
    # shellcheck disable=SC2086
    NAPI_MODE=$mode tg_start $args
    if [[ -n $nice ]]; then
      for t in /proc/"$TG_PID"/task/*; do
        [[ $(cat "$t/comm") == tiergate-xsk-* ]] || continue
        case $nice in
          fifo*) chrt -f -p "${nice#fifo}" "${t##*/}" ;;   # SCHED_FIFO, priority N
          *) renice -n "$nice" -p "${t##*/}" >/dev/null ;;
        esac
      done
    fi
    if [[ ${GEN:-xdpgen} == trafgen ]]; then
      cfg=$NETBENCH/gen/udp64_1flow.trafgen
      [[ $FLOWS -gt 1 ]] && cfg=$NETBENCH/gen/udp64_10kflows.trafgen
      ip netns exec nb-src env LD_PRELOAD="$NETBENCH/bpf/nb_sndbuf_preload.so" \
        timeout -s INT $((DUR + 2)) trafgen -o src0 -i "$cfg" -P 1 --no-sock-mem -C >/dev/null 2>&1 &
    else
      ip netns exec nb-src taskset -c "$GEN_CPU" "$NB_GEN" -i src0 -d "$MAC_IN0" -f "$FLOWS" \
        -t $((DUR + 2)) -b 256 >/dev/null 2>&1 &
    fi
    gen=$!; sleep 1
    c0=$(xdp_cnt_read "$CNT"); j0=$(cpu_jiffies "$DUT_CPU"); s0=$(netrx); d0=$(dut_ticks); t0=$(date +%s.%N)
    if [[ ${NAPI_TRACE:-0} == 1 ]]; then
      # frames in0's NAPI polled, per CPU (napi:napi_poll's work), over 1 s
      perf record -q -e napi:napi_poll -a -o /tmp/tiergate-ab-napi.data -- sleep 1 2>/dev/null
      perf script -i /tmp/tiergate-ab-napi.data -F cpu,trace 2>/dev/null |
        awk '/device in0 / {for (i = 1; i <= NF; i++) if ($i ~ /^work$/) w=$(i+1); cpu=$1; gsub(/[][]/, "", cpu); s[cpu+0]+=w; n[cpu+0]++}
          END {for (c in s) printf "[ab]   in0 NAPI on cpu %d: %d polls/s, %d frames/s\n", c, n[c], s[c]}' >&2
      sleep $((DUR > 1 ? DUR - 1 : 0))
    else
      sleep "$DUR"
    fi
    c1=$(xdp_cnt_read "$CNT"); j1=$(cpu_jiffies "$DUT_CPU"); s1=$(netrx); d1=$(dut_ticks); t1=$(date +%s.%N)
    wait "$gen" || true
    tg_stop
    # kernel drops at the socket from the exit report (-o json), summed over queues
    kd=$(grep '^{' /tmp/tiergate-bench.log | jq -s '[.[] | .workers[]?.queues[]? | .kernel_rx_ring_full] | add // 0' 2>/dev/null || echo 0)
    kf=$(grep '^{' /tmp/tiergate-bench.log | jq -s '[.[] | .workers[]?.queues[]? | .kernel_rx_fill_ring_empty] | add // 0' 2>/dev/null || echo 0)
    out=$(awk -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" -v j0="$j0" -v j1="$j1" -v s=$((s1 - s0)) \
      -v d0="$d0" -v d1="$d1" \
      'BEGIN{split(j0, a, " "); split(j1, b, " "); dt=t1-t0; busy=(b[1]-a[1])/((b[2]-a[2])?(b[2]-a[2]):1);
        split(d0, x, " "); split(d1, y, " "); k=(c>0)?1/c:0;
        printf "%.3f %.0f %.0f %.0f %.0f %.0f", c/dt/1e6, (c>0)?busy*dt*1e9/c:0, s/dt,
          (y[1]-x[1])*k, (y[2]-x[2])*k, (y[3]-x[3])*k}')
    echo "[ab] round $r $name: Mpps ns/pkt genNET_RX/s worker/napi/softirq-ns/pkt = $out; run total kernel rx_ring_full $kd fill_empty $kf" >&2
    res[$name]+="$out;"
  done
done
printf '%-24s %8s %8s %12s %7s %7s %7s %7s  %s\n' variant Mpps ns/pkt genNETRX/s worker napi softirq DUTsum reps
for v in "$@"; do
  IFS='|' read -r name _ _ _ <<<"$v"
  IFS=';' read -ra reps <<<"${res[$name]}"
  med() { printf '%s\n' "${reps[@]}" | awk -v k="$1" '{print $k}' | sort -g |
    awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
  sums=(); for x in "${reps[@]}"; do read -r _ _ _ a b c <<<"$x"; sums+=("$((a + b + c))"); done
  printf '%-24s %8s %8s %12s %7s %7s %7s %7s  %s\n' "$name" "$(med 1)" "$(med 2)" "$(med 3)" "$(med 4)" \
    "$(med 5)" "$(med 6)" "$(printf '%s\n' "${sums[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')" \
    "$(printf '%s\n' "${reps[@]}" | awk '{printf "%s ", $1}')"
done
