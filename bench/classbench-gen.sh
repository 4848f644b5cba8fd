#!/usr/bin/env bash
# Generates a ClassBench suite for `bench classbench-suite`: rule sets, traces and
# first-match oracles, with the unmodified official ClassBench generators.
#
#   bench/classbench-gen.sh CLASSBENCH_DIR OUT_DIR [SIZE...]
#
# CLASSBENCH_DIR: a checkout of https://github.com/jafingerhut/classbench (measured
# with commit 6dce57a); its db_generator and trace_generator are built with their own
# makefiles. SIZE: 1000, 10000 and/or 100000 (default: 1000 10000). FAMILIES (env,
# default all twelve seed files): e.g. FAMILIES="acl1 fw1".
#
# ClassBench seeds its random numbers from the time of day, so every run makes new
# sets; the script prints each set's SHA-256 prefix (how BENCHMARKS.md names them).
# The oracles need `target/release/bench` (cargo build --release -p bench). A set
# already in OUT_DIR is not overwritten: the script stops naming it.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
src=$1
out=$2
shift 2
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
families=${FAMILIES:-"acl1 acl2 acl3 acl4 acl5 fw1 fw2 fw3 fw4 fw5 ipc1 ipc2"}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=$here/target/release/bench

for tool in db_generator trace_generator; do
    if [ ! -x "$src/$tool/$tool" ]; then
        make -C "$src/$tool" >/dev/null
    fi
done
if [ ! -x "$bench" ]; then
    echo "classbench-gen: $bench not found (cargo build --release -p bench)" >&2
    exit 1
fi
mkdir -p "$out"
for n in "${sizes[@]}"; do
    case $n in
        1000) tag=1k ;;
        10000) tag=10k ;;
        100000) tag=100k ;;
        *) echo "classbench-gen: size $n is not 1000, 10000 or 100000" >&2; exit 2 ;;
    esac
    for f in $families; do
        seed=$src/parameter_files/${f}_seed
        [ -f "$seed" ] || { echo "classbench-gen: no seed file $seed" >&2; exit 1; }
        set_file=$out/${f}_$tag
        for existing in "$set_file" "${set_file}_trace"; do
            if [ -e "$existing" ]; then
                echo "classbench-gen: $existing exists; not overwritten (remove it or pick another OUT_DIR)" >&2
                exit 1
            fi
        done
        # smoothness 2, address scope -0.5, application scope 0.1
        "$src/db_generator/db_generator" -bc "$seed" "$n" 2 -0.5 0.1 "$set_file" >/dev/null
        # Pareto a=1, b=0.1, scale 10 -> ${set_file}_trace
        "$src/trace_generator/trace_generator" 1 0.1 10 "$set_file" >/dev/null
        "$bench" classbench-oracle "$set_file" "${set_file}_trace" >/dev/null
        printf '%s: %d rules, %d trace lines, sha256 %s\n' "${f}_$tag" \
            "$(wc -l <"$set_file")" "$(wc -l <"${set_file}_trace")" \
            "$(sha256sum "$set_file" | cut -c1-16)"
    done
done
