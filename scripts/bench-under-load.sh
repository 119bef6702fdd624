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
# node they share. PostgreSQL and Redis, shared by both, each go into a group
# of their own of weight 1024, as a pod with one CPU requested: left in the
# root group, every PostgreSQL backend serving the suite weighed as much as
# a process of its own, four times the whole benchmark, which no node gives
# a best-effort pod's queries. Redis, one process, weighs what it did there.
# Both go back to the root group when the script ends. It needs root and the cpu
# controller (cgroup v1 or v2); without them it stops before starting anything.
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
# The processes of the PostgreSQL the suite and the benchmark share: the
# postmaster with every backend it has forked.
postgres_pids() {
  local data postmaster=""
  data=$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc "SHOW data_directory")
  [ -r "$data/postmaster.pid" ] && postmaster=$(head -n 1 "$data/postmaster.pid")
  if [ -n "$postmaster" ]; then
    echo "$postmaster"
    pgrep -P "$postmaster" || true
  fi
}
redis_pid() {
  redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | awk -F: '/^process_id:/ {print $2}'
}
move_pids() {  # cgroup directory, then the pids to move into it
  local group=$1 pid
  shift
  for pid in "$@"; do echo "$pid" >"$group/cgroup.procs" 2>/dev/null || true; done
}
# Back to the root group: everything still in the services' groups, including
# backends forked while one held the postmaster.
service_groups=()
release_services() {
  local group
  for group in "${service_groups[@]}"; do
    [ -d "$group" ] || continue
    # shellcheck disable=SC2046  # one pid a word
    move_pids "$(dirname "$group")" $(cat "$group/cgroup.procs")
    rmdir "$group" 2>/dev/null || echo "left $group (still in use)"
  done
}
neighbours="the test suite (make test in a loop) at the same CPU share"
if [ "$best_effort" = 1 ]; then
  if ! suite_group=$(cpu_group gantry-bench-suite 2) || ! bench_group=$(cpu_group gantry-bench 256) ||
    ! postgres_group=$(cpu_group gantry-bench-postgres 1024) ||
    ! redis_group=$(cpu_group gantry-bench-redis 1024); then
    echo "--best-effort needs root and a writable cpu cgroup controller" >&2
    exit 1
  fi
  service_groups=("$postgres_group" "$redis_group")
  trap release_services EXIT
  # shellcheck disable=SC2046  # one pid a word
  move_pids "$postgres_group" $(postgres_pids)
  # shellcheck disable=SC2046
  move_pids "$redis_group" $(redis_pid)
  neighbours="the test suite (make test in a loop) in a CPU cgroup of weight 2 (cpu.shares),"
  neighbours+=" the benchmark in one of 256, PostgreSQL and Redis in one of 1024 each:"
  neighbours+=" Kubernetes' shares for a BestEffort pod, Gantry's web pod (250m requested)"
  neighbours+=" and a pod with one CPU requested"
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
trap 'touch "$done_flag" 2>/dev/null || true; release_services' EXIT

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
