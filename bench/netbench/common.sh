# shellcheck shell=bash
# Shared by overload.sh and profile.sh: netbench's helpers, its DUT reset, and
# `tiergate run` started in the custom slot's place (netns nb-dut, pinned to the DUT
# core, router mode with netbench's MACs). Sourced; not run.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
NETBENCH=$(cd "${NETBENCH:-$root/../shared/tools/netbench}" && pwd)
TG=$(realpath "${TG:-$root/target/release/tiergate}")
DUR=${DUR:-5}
# shellcheck source=/dev/null
source "$NETBENCH/lib.sh"
[[ -x $TG ]] || { echo "no tiergate binary at $TG (cargo build --release)" >&2; exit 1; }
make -s -C "$NETBENCH/bpf" >/dev/null
ip netns list | grep -qw nb-dut || DUT_CPU=$DUT_CPU "$NETBENCH/topo.sh" up >&2

# As netbench's measure.sh resets the DUT before each of its measurements.
tg_reset() {
  xdp_detach nb-dut in0; xdp_detach nb-dut in1; xdp_detach nb-dst dst0; xdp_detach nb-src src0
  ip netns exec nb-dut nft flush ruleset
  ip netns exec nb-dut sh -c 'for d in in0 in1; do cd /sys/class/net/$d; echo 1 > threaded;
    echo 0 > napi_defer_hard_irqs; echo 0 > gro_flush_timeout; done'
  ip netns exec nb-dst sh -c 'echo 0 > /sys/class/net/dst0/threaded'
  nb_pin_napi
}

# tg_start ARGS...: tiergate in nb-dut on DUT_CPU; sets TG_PID and CNT (the map of
# the sink's counter). NAPI_MODE=busypoll as in measure.sh's custom slot;
# NAPI_MODE=threaded-busypoll keeps the NAPI threads and sets the same defer knobs.
tg_start() {
  tg_reset
  xdp_attach nb-dst dst0 xdp_drop
  CNT=$(xdp_cnt_map nb-dst dst0)
  case ${NAPI_MODE:-threaded} in
    busypoll) ip netns exec nb-dut sh -c 'for d in in0 in1; do cd /sys/class/net/$d; echo 0 > threaded;
      echo 2 > napi_defer_hard_irqs; echo 200000 > gro_flush_timeout; done' ;;
    # NAPI threads kept (on the DUT core), the busy-polling defer settings added
    threaded-busypoll) ip netns exec nb-dut sh -c 'for d in in0 in1; do cd /sys/class/net/$d;
      echo 2 > napi_defer_hard_irqs; echo 200000 > gro_flush_timeout; done' ;;
  esac
  ip netns exec nb-dut taskset -c "$DUT_CPU" "$TG" run --iface in0 --iface in1 --mode router \
    --next-hop in1=$MAC_DST0 --next-hop in0=$MAC_SRC0 --cores "$DUT_CPU" -o json ${TG_SOCKET_ARGS:---no-socket} "$@" \
    >/tmp/tiergate-bench.log 2>&1 &
  TG_PID=$!
  sleep 3; nb_pin_napi
  kill -0 "$TG_PID" 2>/dev/null || { cat /tmp/tiergate-bench.log >&2; exit 1; }
}

tg_stop() {
  kill -INT "$TG_PID" 2>/dev/null || true; wait "$TG_PID" 2>/dev/null || true
  tg_reset
}

# Busy jiffies and total jiffies of CPU $1.
cpu_jiffies() { awk -v c="cpu$1" '$1 == c {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
src_tx() { ip -n nb-src -j -s link show dev src0 | jq '.[0].stats64.tx.packets'; }
