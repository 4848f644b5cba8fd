# Apply latency of the control socket: N one-rule GlobalNetworkPolicies over 20
# workload endpoints; then 30 one-rule changes (one policy's port) and 5 whole
# replacements (every policy's port), reply timings as the daemon reports them.
import json, socket, subprocess, sys, time, os, statistics
T, N = sys.argv[1], int(sys.argv[2])
d = f"/tmp/tiergate-socket-bench/{N}"; os.makedirs(d, exist_ok=True)
sock = f"{d}/s.sock"
def docs(port_of):
    out = [{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}]
    for i in range(20):
        out.append({"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":f"w{i}","namespace":"b","labels":{"app":f"a{i%5}"}},"spec":{"orchestrator":"k8s","ipNetworks":[f"10.9.0.{i+1}/32"]}})
    for j in range(N):
        out.append({"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":f"p{j}"},"spec":{"order":j,"selector":f"app == 'a{j%5}'","types":["Ingress"],"ingress":[{"action":"Allow" if j%2 else "Deny","protocol":"TCP","source":{"nets":[f"10.{(j>>8)&255}.{j&255}.0/24"]},"destination":{"ports":[port_of(j)]}}]}})
    return out
base = docs(lambda j: 1000 + j % 60000)
subprocess.run([T,"gen","--scenario","seed","-w",f"{d}/in.pcap"],check=True,capture_output=True)
p = subprocess.Popen([T,"run","--pcap",f"{d}/in.pcap","--loop","--socket",sock],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
while not os.path.exists(sock): time.sleep(0.05)
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rw")
def req(op):
    f.write(json.dumps({"v":1,"id":1,**op})+"\n"); f.flush()
    r = json.loads(f.readline()); assert r["ok"], r; return r["result"]
r = req({"op":"apply","text":json.dumps({"apiVersion":"v1","kind":"List","items":base})})
print(N, "initial", r["timings"])
one, whole = [], []
for k in range(30):
    doc = dict(base[21 + k]); doc = json.loads(json.dumps(doc)); doc["spec"]["ingress"][0]["destination"]["ports"] = [2000 + k]
    r = req({"op":"apply","text":json.dumps(doc)}); one.append(r["timings"])
for k in range(5):
    items = docs(lambda j: 3000 + k + j % 50000)
    r = req({"op":"apply","text":json.dumps({"apiVersion":"v1","kind":"List","items":items})}); whole.append(r["timings"])
def q(xs, p): xs = sorted(xs); return xs[min(len(xs)-1, int(p*len(xs)))]
for name, xs in [("one-rule", one), ("whole", whole)]:
    tot = [x["total_ms"] for x in xs]
    print(f"{N} rules {name}: n={len(xs)} total p50 {q(tot,.5):.1f} ms p99 {q(tot,.99):.1f} ms max {max(tot):.1f}; median parts validate {statistics.median(x['validate_ms'] for x in xs):.1f} lower {statistics.median(x['lower_ms'] for x in xs):.1f} compile {statistics.median(x['compile_ms'] for x in xs):.1f} pickup {statistics.median(x['pickup_ms'] for x in xs):.2f}")
t0 = time.time(); n = 0
while time.time() - t0 < 2:
    req({"op":"get","kind":"gnp"}); n += 1
print(f"{N} rules: get gnp ({N} policies) {n/2:.1f} requests/s")
t0 = time.time(); n = 0
while time.time() - t0 < 2:
    req({"op":"health"}); n += 1
print(f"health {n/2:.0f} requests/s")
p.terminate(); p.wait()
