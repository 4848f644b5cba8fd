# A synthetic policy set for `tiergate check` at scale: N policies (half
# GlobalNetworkPolicy, half NetworkPolicy over 100 namespaces, half of each
# staged; the namespaces are not defined: the set is only policies), each with two
# rules (nets, selectors, ports), as files of at most 5000 policies (the per-file
# document limit is 10 000) in DIR, in one of three forms:
#   docs       YAML documents separated by `---` (the default)
#   yaml-list  one YAML `kind: List` document per file, sequences indented under
#              their keys and selectors single-quoted, as YAML dumpers write them
#   json-list  one pretty-printed JSON `kind: List` per file, as `kubectl -o json`
#              writes them
#   json-docs  YAML documents separated by `---`, each a comment line and then the
#              policy as one line of JSON (a flow mapping), as a script converting
#              JSON to a YAML stream writes them
#   python3 bench/check/gen.py 100000 /tmp/check100k [docs|yaml-list|json-list|json-docs]
import json, os, sys

N, d = int(sys.argv[1]), sys.argv[2]
form = sys.argv[3] if len(sys.argv) > 3 else "docs"
os.makedirs(d, exist_ok=True)
PER = 5000


def policy_yaml(j):
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


def policy(j):
    """The same policy as `policy_yaml`, as a value."""
    kind = ["GlobalNetworkPolicy", "NetworkPolicy"][j % 2]
    if j % 4 >= 2:
        kind = "Staged" + kind
    meta = {"name": f"p{j}"}
    if "Global" not in kind:
        meta["namespace"] = f"ns{j % 100}"
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "order": j,
            "selector": f"app == 'a{j % 50}' && tier in {{'web', 'db'}}",
            "types": ["Ingress", "Egress"],
            "ingress": [{
                "action": "Allow" if j % 3 else "Deny",
                "protocol": "TCP",
                "source": {"nets": [f"10.{(j >> 8) & 255}.{j & 255}.0/24"],
                           "selector": f"role == 'r{j % 20}'"},
                "destination": {"ports": [1000 + j % 60000, "8000:8100"]},
            }],
            "egress": [{
                "action": "Allow",
                "protocol": "UDP",
                "destination": {"notNets": [f"192.168.{j & 255}.0/24"], "ports": [53]},
            }],
        },
    }


def scalar(v):
    if isinstance(v, int):
        return str(v)
    if any(c in v for c in ":'{}&|=!#"):
        return "'" + v.replace("'", "''") + "'"
    return v


def block(v, indent):
    """`v` as block YAML, sequences indented under their keys."""
    pad = "  " * indent
    out = ""
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                out += f"{pad}{k}:\n" + block(x, indent + 1)
            else:
                out += f"{pad}{k}: {scalar(x)}\n"
    else:
        for x in v:
            if isinstance(x, dict):
                out += f"{pad}- " + block(x, indent + 1)[len(pad) + 2:]
            else:
                out += f"{pad}- {scalar(x)}\n"
    return out


for f in range(0, N, PER):
    js = range(f, min(N, f + PER))
    if form == "docs":
        with open(f"{d}/p{f // PER:03}.yaml", "w") as out:
            out.write("---\n".join(policy_yaml(j) for j in js))
    elif form == "yaml-list":
        with open(f"{d}/p{f // PER:03}.yaml", "w") as out:
            out.write("apiVersion: v1\nkind: List\nitems:\n" + block([policy(j) for j in js], 0))
    elif form == "json-list":
        with open(f"{d}/p{f // PER:03}.json", "w") as out:
            json.dump({"apiVersion": "v1", "kind": "List", "items": [policy(j) for j in js]}, out, indent=2)
    elif form == "json-docs":
        with open(f"{d}/p{f // PER:03}.yaml", "w") as out:
            out.write("---\n".join(f"# p{j}\n" + json.dumps(policy(j)) + "\n" for j in js))
    else:
        sys.exit(f"unknown form {form!r}: expected docs, yaml-list, json-list or json-docs")
