#!/usr/bin/env bash
# Run every test on a fresh Debian machine: install the brokers, Prometheus and Alertmanager
# if missing, build a virtualenv, then lint, type-check and run the whole pytest suite.
# Integration tests start their own Redis, RabbitMQ, Prometheus and Celery workers.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for pair in redis-server:redis-server rabbitmq-server:rabbitmq-server \
            promtool:prometheus prometheus:prometheus amtool:prometheus-alertmanager; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/lib/rabbitmq/bin/${pair%%:*}" ] \
    || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# Debian starts these as services on install; the tests run their own on free ports.
for svc in redis-server rabbitmq-server prometheus prometheus-alertmanager; do
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done

venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/$venv/bin:$PATH"

ruff check .
ruff format --check .
mypy
pytest "$@"
