#!/usr/bin/env bash
# Run the exporter for real. With a broker URL argument it just runs against that broker.
# Without one it starts a local Redis on port 6399, a Celery worker and a demo workload
# (successes, failures, retries, a routed queue), and serves http://localhost:9808/metrics.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# The dependencies from the hash-pinned runtime lock (scripts/lock.sh), not the newest releases.
pip=("$venv/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" --require-hashes -r requirements/runtime.txt
"${pip[@]}" --no-deps -e .
export PATH="$PWD/$venv/bin:$PATH"

if [ $# -gt 0 ]; then
  exec celery-exporter --broker-url "$1" "${@:2}"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
run="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$run/redis.pid" ] && kill "$(cat "$run/redis.pid")" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

redis-server --bind 127.0.0.1 --port 6399 --save '' --appendonly no --daemonize yes \
  --pidfile "$run/redis.pid" --logfile "$run/redis.log"
export DEMO_BROKER_URL="redis://127.0.0.1:6399/0"
celery -A demo.app worker -E -Q celery,routed -c 2 -n demo@%h \
  --loglevel WARNING >"$run/worker.log" 2>&1 &
pids+=($!)
python -m demo.producer >"$run/producer.log" 2>&1 &
pids+=($!)
echo "demo: Redis on 6399, worker log $run/worker.log; metrics on http://localhost:9808/metrics"
celery-exporter --broker-url "$DEMO_BROKER_URL" -Q celery,routed &
pids+=($!)
wait "${pids[-1]}"
