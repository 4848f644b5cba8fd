#!/usr/bin/env bash
# A change's pickup on an idle `tiergate run` (AF_XDP, no traffic): two veth pairs
# whose peers sit in network namespaces of their own, the daemon forwarding between
# the root-side ends, then N applies of a one-rule GlobalNetworkPolicy (a different
# port each time) through the control socket, one request each. Prints the p50 /
# p99 / max of the reply's `timings.pickup_ms` (publication until every worker has
# taken the generation) and `timings.total_ms`. Needs root (CAP_NET_ADMIN, CAP_BPF).
# usage: bench/netbench/pickup.sh [TIERGATE] [N] [tiergate run args...]
#        (default target/release/tiergate, 100)
set -euo pipefail
TG=${1:-target/release/tiergate}; N=${2:-100}; shift 2 || shift $# || true
ns0=tgpk0.$$; ns1=tgpk1.$$; v0=tgpk0; v1=tgpk1
sock=/tmp/tiergate-pickup.$$.sock
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    ip link del "$v0" 2>/dev/null || true; ip link del "$v1" 2>/dev/null || true
    ip netns del "$ns0" 2>/dev/null || true; ip netns del "$ns1" 2>/dev/null || true
    rm -f "$sock"
}
trap cleanup EXIT
ip netns add "$ns0"; ip netns add "$ns1"
ip link add "$v0" type veth peer name p0; ip link add "$v1" type veth peer name p1
ip link set p0 netns "$ns0"; ip link set p1 netns "$ns1"
ip link set "$v0" up; ip link set "$v1" up
ip -n "$ns0" link set p0 up; ip -n "$ns1" link set p1 up
"$TG" run --iface "$v0" --iface "$v1" --socket "$sock" "$@" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "pickup.sh: the daemon did not start" >&2; exit 2; }
python3 - "$N" "$sock" <<'PY'
import json, socket, sys
n, path = int(sys.argv[1]), sys.argv[2]
policy = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: pickup-probe
spec:
  selector: all()
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [%d]
"""
pickup, total = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    req = {"v": 1, "id": i, "op": "apply", "text": policy % (1000 + i % 60000)}
    s.sendall((json.dumps(req) + "\n").encode())
    r = json.loads(s.makefile().readline())
    s.close()
    if "result" not in r:
        sys.exit("pickup.sh: apply failed: %s" % r)
    t, w = r["result"]["timings"], r["result"]["workers"]
    if w["running_generation"] != w["total"]:
        sys.exit("pickup.sh: a worker did not take the generation: %s" % r)
    pickup.append(t["pickup_ms"])
    total.append(t["total_ms"])
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]
print("pickup n=%d pickup_ms p50=%.3f p99=%.3f max=%.3f total_ms p50=%.3f p99=%.3f max=%.3f"
      % (n, q(pickup, .5), q(pickup, .99), max(pickup), q(total, .5), q(total, .99), max(total)))
PY
