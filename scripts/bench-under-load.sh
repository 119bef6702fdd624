#!/usr/bin/env bash
# make bench while the test suite runs on the same machine, as it did when
# the goals were first missed: `make test` runs in a loop in a clone of this
# checkout (its own databases and Redis numbers) until the benchmark is done.
# The suite's output goes to var/bench-load-suite.log; make bench reports the
# load average it ran under (bench/results/, python -m bench.report).
#
#   scripts/bench-under-load.sh                 the suite at the same CPU share
#   scripts/bench-under-load.sh --best-effort   the suite as Kubernetes runs a
#                                               pod without requests
#   scripts/bench-under-load.sh [--best-effort] --pages-only
#                                               the pages alone, three times
#                                               (three results), on the bench
#                                               data as it stands
#
# --best-effort puts the suite in a CPU cgroup of weight 2 (cpu.shares) and
# the benchmark in one of 256: the shares Kubernetes gives a BestEffort pod
# and Gantry's web pod (250m requested, deploy/kubernetes/base/web.yaml) on a
# node they share. PostgreSQL and Redis stay where they run, shared by both.
# It needs root and the cpu controller (cgroup v1 or v2); without them it
# stops before starting anything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
best_effort=0
bench_args=""
runs=1
for arg in "$@"; do
  case "$arg" in
    --best-effort) best_effort=1 ;;
    --pages-only) bench_args="--pages-only" runs=3 ;;
    *) echo "usage: $0 [--best-effort] [--pages-only]" >&2; exit 2 ;;
  esac
done

# The cgroup directory of `name` and the file and value of its CPU weight.
cgroup_v1=/sys/fs/cgroup/cpu
cgroup_v2=/sys/fs/cgroup
cpu_group() {  # name shares
  if [ -w "$cgroup_v1" ] && [ -e "$cgroup_v1/cpu.shares" ]; then
    mkdir -p "$cgroup_v1/$1" && echo "$2" >"$cgroup_v1/$1/cpu.shares"
    echo "$cgroup_v1/$1"
  elif [ -w "$cgroup_v2" ] && grep -qw cpu "$cgroup_v2/cgroup.subtree_control" 2>/dev/null; then
    # Kubernetes' own mapping of shares to cgroup v2 weights.
    mkdir -p "$cgroup_v2/$1" && echo $((1 + ($2 - 2) * 9999 / 262142)) >"$cgroup_v2/$1/cpu.weight"
    echo "$cgroup_v2/$1"
  else
    return 1
  fi
}
neighbours="the test suite (make test in a loop) at the same CPU share"
if [ "$best_effort" = 1 ]; then
  if ! suite_group=$(cpu_group gantry-bench-suite 2) || ! bench_group=$(cpu_group gantry-bench 256); then
    echo "--best-effort needs root and a writable cpu cgroup controller" >&2
    exit 1
  fi
  neighbours="the test suite (make test in a loop) in a CPU cgroup of weight 2 (cpu.shares),"
  neighbours+=" the benchmark in one of 256: Kubernetes' shares for a BestEffort pod and for"
  neighbours+=" Gantry's web pod (250m requested)"
fi

clone=$(mktemp -d /tmp/gantry-bench-load.XXXXXX)
log="$root/var/bench-load-suite.log"
mkdir -p "$root/var"
git clone -q "$root" "$clone/checkout"
ln -s "$root/.venv" "$clone/checkout/.venv"
done_flag="$clone/bench-done"

(
  if [ "$best_effort" = 1 ]; then echo "$BASHPID" >"$suite_group/cgroup.procs"; fi
  cd "$clone/checkout"
  run=0
  while [ ! -e "$done_flag" ]; do
    run=$((run + 1))
    echo "=== suite run $run started $(date -u +%H:%M:%S)"
    status=0
    make test || status=$?
    echo "=== suite run $run exit $status at $(date -u +%H:%M:%S)"
  done
) >"$log" 2>&1 &
suite=$!
# Interrupted or not, the suite stops after the run it is in.
trap 'touch "$done_flag" 2>/dev/null || true' EXIT

# Measure beside the tests, not beside the lint and checks before them.
for _ in $(seq 150); do
  grep -q "test session starts" "$log" 2>/dev/null && break
  sleep 2
done
sleep 10  # past the collection, into the tests
cd "$root"
status=0
(
  if [ "$best_effort" = 1 ]; then echo "$BASHPID" >"$bench_group/cgroup.procs"; fi
  for _ in $(seq "$runs"); do
    BENCH_NEIGHBOURS="$neighbours" make bench BENCH_ARGS="$bench_args"
  done
) || status=$?
touch "$done_flag"
echo "make bench exit $status; the suite goes on until its current run ends (see $log)"
wait "$suite" || true
grep -E "^=== |passed|failed" "$log" | tail -n 6
rm -rf "$clone"
if [ "$best_effort" = 1 ]; then
  # Empty once every process in them has ended; a straggler keeps its group.
  rmdir "$suite_group" "$bench_group" 2>/dev/null || echo "left $suite_group, $bench_group (still in use)"
fi
exit "$status"
