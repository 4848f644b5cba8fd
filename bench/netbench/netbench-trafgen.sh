#!/usr/bin/env bash
# Makes a copy of netbench whose measurements can use trafgen (AF_PACKET) as the
# generator instead of nb-xdpgen, for machines where BPF_PROG_TEST_RUN with live
# frames is refused (EPERM: e.g. without CAP_SYS_RESOURCE and with a small locked-memory
# limit). The copy's measure.sh takes the generator kind from NB_KIND (default
# xdpgen), primes conntrack with trafgen in both directions for the `ct state
# established` rows (the reverse configurations are in trafgen/), and fills the ns
# per packet column for trafgen rows too. trafgen offers at most about 1.1 Mpps on a
# 2-vCPU VM: rows that reach it (XDP_REDIRECT) are bound by the generator.
# usage: bench/netbench/netbench-trafgen.sh DEST     (NETBENCH: the original, default
#        ../shared/tools/netbench); then
#        NB_KIND=trafgen NETBENCH=DEST bench/netbench/compare.sh 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
src=$(cd "${NETBENCH:-$root/../shared/tools/netbench}" && pwd)
dest=${1:?usage: $0 DEST}
[[ -e $dest ]] && { echo "$dest exists; give a new directory" >&2; exit 1; }
cp -a "$src" "$dest"
patch -s -d "$dest" -p1 <"$here/trafgen/measure-trafgen.patch"
cp "$here"/trafgen/rev_*.trafgen "$dest/gen/"
echo "netbench with NB_KIND=trafgen in $dest"
