#!/bin/sh
# The image's entry point: bench's CLI, or a Ray node of a bench cluster.
#   ray-head [RAY START OPTIONS]: the head node; it schedules and measures nothing (no bench_slot)
#   ray-node HEAD:PORT [RAY START OPTIONS]: a node that measures one cell at a time; give it its machine
#     kind with BENCH_MACHINE_RESOURCE (a Ray custom resource, e.g. machine_c6i_large) or with
#     --labels KEY=VALUE, as the scenario's machines: name it
#   anything else: bench's CLI (bench run ..., bench report ...)
set -eu
case "${1:-}" in
  ray-head)
    shift
    exec ray start --head --block --num-cpus 0 --dashboard-host 0.0.0.0 "$@"
    ;;
  ray-node)
    shift
    address="$1"
    shift
    if [ -n "${BENCH_MACHINE_RESOURCE:-}" ]; then
      resources="{\"bench_slot\": 1, \"${BENCH_MACHINE_RESOURCE}\": 1}"
    else
      resources='{"bench_slot": 1}'
    fi
    exec ray start --block --address "$address" --resources "$resources" "$@"
    ;;
  *)
    exec bench "$@"
    ;;
esac
