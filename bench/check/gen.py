# A synthetic policy set for `tiergate check` at scale: N policies (half
# GlobalNetworkPolicy, half NetworkPolicy over 100 namespaces, half of each
# staged; the namespaces are not defined: the set is only policies), each with two rules (nets, selectors, ports), as YAML files of at most
# 5000 documents (the per-file document limit is 10 000) in DIR.
#   python3 bench/check/gen.py 100000 /tmp/check100k
import os, sys
N, d = int(sys.argv[1]), sys.argv[2]
os.makedirs(d, exist_ok=True)
PER = 5000
def policy(j):
    kind = ["GlobalNetworkPolicy", "NetworkPolicy"][j % 2]
    if j % 4 >= 2:
        kind = "Staged" + kind
    ns = f"  namespace: ns{j % 100}\n" if "Global" not in kind else ""
    return (
        f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: p{j}\n{ns}"
        f"spec:\n  order: {j}\n  selector: app == 'a{j % 50}' && tier in {{'web', 'db'}}\n"
        f"  types: [Ingress, Egress]\n"
        f"  ingress:\n"
        f"  - action: {'Allow' if j % 3 else 'Deny'}\n    protocol: TCP\n"
        f"    source:\n      nets: [10.{(j >> 8) & 255}.{j & 255}.0/24]\n      selector: role == 'r{j % 20}'\n"
        f"    destination:\n      ports: [{1000 + j % 60000}, '8000:8100']\n"
        f"  egress:\n  - action: Allow\n    protocol: UDP\n"
        f"    destination:\n      notNets: [192.168.{j & 255}.0/24]\n      ports: [53]\n"
    )
for f in range(0, N, PER):
    with open(f"{d}/p{f // PER:03}.yaml", "w") as out:
        out.write("---\n".join(policy(j) for j in range(f, min(N, f + PER))))
