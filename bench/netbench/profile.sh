#!/usr/bin/env bash
# Where the DUT core's time goes while `tiergate run` forwards netbench's traffic
# (nb-xdpgen flat out, 60-byte UDP): `perf record` of the DUT core (software clock,
# call graphs), the sink's counter for the forwarded rate, then ns per forwarded
# packet by thread (the worker, in0/in1's NAPI threads, softirq) and, inside the
# worker, by phase (inclusive time of tiergate's #[inline(never)] phase functions
# and of the syscalls they make).
# usage: bench/netbench/profile.sh [tiergate run args...]      e.g. -f p1000.yaml
# env:   NETBENCH TG DUR DUT_CPU NAPI_MODE FLOWS(1) FREQ(2000) KEEP=1 (keep perf.data)
#        NB_KIND=trafgen (trafgen instead of nb-xdpgen; NETBENCH must then be the copy
#        bench/netbench/netbench-trafgen.sh makes, which has its configurations)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
FLOWS=${FLOWS:-1} FREQ=${FREQ:-2000}
data=$(mktemp /tmp/tiergate-perf.XXXXXX)
tg_start "$@"
trap 'tg_stop; [[ ${KEEP:-0} == 1 ]] || rm -f "$data"' EXIT
if [[ ${NB_KIND:-xdpgen} == trafgen ]]; then
  # netbench's trafgen configurations (AF_PACKET, pinned to CPU 0), as in the copy
  # bench/netbench/netbench-trafgen.sh makes; for where BPF_PROG_TEST_RUN with live
  # frames is refused. One packet of each flow first, so that established flows
  # (and, with --offload, their map entries) exist before the profile.
  cfg=$NETBENCH/gen/udp64_1flow.trafgen
  [[ $FLOWS -gt 1 ]] && cfg=$NETBENCH/gen/udp64_10kflows.trafgen
  ip netns exec nb-src env LD_PRELOAD="$NB_PRELOAD" trafgen -o src0 -i "$cfg" -n "$FLOWS" -P 1 \
    --no-sock-mem >/dev/null 2>&1
  sleep 1
  ip netns exec nb-src env LD_PRELOAD="$NB_PRELOAD" timeout -s INT $((DUR + 3)) \
    trafgen -o src0 -i "$cfg" -P 1 --no-sock-mem >/dev/null 2>&1 &
else
  ip netns exec nb-src taskset -c "$GEN_CPU" "$NB_GEN" -i src0 -d "$MAC_IN0" -f "$FLOWS" -t $((DUR + 3)) \
    -b 256 >/dev/null 2>&1 &
fi
gen=$!; sleep 1
c0=$(xdp_cnt_read "$CNT"); j0=$(cpu_jiffies "$DUT_CPU")
perf record -q -C "$DUT_CPU" -g -F "$FREQ" -o "$data" -- sleep "$DUR" 2>/dev/null
c1=$(xdp_cnt_read "$CNT"); j1=$(cpu_jiffies "$DUT_CPU")
wait "$gen" || true
pkts=$((c1 - c0))
busy=$(awk -v a="$j0" -v b="$j1" 'BEGIN{split(a, x, " "); split(b, y, " "); print (y[1]-x[1])/((y[2]-x[2])?(y[2]-x[2]):1)}')
# ns of DUT-core time per forwarded packet, for a share (%) of the samples
echo "forwarded $(awk -v p=$pkts -v d="$DUR" 'BEGIN{printf "%.3f", p/d/1e6}') Mpps; DUT core busy $(awk -v b="$busy" 'BEGIN{printf "%.0f", 100*b}') %; $(awk -v p=$pkts -v d="$DUR" -v b="$busy" 'BEGIN{printf "%.0f", (p>0)?b*d*1e9/p:0}') ns of busy DUT core per forwarded packet"
# Shares are of all samples of the DUT core (idle included); scale: DUR*1e9/pkts.
scale=$(awk -v p=$pkts -v d="$DUR" 'BEGIN{printf "%.3f", (p>0)?d*1e9/p/100:0}')
echo; echo "by thread (self time), ns/pkt:"
perf report -i "$data" --stdio --no-children --sort comm -g none 2>/dev/null |
  awk -v s="$scale" '/^ +[0-9.]+%/ {p=$1; sub("%", "", p); $1=""; if (p+0 >= 0.5) printf "  %7.0f  %5.1f%%  %s\n", p*s, p, $0}'
echo; echo "inside the worker (inclusive), ns/pkt:"
perf report -i "$data" --stdio --children --comm tiergate-xsk-0 --sort sym -g none 2>/dev/null |
  awk -v s="$scale" '/^ +[0-9.]+%/ {c=$1; sub("%", "", c); $1=""; $2=""; print c, $0}' |
  grep -E 'worker::batch::.*(parse|lookup|classify|settle|transmit|housekeeping)|afxdp::.*(rx_batch|tx_batch|reap|refill|receive|flush_tx|kick_rx|transmit)|Worker.*poll|__sys_sendto|__sys_recvfrom|__x64_sys_sendto|__x64_sys_recvfrom|veth_xmit|xsk_generic_xmit|__xsk_sendmsg|napi_busy_loop|__napi_poll|do_xdp_generic|xsk_rcv' |
  awk -v s="$scale" '{c=$1; $1=""; printf "  %7.0f  %5.1f%%  %s\n", c*s, c, $0}' | head -40
echo; echo "top symbols of the DUT core (self time), ns/pkt:"
perf report -i "$data" --stdio --no-children --sort comm,sym -g none 2>/dev/null |
  awk -v s="$scale" '/^ +[0-9.]+%/ {p=$1; sub("%", "", p); $1=""; if (p+0 >= 0.7) printf "  %7.0f  %5.1f%%  %s\n", p*s, p, $0}' | head -30
