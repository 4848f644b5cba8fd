#!/usr/bin/env bash
# The policy set of the `tiergate run` netbench rows "(b) 1000 rules": the traffic's
# destination (netbench's dst0, 10.200.2.1) is a workload endpoint whose ingress
# policy has N (default 1000) rules that do not match (UDP to ports 20000.., the
# nftables rows' rules) before the Allow; one staged policy (evaluated first) would
# deny the traffic's port, so every packet also gets a pending deny.
# usage: bench/netbench/policy1000.sh [N] > policy.yaml
set -euo pipefail
n=${1:-1000}
cat <<'YAML'
apiVersion: v1
kind: Namespace
metadata:
  name: bench
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: gen
  namespace: bench
  labels:
    app: gen
spec:
  orchestrator: k8s
  ipNetworks:
  - 10.200.1.1/32
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: sink
  namespace: bench
  labels:
    app: sink
spec:
  orchestrator: k8s
  ipNetworks:
  - 10.200.2.1/32
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata:
  name: sink-staged-deny
  namespace: bench
spec:
  order: 10
  selector: app == 'sink'
  types:
  - Ingress
  ingress:
  - action: Deny
    protocol: UDP
    destination:
      ports:
      - 5000
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: sink-ingress
  namespace: bench
spec:
  order: 100
  selector: app == 'sink'
  types:
  - Ingress
  ingress:
YAML
for ((i = 0; i < n; i++)); do
  printf '  - action: Deny\n    protocol: UDP\n    destination:\n      nets:\n      - 10.200.2.1/32\n      ports:\n      - %d\n' $((20000 + i))
done
printf '  - action: Allow\n'
